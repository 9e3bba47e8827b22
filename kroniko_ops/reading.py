"""The read path of the engine: lock-free reads of loose and packed events, through the index
up to its trusted checkpoint and through the log past it."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from itertools import chain, islice

import orjson

from . import fileio
from .codec import decode_event
from .errors import StoreCorrupted
from .index import Index
from .layout import Layout
from .log import LogLine, iter_lines, read_line
from .model import Event, Query, SequencedEvent
from .packs import PackSet

_log = logging.getLogger("kroniko_ops")
Entry = tuple[int, str, str, Sequence[str]]
LOOSE_BATCH = 64  # loose events a bulk read decodes ahead of its consumer


class ReadResult:
    """The events of one read, for one head fixed when the read started (``.head``).

    Iterating yields :class:`SequencedEvent` lazily; it may be iterated again with the same result.
    """

    def __init__(self, store: ReadPath, query: Query, start: int | None, backwards: bool,
                 limit: int | None, head: int, trusted: int) -> None:
        self.head = head
        self._args = (store, query, start, backwards, limit, trusted)

    def __iter__(self) -> Iterator[SequencedEvent]:
        store, query, start, backwards, limit, trusted = self._args
        return store._iter_read(query, start, backwards, limit, self.head, trusted)


class ReadPath:
    """The read half of :class:`~kroniko_ops.store.EventStore` (which sets these attributes)."""

    path: str
    layout: Layout
    index: Index
    packs: PackSet
    _read_fd: int

    def _iter_read(self, query: Query, start: int | None, backwards: bool, limit: int | None,
                   head: int, trusted: int) -> Iterator[SequencedEvent]:
        if limit == 0 or head == 0:
            return iter(())
        lo, hi = 1, head
        if start is not None:
            if backwards:
                hi = min(hi, start)
            else:
                lo = max(lo, start)
        if lo > hi:
            return iter(())
        if query.is_all:
            # Positions are gap-free, so a limit on all events is a range.
            if limit is not None:
                if backwards:
                    lo = max(lo, hi - limit + 1)
                else:
                    hi = min(hi, lo + limit - 1)
            # Lists of events flattened in C: a bulk read costs no generator step per event.
            return chain.from_iterable(self._read_range(lo, hi, backwards))
        return self._read_matching(query, lo, hi, backwards, limit, trusted)

    def _read_matching(self, query: Query, lo: int, hi: int, backwards: bool, limit: int | None,
                       trusted: int) -> Iterator[SequencedEvent]:
        positions = self.matching(query, lo - 1, hi, trusted)
        if backwards:
            positions.reverse()
        if limit is not None:
            positions = positions[:limit]
        for pos in positions:
            yield self._sequenced(read_line(self._read_fd, pos))

    def matching(self, query: Query, after: int, upto: int, trusted: int) -> list[int]:
        """Positions in ``(after, upto]`` whose events match ``query``, ascending.

        Uses the index up to ``trusted`` and the log and events past it.
        """
        if query.is_all:
            return list(range(after + 1, upto + 1))
        indexed = min(trusted, upto)
        found: set[int] = set()
        try:
            if indexed > after:
                for item in query.items:
                    found.update(self._item_positions(item.types, item.tags, after, indexed))
        except ValueError:
            _log.warning("index of %s is damaged; reading the log instead (run reindex)", self.path)
            indexed = after
            found.clear()
        for pos, _eid, type_, tags in self._entries(max(after, indexed) + 1, upto):
            if query.matches(type_, tags):
                found.add(pos)
        return sorted(found)

    def _item_positions(self, types: Sequence[str], tags: Sequence[str], after: int, upto: int) -> set[int]:
        """Positions in ``(after, upto]`` of events of any of ``types`` carrying all ``tags``.

        Loads the shortest list and checks the others' membership, so that a condition on a
        rare tag of a common type costs in proportion to the tag, not the type.
        """
        index = self.index
        sides: list[tuple[int, list[tuple[str, str]]]] = [
            (index.count("tags", t), [("tags", t)]) for t in tags
        ]
        if types:
            sides.append((sum(index.count("types", t) for t in types), [("types", t) for t in types]))
        sides.sort(key=lambda side: side[0])
        _, first = sides[0]
        found: set[int] = set()
        for kind, name in first:
            found.update(index.positions(kind, name, after, upto))
        for size, names in sides[1:]:
            if not found:
                break
            if len(found) * 24 > size:  # cheaper to load the whole list than to bisect per candidate
                other: set[int] = set()
                for kind, name in names:
                    other.update(index.positions(kind, name, after, upto))
                found &= other
            else:
                found = {p for p in found if any(index.contains(kind, name, p) for kind, name in names)}
        return found

    def _read_range(self, lo: int, hi: int, backwards: bool) -> Iterator[list[SequencedEvent]]:
        """Every event of ``lo..hi``, in lists: loose ones a few at a time, packed ones a batch at
        a time, decoded straight from the pack.

        A packed batch's bytes are trusted without hashing each event when the pack's own
        checksums were verified (once per handle: the pack was checked against the log's hashes
        before it was published, and a pack never changes); a short read of a big pack hashes
        its events against the log instead, as loose reads do.
        """
        segments = self.packs.segments(lo, hi, refresh=hi - lo >= 64)
        for a, b, pack in reversed(segments) if backwards else segments:
            if pack is None:
                lines = iter_lines(self._read_fd, a, b, backwards)
                while chunk := list(islice(lines, LOOSE_BATCH)):
                    yield [self._sequenced(line) for line in chunk]
                continue
            verified = self.packs.ensure_verified(pack, b - a + 1)
            for start, raws in pack.batches(a, b, backwards):
                if not verified:
                    self._check_hashes(start, raws)
                batch = self._decode_batch(start, raws)
                if backwards:
                    batch.reverse()
                yield batch

    def _check_hashes(self, start: int, raws: list[bytes]) -> None:
        for line, raw in zip(iter_lines(self._read_fd, start, start + len(raws) - 1), raws, strict=True):
            if hashlib.sha256(raw).hexdigest() != line.event_hash:
                raise StoreCorrupted(
                    f"packed event {line.event_id} at position {line.position} does not match its hash "
                    f"in the log; run: kroniko-ops fsck {self.path}"
                )

    def _decode_batch(self, start: int, raws: list[bytes]) -> list[SequencedEvent]:
        """Decode the stored events of positions ``start, start + 1, ...`` in one JSON parse
        (their canonical bytes joined into an array). Any doubt falls back to decoding one by
        one, which names the bad position.

        The events are built without their dataclass ``__init__`` (a third of the cost of a bulk
        read): the fields are exactly the ones ``decode_event`` passes, already validated here.
        """
        try:
            docs = orjson.loads(b"[" + b",".join(raws) + b"]")
        except orjson.JSONDecodeError:
            docs = None
        if docs is not None and len(docs) == len(raws):
            out: list[SequencedEvent] = []
            append, new, pos = out.append, object.__new__, start
            for doc in docs:
                try:
                    type_, tags = doc["type"], doc["tags"]
                    if type_.__class__ is not str or tags.__class__ is not list:
                        break
                    event = new(Event)
                    fields = event.__dict__
                    fields["type"], fields["data"], fields["tags"] = type_, doc["data"], tuple(tags)
                    fields["metadata"], fields["id"] = doc["metadata"], doc["id"]
                except (KeyError, TypeError):
                    break
                seq = new(SequencedEvent)
                seq.__dict__["position"], seq.__dict__["event"] = pos, event
                append(seq)
                pos += 1
            else:
                return out
        events = []
        for k, raw in enumerate(raws):
            try:
                events.append(SequencedEvent(start + k, decode_event(raw)))
            except ValueError:
                raise StoreCorrupted(
                    f"the packed event at position {start + k} does not parse; run: kroniko-ops fsck {self.path}"
                ) from None
        return events

    def _sequenced(self, line: LogLine) -> SequencedEvent:
        return SequencedEvent(line.position, self._event(line))

    def _event(self, line: LogLine) -> Event:
        raw = self._load(line)
        try:
            return decode_event(raw)
        except ValueError:
            raise StoreCorrupted(
                f"event {line.event_id} at position {line.position} does not parse; run: "
                f"kroniko-ops fsck {self.path}"
            ) from None

    def _load(self, line: LogLine) -> bytes:
        """The stored bytes of a committed event, loose or packed, checked against the log.

        A pack already known to hold the position is read first (no failed open of a loose file
        that compaction removed); otherwise the loose file, then the packs listed afresh (a
        compaction publishes the pack before it removes the loose file).
        """
        raw = self.packs.get(line.position, refresh=False)
        if raw is None:
            try:
                raw = fileio.read_file(self.layout.event_file(line.event_id))
            except FileNotFoundError:
                raw = self.packs.get(line.position)
                if raw is None:
                    raise StoreCorrupted(
                        f"event {line.event_id} at position {line.position} is missing; run: "
                        f"kroniko-ops fsck {self.path}"
                    ) from None
        if hashlib.sha256(raw).hexdigest() != line.event_hash:
            raise StoreCorrupted(
                f"event {line.event_id} at position {line.position} does not match its hash in "
                f"the log; run: kroniko-ops fsck {self.path}"
            )
        return raw

    def _entries(self, first: int, last: int) -> Iterator[Entry]:
        """``(position, id, type, tags)`` for positions ``first..last``, from the log and events."""
        for line in iter_lines(self._read_fd, first, last):
            event = self._event(line)
            yield line.position, line.event_id, event.type, event.tags
