"""``MANIFEST.json``: what a backup holds, every file's size and SHA-256, and its own checksum.

The manifest is canonical JSON (sorted keys, two-space indent, one trailing newline) with a
``manifest_sha256`` field: the SHA-256 of the same document without that field, dumped with
sorted keys and no whitespace. A reader re-renders what it parsed and requires the file to be
byte-identical, so any change to the file, even one that leaves the JSON meaning intact, is
caught. Every path in it must match the store layout (:data:`FILE_RE`), so a manifest can never
name a file outside its backup.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from ..layout import FORMAT_LINE
from ..log import ZERO_CHAIN

MANIFEST = "MANIFEST.json"
BACKUP_FORMAT = "kroniko-ops backup 1"
FULL_LOG = "log/append.log"
INCREMENT_LOG = "log/increment.log"
MAX_MANIFEST_BYTES = 4 << 30
FULL_DIRS = ("events", "index", "locks", "log", "lost-found", "packs")
INCREMENT_DIRS = ("events", "index", "log", "packs")
_NAME = r"[A-Za-z0-9_:%=~-][A-Za-z0-9_:.%=~-]{0,250}"
FILE_RE = re.compile(
    r"\A(?:FORMAT|log/append\.log|log/increment\.log|events/[A-Za-z0-9._-]{1,64}\.json|index/CHECKPOINT"
    rf"|index/(?:types|tags)/{_NAME}\.(?:pos|name)|index/ids/[0-9a-f]{{3}}\.ids"
    r"|packs/[A-Za-z0-9_-][A-Za-z0-9._-]{0,250})\Z"
)
_ALL_FILES = re.compile(rf"(?:{FILE_RE.pattern[2:-2]}\n)*")
_ALL_HEX = re.compile(r"[0-9a-f]*")
DIR_RE = re.compile(r"\A(?:events|index|index/types|index/tags|index/ids|locks|log|lost-found|packs)\Z")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")


class ManifestError(ValueError):
    """A manifest that is absent, does not parse, fails its checksum or names unsafe paths."""


class FileEntry(NamedTuple):
    """One file of a backup: its size in bytes and the SHA-256 (hex) of its content."""

    size: int
    sha256: str


@dataclass(frozen=True)
class BaseRef:
    """The backup an incremental builds on: its head and chain hash (its identity), and where it
    was when the incremental was made, relative to the incremental's parent folder."""

    head: int
    chain: str
    path: str


