"""Workloads for the harness: what every worker process will do, drawn entirely up front.

One generator, :func:`build_workload`, is written against a tiny :class:`Source` of choices, so
the same code draws a workload from a seeded :class:`random.Random` (the torture command) and
from Hypothesis (the tests, which then shrink a failing workload to a minimal one). Nothing is
drawn inside the workers: a workload is plain data, pickled to each process.

The vocabulary is small on purpose: few types and shared tags make workers' queries and events
overlap, so conditional appends really conflict; each worker also has tags of its own, so some
conditions are disjoint and must never conflict.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..model import AppendCondition, Event, Query, QueryItem

T = TypeVar("T")

TYPES = ("A", "B", "C", "D")
SHARED_TAGS = ("s:0", "s:1", "s:2", "s:3")
OWN_TAGS = 2

# A query as plain data: items of (types any-of, tags all-of); () is Query.all().
QuerySpec = tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]

KINDS = ("append", "conditional", "retry", "read")


@dataclass(frozen=True)
class EventPlan:
    """One event to append: its type and tags (its id comes from where it sits in the workload)."""

    type: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class OpPlan:
    """One operation of a worker.

    ``append``: an unconditional batch. ``conditional``: read ``query``, then (unless
    ``skip_if_found`` and the read found something) append with
    ``AppendCondition(query, after=read.head)`` (or ``after=None`` when ``after_read`` is false).
    ``retry``: repeat op ``retry_of`` of the same worker exactly (same ids, same condition): an
    idempotent retry. ``read``: a read of ``query`` whose head is recorded.
    ``kill_at``: the worker kills itself with SIGKILL at this file operation of the call.
    ``think_us``: microseconds the worker spends deciding between its read and its append,
    which widens the window in which another worker's commit makes the condition fail.
    ``start`` and ``backwards`` (reads only) are passed to ``EventStore.read``.
    """

    kind: str
    events: tuple[EventPlan, ...] = ()
    query: QuerySpec | None = None
    after_read: bool = True
    skip_if_found: bool = False
    retry_of: int | None = None
    kill_at: int | None = None
    think_us: int = 0
    start: int | None = None
    backwards: bool = False


SMALL_SEGMENT = 4096  # the smallest segment a store may have: a roll every dozen events


@dataclass(frozen=True)
class Workload:
    """Every worker's list of operations, plus the run id that makes event ids unique.

    ``durable`` is how every worker opens the store; ``segment_bytes`` is passed when the store
    is created (:data:`SMALL_SEGMENT` makes segments roll and seal under concurrency)."""

    workers: tuple[tuple[OpPlan, ...], ...]
    run: str = field(default_factory=lambda: os.urandom(4).hex())
    durable: bool = False
    segment_bytes: int | None = None

    def event_ids(self, worker: int, index: int) -> tuple[str, ...]:
        """The explicit ids of the batch of op ``index`` of ``worker`` (a retry reuses its target's)."""
        op = self.workers[worker][index]
        if op.kind == "retry":
            assert op.retry_of is not None
            return self.event_ids(worker, op.retry_of)
        return tuple(f"{self.run}.{worker}.{index}.{k}" for k in range(len(op.events)))

    def batch(self, worker: int, index: int) -> tuple[EventPlan, ...]:
        """The events op ``index`` of ``worker`` appends (a retry's are its target's)."""
        op = self.workers[worker][index]
        if op.kind == "retry":
            assert op.retry_of is not None
            return self.batch(worker, op.retry_of)
        return op.events

    @property
    def operations(self) -> int:
        """How many operations the workload holds in all."""
        return sum(len(ops) for ops in self.workers)


def to_query(spec: QuerySpec) -> Query:
    """The engine's :class:`Query` for a :data:`QuerySpec`."""
    return Query([QueryItem(types=types, tags=tags) for types, tags in spec])


def to_events(ids: Sequence[str], plans: Sequence[EventPlan], marker: Any = None) -> list[Event]:
    """Engine events for a batch; ``data`` repeats the id so a stored event explains itself."""
    return [Event(p.type, {"op": eid} if marker is None else marker, p.tags, id=eid)
            for eid, p in zip(ids, plans, strict=True)]


def condition_for(spec: QuerySpec, after: int | None) -> AppendCondition:
    """The append condition of a conditional op."""
    return AppendCondition(to_query(spec), after)


# -- drawing ---------------------------------------------------------------------------------


class Source(Protocol):
    """Where the choices come from: a seeded RNG or Hypothesis's ``draw``."""

    def integer(self, lo: int, hi: int) -> int:
        """An int in ``[lo, hi]``; shrinking (for Hypothesis) goes towards ``lo``."""

    def chance(self, p: float) -> bool:
        """True with probability about ``p``; shrinking goes towards False."""


def _pick(src: Source, options: Sequence[T]) -> T:
    return options[src.integer(0, len(options) - 1)]


def _subset(src: Source, options: Sequence[T], lo: int, hi: int) -> tuple[T, ...]:
    n = src.integer(lo, min(hi, len(options)))
    out: list[T] = []
    for _ in range(n):
        choice = _pick(src, options)
        if choice not in out:
            out.append(choice)
    return tuple(out)


@dataclass(frozen=True)
class Limits:
    """The size of a drawn workload."""

    min_workers: int = 2
    max_workers: int = 4
    min_ops: int = 1
    max_ops: int = 5
    max_batch: int = 20
    kill_chance: float = 0.0  # chance that an append op kills its worker mid-commit
    max_kill_at: int = 8  # an append makes 2-4 file operations (a first one or a roll, up to a dozen)
    small_segments: float = 0.5  # chance that the store is created with SMALL_SEGMENT


def _event(src: Source, pool: Sequence[str]) -> EventPlan:
    return EventPlan(_pick(src, TYPES), _subset(src, pool, 0, 3))


def _query_for(src: Source, events: Sequence[EventPlan], pool: Sequence[str]) -> QuerySpec:
    """A condition's query: mostly about the batch's own first event (the DCB decision pattern:
    "no other X for this entity"), sometimes arbitrary, rarely everything."""
    if src.chance(0.05):
        return ()
    items = []
    for _ in range(src.integer(1, 2)):
        if events and not src.chance(0.3):
            first = events[src.integer(0, len(events) - 1)]
            types = () if src.chance(0.3) else (first.type,)
            tags = _subset(src, first.tags, 0 if types else 1, 2) if first.tags else ()
            if not types and not tags:
                types = (first.type,)
        else:
            types = _subset(src, TYPES, 0, 2)
            tags = _subset(src, pool, 0 if types else 1, 2)
        items.append((types, tags))
    return tuple(items)


def _op(src: Source, limits: Limits, pool: Sequence[str], index: int, prior_writes: list[int]) -> OpPlan:
    roll = src.integer(0, 99)
    if prior_writes and roll >= 88:
        return OpPlan("retry", retry_of=_pick(src, prior_writes))
    if roll >= 80:
        events: tuple[EventPlan, ...] = ()
        start = src.integer(1, 40) if src.chance(0.3) else None
        return OpPlan("read", query=_query_for(src, events, pool), start=start, backwards=src.chance(0.25))
    big = src.chance(0.15)
    size = src.integer(1, limits.max_batch) if big else src.integer(1, min(3, limits.max_batch))
    events = tuple(_event(src, pool) for _ in range(size))
    kill_at = src.integer(1, limits.max_kill_at) if limits.kill_chance and src.chance(limits.kill_chance) else None
    if roll < 30:
        return OpPlan("append", events, kill_at=kill_at)
    return OpPlan("conditional", events, _query_for(src, events, pool), after_read=not src.chance(0.15),
                  skip_if_found=src.chance(0.4), kill_at=kill_at,
                  think_us=src.integer(0, 3000) if src.chance(0.5) else 0)


def build_workload(src: Source, limits: Limits = Limits(), durable: bool = False, run: str | None = None) -> Workload:
    """Draw a whole workload from ``src``."""
    workers = []
    for w in range(src.integer(limits.min_workers, limits.max_workers)):
        pool = SHARED_TAGS + tuple(f"w{w}:{k}" for k in range(OWN_TAGS))
        ops: list[OpPlan] = []
        writes: list[int] = []
        for i in range(src.integer(limits.min_ops, limits.max_ops)):
            op = _op(src, limits, pool, i, writes)
            if op.kind in ("append", "conditional"):
                writes.append(i)
            ops.append(op)
        workers.append(tuple(ops))
    small = limits.small_segments > 0 and src.chance(limits.small_segments)
    return Workload(tuple(workers), run or os.urandom(4).hex(), durable, SMALL_SEGMENT if small else None)


class RandomSource:
    """A :class:`Source` over :class:`random.Random` (seeded: the torture command's replays)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        """Uniform in ``[lo, hi]``."""
        return self.rng.randint(lo, hi)

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return self.rng.random() < p


def generate(seed: int, limits: Limits = Limits(), durable: bool = False) -> Workload:
    """A workload drawn from ``seed`` alone (the same seed gives the same workload, run id too)."""
    rng = random.Random(seed)
    return build_workload(RandomSource(rng), limits, durable, run=f"{rng.getrandbits(32):08x}")


def workloads(limits: Limits = Limits(), durable: bool = False) -> Any:
    """A Hypothesis strategy of :class:`Workload` (imports Hypothesis, a test dependency)."""
    from hypothesis import strategies as st

    class _Drawn:
        def __init__(self, draw: Any) -> None:
            self.draw = draw

        def integer(self, lo: int, hi: int) -> int:
            return int(self.draw(st.integers(lo, hi)))

        def chance(self, p: float) -> bool:
            # A draw that shrinks to 0, i.e. to "no": failing workloads shrink to plain ones.
            return bool(self.draw(st.integers(0, 999)) >= round(1000 * (1 - p)))

    @st.composite
    def _workload(draw: Any) -> Workload:
        return build_workload(_Drawn(draw), limits, durable)

    return _workload()
