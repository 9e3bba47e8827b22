"""Reading a Ruby kroniko store (format 1) without writing to it, in bounded memory.

The layout (``fixtures/legacy-kroniko/README.md``)::

    events/<id>.json      pretty-printed {"type", "data", "id"}
    log/append.log        one event id per line; position = 1-based line number
    index/type/<type>.jsonl, index/data.<key>/<value>.jsonl   one event id per line
    locks/<17 hex>.lock   empty flock files

Every path this module opens is built from a name that cannot leave its folder (no ``/``, no
NUL, not ``.``/``..``) and is opened with ``O_NOFOLLOW``: a hostile log line or symlink never
makes it read outside the store.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import fileio
from ..errors import StoreCorrupted
from ..layout import is_legacy
from ..report import safe_text

# Ruby: "#{Time.now.to_f.round(6)}-#{SecureRandom.uuid}". Float#to_s always has a '.', at most 10
# integer digits until 2286 and at most 6 decimals after round(6); the uuid is a version 4 one.
_RUBY_ID = r"\d{1,10}\.\d{1,6}-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
RUBY_ID_RE = re.compile(rf"\A{_RUBY_ID}\Z")
_RUBY_ID_TAIL = re.compile(rf"{_RUBY_ID}\Z")
# orjson turns integers beyond 64 bits into floats; a run of 19+ digits sends the document to the
# standard library parser, which keeps them exact (the codec then refuses them).
_LONG_NUMBER = re.compile(rb"\d{19,}")
_MAX_NAME_BYTES = 250
CHUNK = 1 << 20
MAX_LINE = 64 * 1024
MAX_EVENT_FILE = 2 * (64 << 20) + (64 << 10)  # JSON of the largest event a store takes, escapes and all
MAX_TORN_TAIL = 64 << 20  # bytes of a torn last log line read and kept; the rest of a longer one is not


def fingerprint(text: str) -> int:
    """A 128-bit BLAKE2b fingerprint of an id, the identity kept in memory instead of the id.

    128 bits make an accidental collision among 10^9 ids about 10^-21 likely: the same bet the
    format makes with SHA-256 event hashes, at a third of the memory of a set of strings.
    """
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).digest(), "big")


def show(text: str, limit: int = 120) -> str:
    """``text`` made safe for a message: undecodable bytes as escapes, long text shortened."""
    out = safe_text(text)
    return out if len(out) <= limit else out[:limit] + f"...({len(out)} characters)"


def safe_name(name: str) -> bool:
    """True when ``name`` can only name a file directly inside its folder."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return False
    return len(name.encode("utf-8", "surrogateescape")) <= _MAX_NAME_BYTES


def ruby_timestamp(event_id: str) -> float | None:
    """The creation time a Ruby id carries (seconds), or None when it is not a Ruby id."""
    if not RUBY_ID_RE.match(event_id):
        return None
    return float(event_id.split("-", 1)[0])


@dataclass(frozen=True, slots=True)
class LogLine:
    """One committed (newline-terminated) line of ``log/append.log``.

    ``kind``: ``id`` (names an event, whose file may still be missing), ``glued`` (a torn
    line's bytes followed by a whole id, which is ``event_id``: what a crash leaves when the next
    append lands after a torn tail), ``blank`` or ``bad`` (names no event).
    """

    position: int
    text: str
    kind: str
    event_id: str | None


@dataclass(slots=True)
class LegacyEvent:
    """One event file as read: its bytes, and its parsed content or why it has none.

    ``problem`` is None for a readable event; ``"missing"`` when the file is absent; otherwise
    a short reason (not JSON, not an event object, a symlink, ...).
    """

    raw: bytes | None
    type: str = ""
    data: Any = None
    content_id: Any = None
    problem: str | None = None


@dataclass
class LogScan:
    """What one pass over the log found: the committed head, which ids it names, and where an id
    repeats. ``ids`` holds :func:`fingerprint` values (a dict to their first position when
    asked for, else a set); ``duplicates`` maps a later position to the first one."""

    head: int = 0
    ids: dict[int, int] | set[int] = field(default_factory=set)
    duplicates: dict[int, int] = field(default_factory=dict)