@dataclass
class Manifest:
    """The parsed content of ``MANIFEST.json``.

    A full backup holds positions ``1..head``; an incremental holds ``first..head`` with
    ``first = base.head + 1``. ``chain`` is the chain hash at ``head``; ``prev_chain`` the one at
    ``first - 1`` (zeros for a full backup), from which a verifier walks the log.
    """

    kind: str
    first: int
    head: int
    chain: str
    prev_chain: str
    created_at: str
    max_event_bytes: int
    files: dict[str, FileEntry] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    packs: dict[str, tuple[int, int]] = field(default_factory=dict)
    base: BaseRef | None = None
    source: str = ""
    tool: str = ""
    checksum: str = ""

    @property
    def log_name(self) -> str:
        """The log file of this backup: ``log/append.log`` (full) or ``log/increment.log``."""
        return FULL_LOG if self.kind == "full" else INCREMENT_LOG

    @property
    def created_epoch(self) -> int:
        """``created_at`` as seconds since the epoch (the mtime of every archive member)."""
        return calendar.timegm(time.strptime(self.created_at, "%Y-%m-%dT%H:%M:%SZ"))

    def _doc(self) -> dict[str, Any]:
        return {
            "format": BACKUP_FORMAT,
            "store_format": FORMAT_LINE,
            "kind": self.kind,
            "first": self.first,
            "head": self.head,
            "chain": self.chain,
            "prev_chain": self.prev_chain,
            "created_at": self.created_at,
            "max_event_bytes": self.max_event_bytes,
            "files": {p: {"size": e.size, "sha256": e.sha256} for p, e in self.files.items()},
            "dirs": sorted(self.dirs),
            "packs": {p: list(r) for p, r in self.packs.items()},
            "base": None if self.base is None else {
                "head": self.base.head, "chain": self.base.chain, "path": self.base.path},
            "source": self.source,
            "tool": self.tool,
        }

    def render(self) -> bytes:
        """The file's bytes; sets :attr:`checksum`."""
        doc = self._doc()
        self.checksum = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
        doc["manifest_sha256"] = self.checksum
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def now_utc() -> str:
    """The current time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _int(doc: dict[str, Any], key: str, low: int = 0) -> int:
    value = doc.get(key)
    if type(value) is not int or value < low:
        raise ManifestError(f"'{key}' must be an integer >= {low}, got {value!r}")
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
    actual = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
    if claimed != actual:
        raise ManifestError("its checksum does not match its content (the manifest was changed or damaged)")
    m = _build(doc)
    if m.render() != raw:
        raise ManifestError("its bytes are not in canonical form (the file was edited or damaged)")
    return m


def _build(doc: dict[str, Any]) -> Manifest:
    kind = doc.get("kind")
    if kind not in ("full", "incremental"):
        raise ManifestError(f"'kind' must be 'full' or 'incremental', got {kind!r}")
    if doc.get("store_format") != FORMAT_LINE:
        raise ManifestError(f"'store_format' is {doc.get('store_format')!r}, expected {FORMAT_LINE!r}")
    first, head = _int(doc, "first", 1), _int(doc, "head")
    if head < first - 1:
        raise ManifestError(f"'head' {head} is before 'first' {first}")
    files: dict[str, FileEntry] = {}
    raw_files = doc.get("files")
    if type(raw_files) is not dict:
        raise ManifestError("'files' must be an object")
    for path, entry in raw_files.items():
        if type(entry) is not dict or len(entry) != 2:
            raise ManifestError(f"file entry of {path!r} must have exactly 'size' and 'sha256'")
        size, sha = entry.get("size"), entry.get("sha256")
        if type(size) is not int or size < 0 or type(sha) is not str or len(sha) != 64:
            raise ManifestError(f"file entry of {path!r} needs a 'size' >= 0 and a 64-digit 'sha256'")
        files[path] = FileEntry(size, sha)
    # one regular expression over all paths and one over all digests: a manifest lists a file
    # per event and per index list, so a per-entry check would dominate reading it
    joined = "".join(p + "\n" for p in files)
    if joined.count("\n") != len(files) or not _ALL_FILES.fullmatch(joined):
        bad = next(p for p in files if not FILE_RE.match(p))
        raise ManifestError(f"file path {bad!r} is not part of a backup's layout")
    if not _ALL_HEX.fullmatch("".join(e.sha256 for e in files.values())):
        raise ManifestError("a 'sha256' is not 64 lowercase hex digits")
    dirs = doc.get("dirs")
    if type(dirs) is not list or not all(isinstance(d, str) and DIR_RE.match(d) for d in dirs):
        raise ManifestError("'dirs' must list folders of the store layout")
    packs: dict[str, tuple[int, int]] = {}
    raw_packs = doc.get("packs")
    if type(raw_packs) is not dict:
        raise ManifestError("'packs' must be an object")
    for path, rng in raw_packs.items():
        if path not in files or type(rng) is not list or len(rng) != 2 or not all(type(x) is int for x in rng):
            raise ManifestError(f"pack entry {path!r} must name a listed file and a [first, last] range")
        packs[path] = (rng[0], rng[1])
    base = None
    raw_base = doc.get("base")
    if kind == "incremental":
        if type(raw_base) is not dict or not isinstance(raw_base.get("path"), str):
            raise ManifestError("an incremental manifest needs 'base' with 'head', 'chain' and 'path'")
        base = BaseRef(_int(raw_base, "head"), _hex(raw_base, "chain"), raw_base["path"])
        if base.head != first - 1:
            raise ManifestError(f"'first' {first} does not follow the base head {base.head}")
    elif raw_base is not None or first != 1:
        raise ManifestError("a full backup starts at position 1 and has no base")
    created = doc.get("created_at")
    try:
        time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ManifestError(f"'created_at' {created!r} is not YYYY-MM-DDTHH:MM:SSZ") from None
    for key in ("source", "tool"):
        if not isinstance(doc.get(key), str):
            raise ManifestError(f"'{key}' must be a string")
    m = Manifest(kind, first, head, _hex(doc, "chain"), _hex(doc, "prev_chain"), created,
                 _int(doc, "max_event_bytes", 1), files, list(dirs), packs, base, doc["source"], doc["tool"])
    if kind == "full" and m.prev_chain != ZERO_CHAIN:
        raise ManifestError("a full backup's 'prev_chain' must be zeros")
    if base is not None and base.chain != m.prev_chain:
        raise ManifestError("'prev_chain' differs from the base's chain")
    return m
