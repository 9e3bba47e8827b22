"""What the checker knows of a log: its entries, and a summary it can ask range questions of.

The summary groups positions by *class*, the event's type and its set of tags: whether an event
matches a query depends on nothing else, so a query's matches in any position range are the
union of a few classes' ranges. Each class keeps its positions in order with prefix sums of
their :func:`~kroniko_ops.harness.history.mix`, so "how many events match this query in lo..hi,
and what is their read digest" costs one bisect per class, whatever the log's length.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .history import MASK, mix
from .workload import QuerySpec

Key = tuple[str, frozenset[str]]


@dataclass(frozen=True)
class LogEntry:
    """One committed event as the store holds it: ``commit`` is its record's commit mark (the
    last record of a batch), ``hash`` the SHA-256 of its stored body (``b""`` in fabricated
    logs)."""

    position: int
    id: str
    type: str
    tags: tuple[str, ...]
    commit: bool = True
    hash: bytes = b""


def matches(spec: QuerySpec, type_: str, tags: Iterable[str]) -> bool:
    """DCB matching, written here independently of the engine: items OR'ed, types any-of,
    tags all-of, an empty query or an empty item matches everything."""
    if not spec:
        return True
    have = set(tags)
    return any((not types or type_ in types) and all(t in have for t in item_tags) for types, item_tags in spec)


class Run:
    """The positions of one class, ascending, with prefix sums of their mixes."""

    __slots__ = ("positions", "prefix")

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.prefix: list[int] = [0]

    def add(self, position: int, share: int) -> None:
        """Append a position (greater than every one before) and its mix."""
        self.positions.append(position)
        self.prefix.append((self.prefix[-1] + share) & MASK)

    def span(self, lo: int, hi: int) -> tuple[int, int, int]:
        """``(count, digest sum, index of the first)`` of the positions in ``lo..hi``."""
        a = bisect.bisect_left(self.positions, lo)
        b = bisect.bisect_right(self.positions, hi)
        if b <= a:
            return 0, 0, a
        return b - a, (self.prefix[b] - self.prefix[a]) & MASK, a


@dataclass
class Prior:
    """A summary of positions ``1..head`` (for a run that starts on a used store, the part
    before its base; the checker builds one for the run's own part too): the last position of
    each class, each class's positions with prefix digests, the positions whose record has no
    commit mark (a read's head must never be one), and a way to fetch one entry."""

    last: dict[Key, int] = field(default_factory=dict)
    entry_at: Callable[[int], LogEntry | None] = lambda _p: None
    classes: dict[Key, Run] = field(default_factory=dict)
    inner: set[int] = field(default_factory=set)
    head: int = 0

    def advance(self, log: Iterable[LogEntry]) -> None:
        """Fold more of the log into the summary (positions must come in order, after ``head``)."""
        for e in log:
            key = (e.type, frozenset(e.tags))
            self.last[key] = e.position
            run = self.classes.get(key)
            if run is None:
                run = self.classes[key] = Run()
            run.add(e.position, mix(e.position, e.hash))
            if not e.commit:
                self.inner.add(e.position)
            self.head = e.position


def span(summaries: Iterable[Prior], spec: QuerySpec, lo: int, hi: int) -> tuple[int, str, list[tuple[Run, int, int]]]:
    """The events matching ``spec`` at positions ``lo..hi`` across ``summaries``: their count,
    their read digest, and the ``(run, first index, count)`` slices that hold them."""
    count, total = 0, 0
    slices: list[tuple[Run, int, int]] = []
    if lo <= hi:
        for summary in summaries:
            for (type_, tags), run in summary.classes.items():
                if matches(spec, type_, tags):
                    n, digest, a = run.span(lo, hi)
                    if n:
                        count += n
                        total = (total + digest) & MASK
                        slices.append((run, a, n))
    return count, f"{total:016x}", slices


def positions_of(slices: list[tuple[Run, int, int]]) -> list[int]:
    """The positions the slices of :func:`span` cover, ascending."""
    return sorted(p for run, a, n in slices for p in run.positions[a:a + n])
