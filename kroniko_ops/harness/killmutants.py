"""The kill harness's broken engines (:mod:`.mutants` registers them): subclasses of
:class:`~kroniko_ops.store.EventStore` whose reads, conditions or locking are wrong, which the
checker must catch from a real run's history and final log."""

from __future__ import annotations

import time
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


class UnlockedWriteStore(EventStore):
    """Releases the writer lock before writing the batch (and takes it back after): two writers
    may then write the same positions."""

    def _write(self, fd: int, data: bytes, tail: Any) -> None:
        assert self._lock is not None
        self._lock.release()
        try:
            time.sleep(0.0005)
            super()._write(fd, data, tail)
        finally:
            self._lock.acquire(self.lock_timeout)
