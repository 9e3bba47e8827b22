"""A replica's manifests and object names (``docs/RUNBOOK.md``, "The replica").

A replica is a prefix of objects: ``manifests/<seq>.json`` (12 digits, one per upload round,
never rewritten) and the store's files as objects. Each manifest names every object its files
are made of, with size and SHA-256, and is written after all of them, so every object a manifest
names is whole and present. Object keys say what they hold:

- ``log/<first>.seg.<start>-<end>``: bytes ``start..end`` of a log segment (12-digit offsets).
  A segment is one or more such ranges back to back from 0: the synced part of the active
  segment goes up as increments of whole batches, a segment already sealed goes up whole
  (``0-<size>``). A segment's bytes never change once synced, so a key names one content.
- ``FORMAT.<hex16>``, ``log/<first>.idx.<hex16>``, ``packs/<first>-<last>.pack.<hex16>``:
  a whole file, tagged with the first 16 hex digits of its SHA-256.

The manifest is canonical JSON with its own checksum, exactly like a backup's ``MANIFEST.json``
(:mod:`kroniko_ops.ops.backup.manifest`), which :func:`to_backup` turns it into.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from ...layout import FORMAT_LINE
from ..backup.manifest import FILE_RE, FileEntry, Manifest

REPLICA_FORMAT = "kroniko-ops replica 1"
MANIFESTS = "manifests/"
MAX_MANIFEST_BYTES = 64 << 20
_MANIFEST_KEY = re.compile(r"\Amanifests/(\d{12})\.json\Z")
_PART_KEY = re.compile(r"\A(log/\d{12}\.seg)\.(\d{12})-(\d{12})\Z")
_WHOLE_KEY = re.compile(r"\A(FORMAT|log/\d{12}\.idx|packs/\d{12}-\d{12}\.pack)\.([0-9a-f]{16})\Z")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
_CREATED = "%Y-%m-%dT%H:%M:%S"


class ReplicaManifestError(ValueError):
    """A replica manifest that does not parse, fails its checksum or names unsafe keys."""


@dataclass(frozen=True)
class Obj:
    """One object: its key, where its bytes go in their file, its size and SHA-256 (hex)."""

    key: str
    offset: int
    size: int
    sha256: str


@dataclass
class RFile:
    """One store file in a replica: size and SHA-256 of the whole, the objects holding it in
    order, and ``seal``: the checksum the file's own format records (a sealed segment's
    SHA-256 from its ``.idx``, a pack's trailer SHA-256), empty for the others."""

    size: int
    sha256: str
    objects: list[Obj]
    seal: str = ""


@dataclass
class ReplicaManifest:
    """One manifest: the replica up to ``head`` (``chain`` there, committed at ``head_time``
    microseconds since the epoch, 0 when unknown)."""

    seq: int
    head: int
    chain: str
    active: str
    head_time: int
    created_us: int
    files: dict[str, RFile] = field(default_factory=dict)
    source: str = ""
    tool: str = ""
    checksum: str = ""

    @property
    def created_at(self) -> str:
        """When it was written, ISO 8601 UTC with microseconds."""
        secs, micros = divmod(self.created_us, 1_000_000)
        return time.strftime(_CREATED, time.gmtime(secs)) + f".{micros:06d}Z"

    def keys(self) -> set[str]:
        """Every object key it names."""
        return {o.key for f in self.files.values() for o in f.objects}

    def render(self) -> bytes:
        """The object's bytes (sets :attr:`checksum`)."""
        doc: dict[str, Any] = {
            "format": REPLICA_FORMAT, "store_format": FORMAT_LINE, "seq": self.seq, "head": self.head,
            "chain": self.chain, "active": self.active, "head_time_us": self.head_time,
            "created_at": self.created_at, "source": self.source, "tool": self.tool,
            "files": {rel: {"size": f.size, "sha256": f.sha256, "seal": f.seal,
                            "objects": [{"key": o.key, "offset": o.offset, "size": o.size, "sha256": o.sha256}
                                        for o in f.objects]}
                      for rel, f in sorted(self.files.items())},
        }
        self.checksum = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
        doc["manifest_sha256"] = self.checksum
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def manifest_key(seq: int) -> str:
    """The key of manifest ``seq``."""
    return f"{MANIFESTS}{seq:012d}.json"


def manifest_seq(key: str) -> int | None:
    """The sequence number of a manifest key, else None."""
    m = _MANIFEST_KEY.match(key)
    return int(m.group(1)) if m else None


def part_key(rel: str, start: int, end: int) -> str:
    """The key of bytes ``start..end`` of the segment ``rel``."""
    return f"{rel}.{start:012d}-{end:012d}"


def whole_key(rel: str, sha256: str) -> str:
    """The key of the whole file ``rel`` whose SHA-256 is ``sha256``."""
    return f"{rel}.{sha256[:16]}"


def part_range(key: str) -> tuple[str, int, int] | None:
    """``(segment, start, end)`` of a segment range's key, else None."""
    m = _PART_KEY.match(key)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def is_replica_key(key: str) -> bool:
    """Whether ``key`` is a name a replica may hold."""
    return bool(_MANIFEST_KEY.match(key) or _PART_KEY.match(key) or _WHOLE_KEY.match(key))


