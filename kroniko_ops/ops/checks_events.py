"""Event checks: every event the log names exists (loose or packed), hashes to the log's hash,
parses, and carries the id it is filed under. Also the tolerant ``(position, id, type, tags)``
reader that the index checks and ``reindex`` build on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from ..errors import StoreCorrupted
from ..log import LINE_LEN, BadLine, decode_line
from ..packs import PackSet
from ..progress import progress
from .checks_common import MASK64, Context, Digest, read_exact, read_whole
from .checks_log import LogScanner

Entry = tuple[int, str, str, tuple[str, ...]]
OnBad = Callable[[int, str, str, str], None]  # (position, code, path, message)
TYPE_KEY, TAG_KEY, ID_KEY = 0, 1, 2


@dataclass
class EventsResult:
    """What the events pass learnt, for the reference and index checks that follow."""

    checked: int = 0
    loose: Digest = field(default_factory=Digest)
    index: Digest = field(default_factory=Digest)
    packed: int = 0
    packs_unreadable: bool = False


def parse_event(raw: bytes) -> tuple[str, str, tuple[str, ...]]:
    """``(id, type, tags)`` of an event's bytes; raises ``ValueError`` when they are not an event."""
    doc = orjson.loads(raw)
    if type(doc) is not dict:
        raise ValueError("not a JSON object")
    eid, etype, tags = doc.get("id"), doc.get("type"), doc.get("tags", [])
    if type(eid) is not str or type(etype) is not str or not etype:
        raise ValueError("no string 'id' and non-empty string 'type'")
    if type(tags) is not list or any(type(t) is not str for t in tags):
        raise ValueError("'tags' is not a list of strings")
    return eid, etype, tuple(tags)


def index_keys(digest: Digest, pos: int, eid: str, etype: str, tags: tuple[str, ...]) -> None:
    """Add the index lines one event implies (type, each distinct tag, id) to ``digest``."""
    digest.add((TYPE_KEY, etype, pos))
    for tag in dict.fromkeys(tags):
        digest.add((TAG_KEY, tag, pos))
    digest.add((ID_KEY, eid, pos))


class _Packs:
    """Pack lookups the way the engine reads: a pack already known to hold a position first,
    else the loose file, else the packs listed afresh (compaction publishes a pack before it
    removes the loose files). A damaged pack reads as 'unavailable' here: ``check_packs``
    reports it as ``pack-corrupt``."""

    def __init__(self, folder: str) -> None:
        self.packs = PackSet(folder)
        self.unavailable = False
        self.damaged = False
        try:
            self.known = bool(self.packs.packs())  # no packs yet: skip the cached lookups
        except (StoreCorrupted, ValueError, NotImplementedError):
            self.known = True

    def get(self, position: int, refresh: bool = True) -> bytes | None:
        if self.unavailable or not (refresh or self.known):
            return None
        try:
            raw = self.packs.get(position, refresh=refresh)
            self.known = self.known or raw is not None
            return raw
        except NotImplementedError:
            self.unavailable = True
        except (StoreCorrupted, ValueError):
            self.damaged = True
        return None

    def close(self) -> None:
        close = getattr(self.packs, "close", None)
        if close is not None:
            close()


def check_events(ctx: Context, scanner: LogScanner, index_upto: int) -> EventsResult:
    """Walk the log lines ``scanner`` yields. Quick: only sum their ids (existence is checked
    against the folder listing afterwards). Full: read, hash, parse each event, and sum the
    index lines it implies for positions up to ``index_upto``."""
    out = EventsResult()
    if not ctx.full:
        # Packed positions (from the pack file names) have no loose file to find.
        packs = PackSet(ctx.layout.packs)
        try:
            ranges = packs.ranges()
        except (StoreCorrupted, ValueError):
            ranges = []
        finally:
            packs.close()
        scanner.ids(out.loose, ranges)
        out.checked = scanner.last - scanner.unreadable
        return out
    packs = _Packs(ctx.layout.packs)
    try:
        _check_full(ctx, scanner, index_upto, packs, out)
    finally:
        packs.close()
    out.packs_unreadable = packs.unavailable
    return out