class LegacyReader:
    """Read access to the store folder ``root`` in the Ruby layout."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.events_dir = os.path.join(root, "events")
        self.log_path = os.path.join(root, "log", "append.log")
        self.index_dir = os.path.join(root, "index")
        self.locks_dir = os.path.join(root, "locks")

    def event_relpath(self, event_id: str) -> str:
        """``events/<id>.json``."""
        return f"events/{event_id}.json"

    def _event_exists(self, name: str) -> bool:
        if not safe_name(name + ".json"):
            return False
        try:
            return stat.S_ISREG(os.lstat(os.path.join(self.events_dir, name + ".json")).st_mode)
        except OSError:
            return False

    # -- log ------------------------------------------------------------------------------

    def classify(self, position: int, raw: bytes) -> LogLine:
        """Turn one committed line (without its newline) into a :class:`LogLine`."""
        text = raw.decode("utf-8", "surrogateescape")
        if not text:
            return LogLine(position, text, "blank", None)
        if RUBY_ID_RE.match(text):
            return LogLine(position, text, "id", text)
        if safe_name(text) and self._event_exists(text):
            return LogLine(position, text, "id", text)
        recovered = self._glued_id(text)
        if recovered is not None:
            return LogLine(position, text, "glued", recovered)
        return LogLine(position, text, "bad", None)

    def _glued_id(self, text: str) -> str | None:
        """The whole Ruby id that ends ``text`` after some torn bytes, preferring one whose event
        file exists (a shorter integer part may also match when the torn bytes end in digits)."""
        m = _RUBY_ID_TAIL.search(text)
        if m is None:
            return None
        candidates = [text[i:] for i in range(m.start(), min(m.start() + 11, len(text)))
                      if RUBY_ID_RE.match(text[i:])]
        candidates = [c for c in candidates if len(c) < len(text)]
        for c in candidates:
            if self._event_exists(c):
                return c
        return candidates[0] if candidates else None

    def iter_log(self) -> Iterator[LogLine]:
        """The committed lines in order, streamed; a torn last line is not yielded. A line over
        ``MAX_LINE`` bytes is yielded as ``bad`` (its first bytes only), so memory stays bounded
        whatever the log holds."""
        fd = self._open_log()
        if fd is None:
            return
        with os.fdopen(fd, "rb") as f:
            position = 0
            while True:
                raw = f.readline(MAX_LINE)
                if raw.endswith(b"\n"):
                    position += 1
                    yield self.classify(position, raw[:-1])
                    continue
                if len(raw) < MAX_LINE:
                    return  # end of the log, after a torn last line if raw is not empty
                more = raw
                while len(more) == MAX_LINE and not more.endswith(b"\n"):
                    more = f.readline(MAX_LINE)
                if not more.endswith(b"\n"):
                    return  # the overlong line is the torn tail
                position += 1
                yield LogLine(position, raw[:200].decode("utf-8", "surrogateescape"), "bad", None)

    def torn_tail(self) -> tuple[int, bytes]:
        """``(offset, bytes)`` after the last newline of the log: a torn last line, or ``b""``."""
        fd = self._open_log()
        if fd is None:
            return 0, b""
        try:
            size = os.fstat(fd).st_size
            end = size
            while end > 0:
                start = max(0, end - 65536)
                block = os.pread(fd, end - start, start)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    offset = start + nl + 1
                    break
                end = start
            else:
                offset = 0
            # A tail past MAX_TORN_TAIL (a log extended by gigabytes) is damage whose first bytes
            # are shown and kept, never read whole into memory.
            return offset, os.pread(fd, min(size - offset, MAX_TORN_TAIL), offset)
        finally:
            os.close(fd)

    def _open_log(self) -> int | None:
        """A descriptor on ``log/append.log`` (None when absent), opened without following a
        link or blocking on a FIFO; :class:`StoreCorrupted` when it is not a regular file."""
        try:
            return fileio.open_read(self.log_path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            reason = "a symbolic link (not followed)" if exc.errno == errno.ELOOP else "not a regular file"
            raise StoreCorrupted(f"{self.log_path} is {reason}: the legacy log cannot be read; put the real "
                                 "log file back and run the command again") from exc

    # -- events ---------------------------------------------------------------------------

    def read_raw(self, event_id: str) -> bytes | None:
        """The bytes of ``events/<id>.json`` or None when absent; refuses symlinks and unsafe
        names (``OSError``)."""
        if not safe_name(event_id + ".json"):
            raise OSError(f"unsafe event file name {show(event_id)!r}")
        try:
            # O_NONBLOCK: a FIFO planted under an event's name reads as empty instead of hanging;
            # a folder fails the read with EISDIR.
            fd = os.open(f"{self.events_dir}/{event_id}.json",
                         os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            if size > MAX_EVENT_FILE:
                # Checked before reading: a file grown by gigabytes is damage, never read into memory.
                raise OSError(errno.EFBIG, f"{size} bytes, over the {MAX_EVENT_FILE} an event file may hold")
            first = os.read(fd, CHUNK)
            if len(first) < CHUNK:
                return first
            chunks = [first]
            while True:
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(fd)

    def read_event(self, event_id: str) -> LegacyEvent:
        """Read and parse one event file (see :func:`event_from`)."""
        try:
            return event_from(self.read_raw(event_id))
        except OSError as exc:
            return event_from(exc)

    def iter_event_files(self) -> Iterator[tuple[str, bool]]:
        """``(file name, is a regular file)`` for every entry of ``events/``."""
        try:
            it = os.scandir(self.events_dir)
        except FileNotFoundError:
            return
        with it:
            for entry in it:
                yield entry.name, entry.is_file(follow_symlinks=False)

    # -- index ----------------------------------------------------------------------------

    def iter_index_files(self) -> Iterator[tuple[str, str, bool]]:
        """``(path relative to the root, absolute path, is a regular file)`` for each file under
        ``index/``, sorted; symlinked folders are not entered."""
        base = len(self.root.rstrip(os.sep)) + 1
        for dirpath, dirnames, filenames in os.walk(self.index_dir):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    regular = stat.S_ISREG(os.lstat(full).st_mode)
                except OSError:
                    continue
                yield full[base:].replace(os.sep, "/"), full, regular
            for name in dirnames:
                if os.path.islink(os.path.join(dirpath, name)):
                    full = os.path.join(dirpath, name)
                    yield full[base:].replace(os.sep, "/"), full, False

    @staticmethod
    def iter_index_entries(path: str) -> Iterator[tuple[str, bool]]:
        """``(id, newline-terminated)`` for each line of one index file, streamed."""
        fd = fileio.open_read(path)  # no link followed, no FIFO blocked on
        with os.fdopen(fd, "rb") as f:
            for raw in f:
                done = raw.endswith(b"\n")
                yield raw[:-1 if done else None].decode("utf-8", "surrogateescape"), done


def event_from(result: bytes | OSError | None) -> LegacyEvent:
    """The :class:`LegacyEvent` for what :meth:`LegacyReader.read_raw` returned (bytes, or None
    for a missing file) or raised."""
    if isinstance(result, OSError):
        reason = "a symlink (not followed)" if result.errno == errno.ELOOP else str(result.strerror or result)
        return LegacyEvent(None, problem=f"cannot be read: {reason}")
    if result is None:
        return LegacyEvent(None, problem="missing")
    return parse_event(result)


def parse_event(raw: bytes) -> LegacyEvent:
    """Parse an event file's bytes into a :class:`LegacyEvent` (``problem`` set if unusable)."""
    try:
        doc = orjson.loads(raw)
        if type(doc) is dict and _may_hide_big_int(doc.get("data")) and _LONG_NUMBER.search(raw):
            doc = json.loads(raw)
    except (orjson.JSONDecodeError, ValueError, RecursionError) as exc:
        return LegacyEvent(raw, problem=f"not JSON ({show(str(exc), 80)})")
    if type(doc) is not dict:
        return LegacyEvent(raw, problem="not a JSON object")
    type_ = doc.get("type")
    if not isinstance(type_, str) or not type_:
        return LegacyEvent(raw, problem="has no type (a non-empty string)")
    if "data" not in doc:
        return LegacyEvent(raw, problem="has no data")
    return LegacyEvent(raw, type_, doc["data"], doc.get("id"))