def to_backup(m: ReplicaManifest) -> Manifest:
    """The backup manifest of the same files (a full backup), for the backup tools."""
    secs = m.created_us // 1_000_000
    out = Manifest(m.head, m.chain, m.active, time.strftime(_CREATED + "Z", time.gmtime(secs)),
                   source=m.source, tool=m.tool)
    for rel, f in m.files.items():
        out.files[rel] = FileEntry(f.size, f.sha256)
    return out


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if type(value) is not int or value < 0:
        raise ReplicaManifestError(f"'{key}' must be an integer >= 0, got {value!r}")
    return value


def _hex(doc: dict[str, Any], key: str, empty: bool = False) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not (_HEX64.match(value) or (empty and value == "")):
        raise ReplicaManifestError(f"'{key}' must be 64 lowercase hex digits")
    return value


def parse(raw: bytes, seq: int) -> ReplicaManifest:
    """Parse and check a manifest's bytes (it must be manifest ``seq``); raises
    :class:`ReplicaManifestError` saying what is wrong."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ReplicaManifestError(f"not JSON ({exc})") from None
    if type(doc) is not dict:
        raise ReplicaManifestError("not a JSON object")
    claimed = doc.pop("manifest_sha256", None)
    if doc.get("format") != REPLICA_FORMAT:
        raise ReplicaManifestError(f"'format' is {doc.get('format')!r}, expected {REPLICA_FORMAT!r}")
    if hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest() != claimed:
        raise ReplicaManifestError("its checksum does not match its content (the manifest was changed or damaged)")
    if doc.get("store_format") != FORMAT_LINE:
        raise ReplicaManifestError(f"'store_format' is {doc.get('store_format')!r}, expected {FORMAT_LINE!r}")
    if _int(doc, "seq") != seq:
        raise ReplicaManifestError(f"it says it is manifest {doc['seq']}, but its name says {seq}")
    created = doc.get("created_at")
    try:
        whole, _, frac = str(created).rstrip("Z").partition(".")
        created_us = calendar.timegm(time.strptime(whole, _CREATED)) * 1_000_000 + int(frac)
        if not str(created).endswith("Z") or len(frac) != 6:
            raise ValueError
    except ValueError:
        raise ReplicaManifestError(f"'created_at' {created!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ") from None
    files = _files(doc.get("files"))
    active = doc.get("active")
    if not isinstance(active, str) or (active and (active not in files or not active.endswith(".seg"))):
        raise ReplicaManifestError(f"'active' {active!r} must name a listed segment or be empty")
    for key in ("source", "tool"):
        if not isinstance(doc.get(key), str):
            raise ReplicaManifestError(f"'{key}' must be a string")
    m = ReplicaManifest(seq, _int(doc, "head"), _hex(doc, "chain"), active, _int(doc, "head_time_us"), created_us,
                        files, doc["source"], doc["tool"])
    if m.render() != raw:
        raise ReplicaManifestError("its bytes are not in canonical form (the object was edited or damaged)")
    return m


def _files(raw: Any) -> dict[str, RFile]:
    if type(raw) is not dict:
        raise ReplicaManifestError("'files' must be an object")
    files: dict[str, RFile] = {}
    for rel, e in raw.items():
        if not FILE_RE.match(rel):
            raise ReplicaManifestError(f"file {rel!r} is not part of a store's layout")
        if type(e) is not dict or set(e) != {"size", "sha256", "seal", "objects"} or type(e["objects"]) is not list:
            raise ReplicaManifestError(f"the entry of {rel!r} must have exactly 'size', 'sha256', 'seal', 'objects'")
        objs = []
        for o in e["objects"]:
            if type(o) is not dict or set(o) != {"key", "offset", "size", "sha256"}:
                raise ReplicaManifestError(f"an object of {rel!r} must have exactly 'key', 'offset', 'size', 'sha256'")
            objs.append(Obj(str(o["key"]), _int(o, "offset"), _int(o, "size"), _hex(o, "sha256")))
        f = RFile(_int(e, "size"), _hex(e, "sha256"), objs, _hex(e, "seal", empty=True))
        _check_objects(rel, f)
        files[rel] = f
    if "FORMAT" not in files:
        raise ReplicaManifestError("it lists no FORMAT file")
    return files


def _check_objects(rel: str, f: RFile) -> None:
    """A segment is ranges back to back from 0 to its size; any other file is one object."""
    if rel.endswith(".seg"):
        at = 0
        for o in f.objects:
            if part_range(o.key) != (rel, at, at + o.size) or o.offset != at:
                raise ReplicaManifestError(f"{rel}: object {o.key!r} is not bytes {at}..{at + o.size} of it")
            at += o.size
        if at != f.size:
            raise ReplicaManifestError(f"{rel}: its objects hold {at} bytes, the file {f.size}")
    elif len(f.objects) != 1 or f.objects[0] != Obj(whole_key(rel, f.sha256), 0, f.size, f.sha256):
        raise ReplicaManifestError(f"{rel} must be one object named {whole_key(rel, f.sha256)!r} of its size and hash")
