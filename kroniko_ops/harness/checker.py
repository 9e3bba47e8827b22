"""The checker: the properties of ``docs/HARNESS.md`` over a recorded history and the final log.

One pass over the log in position order decides everything (the log already orders every
commit), so the cost is linear in the log plus the history (plus a sort of the operations by
the position they are judged at, and a constant per distinct type-and-tags combination). Each
:class:`Violation` names the property, says what is wrong in one sentence and lists the
operations involved, printed the way a shrunk Hypothesis example reads.

Operations are grouped by their batch of explicit ids: an idempotent retry repeats its
target's ids, so the target and its retries are one *batch* that is in the log once or not at
all. A batch's commit happened no earlier than the first invoke of a call that could have
written it and no later than the first acknowledgement of it (a batch only killed calls tried
has no upper bound: a dead writer's whole batch is synced and made visible by the next writer).

Reads (what each returned, the head it answered for) and the ``after`` of each condition are
judged by :mod:`.reads` against a :class:`~.logsummary.Prior` summary of the log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .history import COMMITTED, ERROR, REJECTED, UNKNOWN, History, OpRecord, ReadRecord, query_text
from .logsummary import LogEntry, Prior, matches
from .reads import check_afters, check_heads, check_reads
from .workload import QuerySpec

INF = math.inf
__all__ = ["LogEntry", "Prior", "Violation", "check", "matches"]


@dataclass
class Violation:
    """One broken property with the operations (and reads) that show it."""

    prop: int
    code: str
    message: str
    ops: list[OpRecord] = field(default_factory=list)
    reads: list[ReadRecord] = field(default_factory=list)

    def render(self, t0: int = 0) -> str:
        """The violation and its operations, one per line."""
        lines = [f"property {self.prop} ({self.code}): {self.message}"]
        lines += ["    " + op.describe(t0) for op in self.ops]
        lines += ["    " + r.describe(t0) for r in self.reads]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


@dataclass
class _Batch:
    ids: tuple[str, ...]
    ops: list[OpRecord]
    first: int | None = None  # first position in the log, when present
    lo: float = INF  # earliest possible commit time
    hi: float = INF  # latest possible commit time

    @property
    def last(self) -> int | None:
        return None if self.first is None else self.first + len(self.ids) - 1


def check(history: History, log: Sequence[LogEntry], base: int = 0, prior: Prior | None = None) -> list[Violation]:
    """Properties 1-5 and 7 (reads) of ``docs/HARNESS.md`` for a run that started at head ``base``.

    ``log`` is every entry after ``base``, in order; ``prior`` summarises positions ``1..base``.
    Returns the violations found (empty when the run is correct), at most a few per code so a
    broken store does not flood the report.
    """
    prior = prior or Prior()
    out: list[Violation] = []

    def report(prop: int, code: str, message: str, ops: list[OpRecord], reads: list[ReadRecord]) -> None:
        out.append(Violation(prop, code, message, ops, reads))

    by_pos = _positions(log, base, out)
    batches, owner = _batches(history)
    _presence(history, log, by_pos, batches, owner, out)
    _conditions(history, log, base, prior, batches, owner, out)
    check_afters(history, report)
    check_heads(history, report)
    _real_time(history, batches, out)
    local = Prior()
    local.advance(log)
    check_reads(history, (prior, local), base + len(log), report)
    return _cap(out)


def _cap(found: list[Violation], per_code: int = 5) -> list[Violation]:
    seen: dict[str, int] = {}
    kept = []
    for v in found:
        seen[v.code] = seen.get(v.code, 0) + 1
        if seen[v.code] <= per_code:
            kept.append(v)
    return kept


# -- property 1 ----------------------------------------------------------------------------------


def _positions(log: Sequence[LogEntry], base: int, out: list[Violation]) -> dict[str, list[int]]:
    """Positions are exactly base+1..head; returns where each id sits."""
    for k, e in enumerate(log):
        want = base + k + 1
        if e.position != want:
            code = "duplicate-position" if e.position < want else "position-gap"
            out.append(Violation(1, code, f"the log's entry #{k + 1} after {base} has position {e.position}, "
                                          f"expected {want} (positions must be exactly 1..head)"))
            break
    by_id: dict[str, list[int]] = {}
    for e in log:
        by_id.setdefault(e.id, []).append(e.position)
    return by_id


# -- property 2 ----------------------------------------------------------------------------------


def _batches(history: History) -> tuple[dict[tuple[str, ...], _Batch], dict[str, _Batch]]:
    batches: dict[tuple[str, ...], _Batch] = {}
    for op in history.ops:
        batches.setdefault(op.ids, _Batch(op.ids, [])).ops.append(op)
    owner = {eid: b for b in batches.values() for eid in b.ids}
    return batches, owner


def _end(op: OpRecord, history: History) -> float:
    if op.complete is not None:
        return op.complete
    return history.deaths.get(op.worker, INF)


def _presence(history: History, log: Sequence[LogEntry], by_pos: dict[str, list[int]],
              batches: dict[tuple[str, ...], _Batch], owner: dict[str, _Batch], out: list[Violation]) -> None:
    for eid, where in by_pos.items():
        if len(where) > 1:
            b = owner.get(eid)
            out.append(Violation(2, "duplicate-event", f"event {eid} is in the log {len(where)} times, at "
                                 f"{where} (an event must be present once)", b.ops if b else []))
    entries = {e.position: e for e in log}
    for e in log:
        if e.id not in owner:
            out.append(Violation(2, "unexplained-event", f"position {e.position} holds event {e.id} "
                                 f"({e.type}), which no operation of the run appended"))
    for b in batches.values():
        found = [by_pos.get(eid, [None])[0] for eid in b.ids]
        acked = [op for op in b.ops if op.outcome == COMMITTED]
        writers = [op for op in b.ops if op.outcome in (COMMITTED, UNKNOWN)]
        present = [p for p in found if p is not None]
        if present:
            b.lo = min((op.invoke for op in writers), default=INF)
            # A batch no call acknowledged has no latest commit time: a writer killed after its
            # write() leaves a whole batch that becomes visible only when the next writer (or
            # recover) syncs it, however long after the death.
            b.hi = min(_end(op, history) for op in acked) if acked else INF
        if present and len(present) != len(found):
            missing = [eid for eid, p in zip(b.ids, found, strict=True) if p is None]
            out.append(Violation(2, "partial-batch", f"batch of {len(b.ids)} is only partly in the log: "
                                 f"{len(present)} present, missing {missing[:3]}", b.ops))
            continue
        if present:
            first = present[0]
            if present != list(range(first, first + len(present))):
                out.append(Violation(2, "split-batch", f"batch of {len(b.ids)} is not contiguous or not in "
                                     f"order: positions {present}", b.ops))
                continue
            for eid, plan, p in zip(b.ids, b.ops[0].events, present, strict=True):
                e = entries[p]
                if e.type != plan.type or tuple(e.tags) != tuple(plan.tags):
                    out.append(Violation(2, "wrong-content", f"position {p} ({eid}) holds {e.type} {list(e.tags)}, "
                                         f"but {plan.type} {list(plan.tags)} was appended", b.ops))
            b.first = first
            if not writers:
                out.append(Violation(2, "rejected-present", f"batch at {first}..{b.last} is in the log, but every "
                                     "call that tried to append it was rejected or failed", b.ops))
            for op in acked:
                if op.position != b.last:
                    out.append(Violation(2, "wrong-position", f"{op.name} was acknowledged with position "
                                         f"{op.position}, but its batch is at {first}..{b.last}", [op]))
            for op in b.ops:
                others = [w for w in writers if w is not op]
                if op.outcome == REJECTED and others and all(_end(w, history) < op.invoke for w in others):
                    out.append(Violation(2, "retry-rejected", f"{op.name} was rejected, but its batch was "
                                         f"already committed at {first}..{b.last} before it started (an "
                                         "idempotent retry must return the existing position)", b.ops))
        elif acked:
            out.append(Violation(2, "lost-ack", f"{acked[0].name} was acknowledged at position "
                                 f"{acked[0].position}, but its events are not in the log", b.ops))
    for op in history.ops:
        if op.outcome == ERROR:
            out.append(Violation(2, "unexpected-error", f"{op.name} failed: {op.error}", [op]))
    for worker, error in history.errors:
        out.append(Violation(2, "worker-error", f"worker {worker} stopped: {error}"))


# -- properties 3 and 4 ----------------------------------------------------------------------------


def _last_match(spec: QuerySpec, last: dict[tuple[str, frozenset[str]], int]) -> int:
    return max((p for (t, tags), p in last.items() if matches(spec, t, tags)), default=0)


def _conditions(history: History, log: Sequence[LogEntry], base: int, prior: Prior,
                batches: dict[tuple[str, ...], _Batch], owner: dict[str, _Batch], out: list[Violation]) -> None:
    """Replay the log once; at each probe position ask for the last match of a query below it."""
    probes: list[tuple[int, int, OpRecord | _Batch]] = []  # (position, kind 0=commit 1=reject, subject)
    head = base + len(log)
    for b in batches.values():
        op = b.ops[0]
        if b.first is not None and op.conditional:
            probes.append((b.first, 0, b))
    for op in history.ops:
        if op.outcome != REJECTED:
            continue
        c, after = op.conflict, op.after or 0
        if c is None or c <= after or c > head:
            why = "names no position" if c is None else (
                f"names position {c}, not after {after}" if c <= after else f"names position {c} past the head {head}")
            out.append(Violation(4, "unexplained-rejection", f"{op.name} was rejected, but its conflict {why}", [op]))
            continue
        probes.append((c, 1, op))
    probes.sort(key=lambda p: (p[0], p[1]))
    last = dict(prior.last)
    entries = {e.position: e for e in log}
    k = 0
    for position, kind, subject in probes:
        # Fold the log into ``last`` up to (not including) the probe position.
        while k < len(log) and log[k].position < position:
            e = log[k]
            last[(e.type, frozenset(e.tags))] = e.position
            k += 1
        if kind == 0:
            assert isinstance(subject, _Batch)
            op = subject.ops[0]
            m = _last_match(op.query or (), last)
            if m > (op.after or 0):
                cause = owner.get(entries[m].id) if m in entries else None
                out.append(Violation(3, "condition-violated", f"batch at {subject.first}..{subject.last} committed "
                                     f"although position {m} matches {query_text(op.query or ())} after "
                                     f"{op.after or 0}", subject.ops + (cause.ops if cause else [])))
        else:
            assert isinstance(subject, OpRecord)
            _rejection(subject, position, last if position > base else None, entries, prior, owner, out)


def _rejection(op: OpRecord, c: int, last: dict[tuple[str, frozenset[str]], int] | None, entries: dict[int, LogEntry],
               prior: Prior, owner: dict[str, _Batch], out: list[Violation]) -> None:
    e = entries.get(c) or prior.entry_at(c)
    spec = op.query or ()
    if e is None or not matches(spec, e.type, e.tags):
        what = "is unknown" if e is None else f"is {e.type} {list(e.tags)}"
        cause = owner.get(e.id) if e else None
        out.append(Violation(4, "unexplained-rejection", f"{op.name} was rejected citing position {c}, which "
                             f"{what} and does not match {query_text(spec)}", [op] + (cause.ops if cause else [])))
        return
    # Whether ``c`` is the *first* match is known from the replay only for positions of this run;
    # ``prior`` summarises earlier ones as of the run's start, not as of ``c``.
    earlier = _last_match(spec, last) if last is not None else 0
    if earlier > (op.after or 0):
        out.append(Violation(4, "wrong-conflict", f"{op.name} was rejected citing position {c}, but {earlier} "
                             f"matches too and comes first", [op]))
    cause = owner.get(e.id)
    if cause is not None and op.complete is not None and cause.lo > op.complete:
        out.append(Violation(4, "rejection-before-cause", f"{op.name} was rejected citing position {c}, but "
                             "the call that wrote it started only after the rejection", [op, *cause.ops]))


# -- property 5 --------------------------------------------------------------------------------------


def _real_time(history: History, batches: dict[tuple[str, ...], _Batch], out: list[Violation]) -> None:
    """A completed before B started => A's positions are lower; a read started after A completed
    sees A. One scan in position order, one sweep over reads in time order."""
    present = sorted((b for b in batches.values() if b.first is not None), key=lambda b: b.first or 0)
    best: _Batch | None = None
    for b in present:
        if best is not None and b.hi < best.lo:
            out.append(Violation(5, "real-time-order", f"batch at {b.first}..{b.last} was acknowledged before "
                                 f"the batch at {best.first}..{best.last} was even invoked, yet got the higher "
                                 "position", b.ops + best.ops))
        if best is None or b.lo > best.lo:
            best = b
    by_end = sorted(present, key=lambda b: b.hi)
    reads = sorted(history.reads, key=lambda r: r.invoke)
    k, seen, seen_batch = 0, 0, None
    for r in reads:
        while k < len(by_end) and by_end[k].hi < r.invoke:
            if (by_end[k].last or 0) > seen:
                seen, seen_batch = by_end[k].last or 0, by_end[k]
            k += 1
        if r.head < seen and seen_batch is not None:
            out.append(Violation(5, "stale-read", f"{r.name} answered for head {r.head}, but position {seen} was "
                                 "acknowledged before the read started", seen_batch.ops, [r]))
