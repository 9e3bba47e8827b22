"""Broken engines ("mutants") for proving that the checker catches what it claims to catch.

Each is a subclass of :class:`~kroniko_ops.store.EventStore` with one deliberate bug; the
engine's files stay untouched. A worker runs one when ``run_workload(..., mutant=NAME)`` is
asked to (the tests do, on workloads where the bug must show), and the checker must then
report a violation from the real run's history:

- ``peek-past-head``: a read returns one event past the head it reports (a reader sees a
  record its head says is not committed);
- ``mid-batch-head``: a read stops inside the last batch and reports that as its head (a
  reader sees part of a batch);
- ``ignore-condition``: an append drops its condition;
- ``drop-event``: a read leaves out the first event it should return.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..model import AppendCondition, Event, Query, SequencedEvent
from ..store import EventStore


class FakeResult:
    """What a mutant's read returns in place of a ReadResult: a head and a list of events."""

    def __init__(self, head: int, events: list[SequencedEvent]) -> None:
        self.head = head
        self.events = events

    def __iter__(self) -> Iterator[SequencedEvent]:
        return iter(self.events)


class PeekingStore(EventStore):
    """Reports the head one lower than it is, but returns the events up to the real head."""

    def read(self, query: Query | None = None, **kw: Any) -> Any:  # type: ignore[override]
        """The real read's events under a head one lower."""
        real = super().read(query, **kw)
        return FakeResult(max(0, real.head - 1), list(real))


class TornHeadStore(EventStore):
    """When the last batch has several records, stops one record short of it and calls that
    the head."""

    def read(self, query: Query | None = None, **kw: Any) -> Any:  # type: ignore[override]
        """The real read, cut inside the last batch when it can be."""
        real = super().read(query, **kw)
        head = real.head
        if head > 1 and not next(iter(self.records(head - 1, head - 1))).commit:
            return FakeResult(head - 1, [e for e in real if e.position < head])
        return real


class CarelessStore(EventStore):
    """Appends without checking the condition."""

    def append(self, events: Event | Iterable[Event], condition: AppendCondition | None = None) -> int:
        """Append, ignoring ``condition``."""
        return super().append(events, None)


class ForgetfulStore(EventStore):
    """Leaves the first matching event out of every read."""

    def read(self, query: Query | None = None, **kw: Any) -> Any:  # type: ignore[override]
        """The real read less its first event."""
        real = super().read(query, **kw)
        return FakeResult(real.head, list(real)[1:])


STORES: dict[str, type[EventStore]] = {
    "peek-past-head": PeekingStore,
    "mid-batch-head": TornHeadStore,
    "ignore-condition": CarelessStore,
    "drop-event": ForgetfulStore,
}