def _may_hide_big_int(data: Any) -> bool:
    """Whether ``data`` as orjson parsed it may hold an integer beyond 64 bits that it turned into
    a float: a float of 1e18 or more, or a nested array or object (not searched: the raw text is)."""
    kind = type(data)
    if kind is float:
        return abs(data) >= 1e18
    if kind is dict:
        return any(type(v) in (dict, list) or (type(v) is float and abs(v) >= 1e18) for v in data.values())
    return kind is list


def scan_log(reader: LegacyReader, keep_positions: bool = False) -> LogScan:
    """One pass over the log: head, the ids it names and which positions repeat an id.

    With ``keep_positions`` the ids map to their first position (about 110 bytes per id);
    otherwise only a set is kept (about 75 bytes per id) and the first positions of repeated
    ids are found by a second pass, which runs only when an id repeats.
    """
    scan = LogScan(ids={} if keep_positions else set())
    repeats: list[tuple[int, str]] = []
    for line in reader.iter_log():
        scan.head = line.position
        if line.event_id is None:
            continue
        fp = fingerprint(line.event_id)
        if isinstance(scan.ids, dict):
            first = scan.ids.setdefault(fp, line.position)
            if first != line.position:
                scan.duplicates[line.position] = first
        elif fp in scan.ids:
            repeats.append((line.position, line.event_id))
        else:
            scan.ids.add(fp)
    if repeats:
        wanted = {eid for _, eid in repeats}
        first_at: dict[str, int] = {}
        for line in reader.iter_log():
            if line.event_id in wanted and line.event_id not in first_at:
                first_at[line.event_id] = line.position
        scan.duplicates.update({pos: first_at[eid] for pos, eid in repeats})
    return scan


def is_format1(root: str) -> bool:
    """True when ``root`` holds a Ruby kroniko store: no ``FORMAT`` file and either what
    :func:`kroniko_ops.layout.is_legacy` recognises or the bare Ruby folders (a store the gem
    opened but never wrote to)."""
    if not os.path.isdir(root) or os.path.exists(os.path.join(root, "FORMAT")):
        return False
    if is_legacy(root):
        return True
    return all(os.path.isdir(os.path.join(root, d)) for d in ("events", "index", "log"))
