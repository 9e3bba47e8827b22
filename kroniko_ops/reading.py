"""The read path of the engine: lock-free reads up to the synced position, through the index up
to its checkpoint and through the log past it."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator
from itertools import chain, islice

import orjson

from .codec import decode_run
from .errors import StoreCorrupted
from .format import segment as segfmt
from .index import Index
from .logview import LogView, Span
from .model import Query, SequencedEvent, read_arguments, read_bounds
from .synced import SyncedState

FETCH = 256  # positions fetched and decoded together
GROUP = 2048  # events decoded under one pause of the collector, at most (about a run or a few blocks)


class ReadResult:
    """The events of one read, for one head fixed when the read started (``.head``).

    Iterating yields :class:`SequencedEvent` lazily; it may be iterated again with the same result.
    """

    def __init__(self, store: ReadPath, query: Query, start: int | None, backwards: bool,
                 limit: int | None, state: SyncedState, indexed: int) -> None:
        self.head = state.position
        self._args = (store, query, start, backwards, limit, state, indexed)

    def __iter__(self) -> Iterator[SequencedEvent]:
        store, query, start, backwards, limit, state, indexed = self._args
        # The read path hands out groups of decoded events (lists, or iterators over them);
        # chaining them in C costs less per event than a generator that yields each one.
        it = chain.from_iterable(store._iter_read(query, start, backwards, state, indexed, limit))
        return it if limit is None else islice(it, limit)


class ReadPath:
    """The read half of :class:`~kroniko_ops.store.EventStore` (which sets these attributes)."""

    path: str
    view: LogView
    index: Index

    def _state(self) -> SyncedState:  # pragma: no cover - EventStore defines it
        raise NotImplementedError

    def head(self) -> int:
        """The last durable position (0 when the store is empty). Raises :class:`StoreCorrupted`
        when the log no longer holds it (a disk that lost acknowledged records), rather than
        name a position no read can return."""
        state = self._state()
        self._see(state)
        return state.position

    def read(self, query: Query | None = None, *, start: int | None = None, backwards: bool = False,
             limit: int | None = None) -> ReadResult:
        """Events matching ``query`` (all when None), up to the head as of now (``.head``).

        ``start`` is inclusive: the first position returned is >= start going forwards,
        <= start going backwards. ``limit`` caps how many are returned.
        """
        query = read_arguments(query, start, limit)
        if self.index.stale():  # a rebuild published a newer generation: ours no longer moves
            self.index.reopen()
        # The checkpoint before the head: what it covers is then at or below the head.
        indexed = self.index.checkpoint()[0]
        state = self._state()
        return ReadResult(self, query, start, backwards, limit, state, min(indexed, state.position))

    def subscribe(self, query: Query | None = None, *, after: int = 0,
                  poll_interval: float = 0.01, max_interval: float = 0.5) -> Iterator[SequencedEvent]:
        """Yield matching events after ``after``, then wait for new ones, forever.

        Polls the synced position, backing off from ``poll_interval`` to ``max_interval`` while
        nothing arrives (and syncing records a dead writer left unsynced). Close the generator
        to stop.
        """
        pos = after
        while True:
            result = self.read(query, start=pos + 1)
            yield from result
            pos = result.head
            delay = poll_interval
            while self.head() == pos:
                time.sleep(delay)
                delay = min(delay * 2, max_interval)
                if delay == max_interval:
                    self.sync_idle()  # type: ignore[attr-defined]

    # -- the iteration -----------------------------------------------------------------------

    def _iter_read(self, query: Query, start: int | None, backwards: bool, state: SyncedState,
                   indexed: int, limit: int | None = None) -> Iterator[Iterable[SequencedEvent]]:
        head = state.position
        if head == 0:
            return
        lo, hi = read_bounds(head, start, backwards)
        if lo > hi:
            return
        self._see(state)
        if query.is_all:
            yield from _grouped(self.view.spans(lo, hi, backwards), self.path, backwards, limit)
            return
        if backwards:
            yield from self._tail_matches(query, max(lo, indexed + 1), hi, True)
            yield from self._fetch(self._positions(query, lo, min(hi, indexed), True, limit), True, limit)
        else:
            yield from self._fetch(self._positions(query, lo, min(hi, indexed), False, limit), False, limit)
            yield from self._tail_matches(query, max(lo, indexed + 1), hi, False)

    def _see(self, state: SyncedState) -> None:
        """Let the view read the active segment up to the synced end."""
        active = self.view.active
        if active is None or active.first < state.segment:  # the log rolled since the view looked
            self.view.refresh()
            active = self.view.active
        if active is not None and active.first == state.segment:
            active.follow(state.position, state.chain, state.end)
        elif active is not None and active.first < state.segment:
            raise StoreCorrupted(f"the synced position {state.position} of {self.path} names log/"
                                 f"{segfmt.seg_name(state.segment)}, which is missing: acknowledged events are lost; "
                                 f"run: kroniko-ops fsck {self.path} (then restore from a backup, or keep what "
                                 "remains with fsck --repair --accept-loss)")

    def _positions(self, query: Query, lo: int, hi: int, backwards: bool = False,
                   limit: int | None = None) -> Iterator[int]:
        if lo > hi:
            return iter(())
        return self.index.positions(query, lo, hi, backwards, limit)

    def _fetch(self, positions: Iterator[int], backwards: bool, limit: int | None = None
               ) -> Iterator[list[SequencedEvent]]:
        # A read with a limit fetches that many at first; one without, a few (doubling up to
        # FETCH): a caller that stops after one event then reads few, one that reads an
        # entity's handful reads them in one go.
        size = min(limit, FETCH) if limit else 16
        while chunk := list(islice(positions, size)):
            size = min(2 * size, FETCH)
            events = decode_spans(self.view.read_spans(sorted(chunk)), self.path)
            yield events[::-1] if backwards else events

    def _tail_matches(self, query: Query, lo: int, hi: int, backwards: bool) -> Iterator[list[SequencedEvent]]:
        """Matches among the records the index has not reached yet (a few hundred at most):
        only the events whose bytes hold the query's tags and type are parsed."""
        if lo > hi:
            return
        out: list[SequencedEvent] = []
        matches = query.matches
        needles = _needles(query)
        # A run of records that holds no needle anywhere (the common case) is skipped unsplit.
        for first, bodies, commits, _array in self.view.spans(lo, hi, holds=lambda raw: _may_match(raw, needles)):
            keep = [k for k, body in enumerate(bodies) if _may_match(body, needles)]
            if not keep:
                continue
            marks = _marks(commits, len(bodies))
            events = decode_run(first + keep[0], [bodies[k] for k in keep], self.path,
                                [(i, *marks[k]) for i, k in enumerate(keep)], positions=[first + k for k in keep])
            out.extend(e for e in events if matches(e.event.type, e.event.tags))
        yield out[::-1] if backwards else out


