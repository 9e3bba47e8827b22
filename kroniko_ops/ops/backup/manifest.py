"""``MANIFEST.json``: what a backup holds, every file's size and SHA-256, and its own checksum.

The manifest is canonical JSON (sorted keys, two-space indent, one trailing newline) with a
``manifest_sha256`` field: the SHA-256 of the same document without that field, dumped with
sorted keys and no whitespace. A reader re-renders what it parsed and requires the file to be
byte-identical, so any change to the file, even one that leaves the JSON meaning intact, is
caught. Every path in it must be a store file name (:data:`FILE_RE`), so a manifest can never
name a file outside its backup. ``docs/RUNBOOK.md`` describes the fields.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from ...layout import FORMAT_LINE

MANIFEST = "MANIFEST.json"
BACKUP_FORMAT = "kroniko-ops backup 3"
MAX_MANIFEST_BYTES = 64 << 20
FILE_RE = re.compile(r"\A(?:FORMAT|log/\d{12}\.(?:seg|idx)|packs/\d{12}-\d{12}\.pack)\Z")
DIRS = ("log", "packs")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")


class ManifestError(ValueError):
    """A manifest that is absent, does not parse, fails its checksum or names unsafe paths."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a backup: size, SHA-256 (hex), and whether it is held by a base backup
    (``in_base``: an incremental references an immutable file its base already has)."""

    size: int
    sha256: str
    in_base: bool = False


@dataclass(frozen=True)
class BaseRef:
    """The backup an incremental builds on: its manifest's checksum (its identity), its head,
    and where it was, relative to the incremental's parent folder."""

    manifest_sha256: str
    head: int
    path: str


@dataclass
class Manifest:
    """The parsed content of ``MANIFEST.json``.

    ``head``/``chain`` are the position and chain hash the backup holds up to; ``active`` the
    ``log/`` file holding the head's segment (copied up to the synced end, so it has no
    ``.idx``), or ``""`` when the head ends a pack or sealed segment.
    """

    head: int
    chain: str
    active: str
    created_at: str
    files: dict[str, FileEntry] = field(default_factory=dict)
    base: BaseRef | None = None
    source: str = ""
    tool: str = ""
    checksum: str = ""

    @property
    def kind(self) -> str:
        """``full`` or ``incremental``."""
        return "full" if self.base is None else "incremental"

    def _doc(self) -> dict[str, Any]:
        return {
            "format": BACKUP_FORMAT,
            "store_format": FORMAT_LINE,
            "kind": self.kind,
            "head": self.head,
            "chain": self.chain,
            "active": self.active,
            "created_at": self.created_at,
            "files": {p: {"size": e.size, "sha256": e.sha256, "in_base": e.in_base} for p, e in self.files.items()},
            "base": None if self.base is None else {
                "manifest_sha256": self.base.manifest_sha256, "head": self.base.head, "path": self.base.path},
            "source": self.source,
            "tool": self.tool,
        }

    def render(self) -> bytes:
        """The file's bytes; sets :attr:`checksum`."""
        doc = self._doc()
        self.checksum = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
        doc["manifest_sha256"] = self.checksum
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    def held(self) -> list[str]:
        """The files this backup holds itself (not its bases), manifest first excluded."""
        return sorted(p for p, e in self.files.items() if not e.in_base)


def now_utc() -> str:
    """The current time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if type(value) is not int or value < 0:
        raise ManifestError(f"'{key}' must be an integer >= 0, got {value!r}")
    return value


def _hex(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not _HEX64.match(value):
        raise ManifestError(f"'{key}' must be 64 lowercase hex digits")
    return value


def parse(raw: bytes) -> Manifest:
    """Parse and check ``MANIFEST.json`` bytes; raises :class:`ManifestError` saying what is wrong."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"not JSON ({exc})") from None
    if type(doc) is not dict:
        raise ManifestError("not a JSON object")
    claimed = doc.pop("manifest_sha256", None)
    if doc.get("format") != BACKUP_FORMAT:
        raise ManifestError(f"'format' is {doc.get('format')!r}, expected {BACKUP_FORMAT!r}")
    if hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest() != claimed:
        raise ManifestError("its checksum does not match its content (the manifest was changed or damaged)")
    m = _build(doc)
    if m.render() != raw:
        raise ManifestError("its bytes are not in canonical form (the file was edited or damaged)")
    return m


def _build(doc: dict[str, Any]) -> Manifest:
    if doc.get("store_format") != FORMAT_LINE:
        raise ManifestError(f"'store_format' is {doc.get('store_format')!r}, expected {FORMAT_LINE!r}")
    raw_files = doc.get("files")
    if type(raw_files) is not dict:
        raise ManifestError("'files' must be an object")
    files: dict[str, FileEntry] = {}
    for path, e in raw_files.items():
        if not FILE_RE.match(path):
            raise ManifestError(f"file path {path!r} is not part of a backup's layout")
        if type(e) is not dict or set(e) != {"size", "sha256", "in_base"} or type(e["in_base"]) is not bool:
            raise ManifestError(f"file entry of {path!r} must have exactly 'size', 'sha256' and 'in_base'")
        files[path] = FileEntry(_int(e, "size"), _hex(e, "sha256"), e["in_base"])
    if "FORMAT" not in files:
        raise ManifestError("it lists no FORMAT file")
    active = doc.get("active")
    if not isinstance(active, str) or (active and (active not in files or not active.endswith(".seg"))):
        raise ManifestError(f"'active' {active!r} must name a listed segment or be empty")
    base = None
    raw_base = doc.get("base")
    if doc.get("kind") == "incremental":
        if type(raw_base) is not dict or not isinstance(raw_base.get("path"), str):
            raise ManifestError("an incremental manifest needs 'base' with 'manifest_sha256', 'head' and 'path'")
        base = BaseRef(_hex(raw_base, "manifest_sha256"), _int(raw_base, "head"), raw_base["path"])
    elif doc.get("kind") != "full" or raw_base is not None:
        raise ManifestError("'kind' must be 'full' (no base) or 'incremental'")
    if base is None and any(e.in_base for e in files.values()):
        raise ManifestError("a full backup references files of a base")
    created = doc.get("created_at")
    try:
        time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ManifestError(f"'created_at' {created!r} is not YYYY-MM-DDTHH:MM:SSZ") from None
    for key in ("source", "tool"):
        if not isinstance(doc.get(key), str):
            raise ManifestError(f"'{key}' must be a string")
    return Manifest(_int(doc, "head"), _hex(doc, "chain"), active, created, files, base, doc["source"], doc["tool"])