def _check_full(ctx: Context, scanner: LogScanner, index_upto: int, packs: _Packs, out: EventsResult) -> None:
    """The full events pass: read, hash, parse and sum the index lines of each event."""
    lines = progress(scanner, scanner.last, "fsck: events", ctx.quiet)
    events = ctx.layout.events + os.sep
    sha256 = hashlib.sha256
    itotal = icount = 0
    for lineno, eid, ehash in lines:
        out.checked += 1
        path = events + eid + ".json"
        rel = f"events/{eid}.json"
        loose = True
        try:
            raw = packs.get(lineno, refresh=False)
            if raw is not None:
                loose = False
                out.packed += 1
            else:
                raw = read_whole(path)
        except FileNotFoundError:
            loose = False
            raw = packs.get(lineno)
            if raw is None:
                scanner.mark_bad(lineno)
                if packs.damaged:
                    continue  # most likely in a damaged pack, which check_packs reports
                ctx.add("missing-event", "error", rel,
                        f"position {lineno} names event {eid}, which is neither loose nor packed; "
                        "restore it from a backup", lineno)
                continue
            out.packed += 1
        except OSError as exc:
            scanner.mark_bad(lineno)
            ctx.add("event-unreadable", "error", rel, f"cannot read the event at position {lineno}: {exc}",
                    lineno)
            continue
        if loose:
            out.loose.add(eid)
        good = True
        if sha256(raw).digest() != ehash and (not loose or sha256(read_exact(path)).digest() != ehash):
            good = False
            if loose:  # a packed one is check_packs' pack-corrupt
                ctx.add("event-hash-mismatch", "error", rel,
                        f"the stored bytes of the event at position {lineno} do not match the log's hash: "
                        "the event was changed after it was committed; restore it from a backup", lineno)
        try:
            cid, etype, tags = parse_event(raw)
        except ValueError as exc:
            scanner.mark_bad(lineno)
            ctx.add("event-unreadable", "error", rel, f"the event at position {lineno} does not parse: {exc}",
                    lineno)
            continue
        if cid != eid:
            good = False
            ctx.add("event-id-mismatch", "error", rel,
                    f"the file of position {lineno} is named {eid} but its content says id {cid!r}", lineno)
        if not good:
            scanner.mark_bad(lineno)
        elif lineno <= index_upto:
            # index_keys(), inlined: this runs once per event.
            itotal += hash((TYPE_KEY, etype, lineno)) + hash((ID_KEY, eid, lineno))
            icount += 2
            for tag in dict.fromkeys(tags) if len(tags) > 1 else tags:
                itotal += hash((TAG_KEY, tag, lineno))
                icount += 1
    out.index.total, out.index.count = itotal & MASK64, icount


def iter_entries(root: str, fd: int, first: int, last: int, on_bad: OnBad | None = None,
                 skip: set[int] | None = None) -> Iterator[Entry]:
    """``(position, id, type, tags)`` of positions ``first..last`` whose line and event verify;
    the others are passed to ``on_bad`` (if given) and skipped. Memory stays flat: lines are
    read in chunks and events one at a time."""
    events = os.path.join(root, "events") + os.sep
    packs = _Packs(os.path.join(root, "packs"))
    pos = first
    try:
        while pos <= last:
            count = min(4096, last - pos + 1)
            raw = os.pread(fd, count * LINE_LEN, (pos - 1) * LINE_LEN)
            for k in range(count):
                p = pos + k
                if skip is not None and p in skip:
                    continue
                entry = _entry(events, packs, raw[k * LINE_LEN : (k + 1) * LINE_LEN], p, on_bad)
                if entry is not None:
                    yield entry
            pos += count
    finally:
        packs.close()


def _entry(events: str, packs: _Packs, raw: bytes, pos: int, on_bad: OnBad | None) -> Entry | None:
    def bad(code: str, path: str, message: str) -> None:
        if on_bad is not None:
            on_bad(pos, code, path, message)

    try:
        line = decode_line(raw)
    except BadLine as exc:
        bad("log-bad-line", "log/append.log", f"line {pos}: {exc}")
        return None
    if line.position != pos:
        bad("log-position-mismatch", "log/append.log", f"line {pos} carries position {line.position}")
        return None
    rel = f"events/{line.event_id}.json"
    try:
        data = packs.get(pos, refresh=False) or read_whole(events + line.event_id + ".json")
    except FileNotFoundError:
        data = packs.get(pos)
        if data is None:
            bad("missing-event", rel, f"the event of position {pos} is neither loose nor packed")
            return None
    except OSError as exc:
        bad("event-unreadable", rel, f"cannot read the event of position {pos}: {exc}")
        return None
    if hashlib.sha256(data).hexdigest() != line.event_hash:
        bad("event-hash-mismatch", rel, f"the event of position {pos} does not match the log's hash")
        return None
    try:
        eid, etype, tags = parse_event(data)
    except ValueError as exc:
        bad("event-unreadable", rel, f"the event of position {pos} does not parse: {exc}")
        return None
    if eid != line.event_id:
        bad("event-id-mismatch", rel, f"the event of position {pos} says id {eid!r}")
        return None
    return pos, eid, etype, tags