Needles = list[tuple[tuple[bytes, ...], tuple[bytes, ...]]]


def _needles(query: Query) -> Needles:
    """Per item of ``query``: the bytes each of its tags and each of its types takes in an
    event's canonical JSON (orjson writes both; the type is the last key). An item naming a tag
    no event can hold (not UTF-8) matches nothing and is left out, and so are its types."""
    out: Needles = []
    for item in query.items:
        try:
            tags = tuple(orjson.dumps(t) for t in item.tags)
        except TypeError:
            continue
        types = []
        for t in item.types:
            try:
                types.append(b'"type":' + orjson.dumps(t) + b"}")
            except TypeError:
                continue
        if types or not item.types:
            out.append((tags, tuple(types)))
    return out


def _may_match(body: bytes, needles: Needles) -> bool:
    """Whether an event's bytes hold every tag and one type of some item of the query (a match
    must; bytes that do are parsed and checked)."""
    for tags, types in needles:
        if all(t in body for t in tags) and (not types or any(t in body for t in types)):
            return True
    return False


def _marks(commits: list[tuple[int, int, bool]], n: int) -> list[tuple[int, bool]]:
    """Per event of a span: its batch's commit time and whether it ends its batch."""
    out: list[tuple[int, bool]] = []
    for last, stamp, ends in commits:
        out.extend((stamp, False) for _ in range(len(out), last))
        out.append((stamp, ends))
    return out[:n]


def _grouped(spans: Iterator[Span], where: str, backwards: bool, limit: int | None
             ) -> Iterator[Iterator[SequencedEvent]]:
    """The events of ``spans`` (in the order given; each span's own events reversed when
    ``backwards``), decoded a group of spans at a time under one pause of the collector: fewer
    pauses, fewer collections over the events a caller keeps. Groups grow from a few dozen events
    (a read stopped early decodes little) to about :data:`GROUP` events, and never read a span
    past the ``limit`` of events asked for."""
    want, group, count = 64, [], 0
    left = limit if limit is not None else -1
    for span in spans:
        group.append(span)
        count += len(span[1])
        if count >= want or count >= left >= 0:
            yield _decode_group(group, where, backwards)
            left -= count
            want, group, count = min(2 * want, GROUP), [], 0
    if group:
        yield _decode_group(group, where, backwards)


def _decode_group(group: list[Span], where: str, backwards: bool) -> Iterator[SequencedEvent]:
    """The events of ``group``, as an iterator made while the collector is paused.

    The iterator that ``chain`` would make of a list is an allocation, the first after the pause:
    it would start a collection over the whole group just decoded, before the caller has seen
    one event; for a caller that streams the events, which are freed unscanned once it moves on,
    that was a sixth of the read. Made here, the next collection comes when the next group
    starts: over the events only if the caller kept them, while they are still in the cache."""
    # Plain calls, not gcpause.paused(): leaving a generator-based context manager allocates
    # (its StopIteration) after the collector is on again, which would start that collection.
    # Disabled only when on, and so enabled again only by whoever disabled it: a reader in
    # another thread that found it off, paused by this one, must not turn it off for good.
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        if len(group) == 1:
            first, bodies, commits, array = group[0]
            events = decode_run(first, bodies, where, commits, array)
            return iter(events[::-1] if backwards else events)
        out: list[SequencedEvent] = []
        for first, bodies, commits, array in group:
            events = decode_run(first, bodies, where, commits, array)
            out.extend(events[::-1] if backwards else events)
        return iter(out)
    finally:
        if enabled:
            gc.enable()


def decode_spans(spans: list[Span], where: str) -> list[SequencedEvent]:
    """The events of ``spans`` (scattered positions, ascending) decoded in one parse."""
    if len(spans) == 1:
        first, bodies, commits, array = spans[0]
        return decode_run(first, bodies, where, commits, array)
    positions: list[int] = []
    everything: list[bytes] = []
    groups: list[tuple[int, int, bool]] = []
    for first, bodies, commits, _array in spans:
        base = len(everything)
        positions.extend(range(first, first + len(bodies)))
        everything.extend(bodies)
        groups.extend((base + last, stamp, ends) for last, stamp, ends in commits)
    return decode_run(positions[0] if positions else 0, everything, where, groups, positions=positions)
