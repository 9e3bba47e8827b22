"""A simulated, obviously correct store running a workload: the checker's reference of "no
violation". Operations take effect one at a time at increasing instants; each call's recorded
interval is widened at random around its instant, so calls overlap as they would in real runs."""

from __future__ import annotations

import random
from typing import Any

from kroniko_ops.harness.checker import LogEntry
from kroniko_ops.harness.history import COMMITTED, REJECTED, UNKNOWN, History, OpRecord, ReadRecord, read_digest
from kroniko_ops.harness.workload import Workload, to_query

STEP = 100


def simulate(workload: Workload, rng: random.Random) -> tuple[History, list[LogEntry]]:
    """Run ``workload`` on the simulated store; return its history and final log."""
    log: list[LogEntry] = []
    history = History()
    clock = [0]
    pending = {w: 0 for w in range(len(workload.workers))}
    calls: dict[tuple[int, int], tuple[Any, int | None]] = {}
    reads: dict[tuple[int, int], int] = {}
    done: dict[int, int] = {}  # when each worker's last read completed: its next call starts after

    def interval() -> tuple[int, int]:
        clock[0] += STEP
        return clock[0] - rng.randint(0, STEP * 2 // 3), clock[0] + rng.randint(0, STEP * 2 // 3)

    def matches_after(query: Any, after: int) -> list[int]:
        return [e.position for e in log if e.position > after and query.matches(e.type, e.tags)]

    while pending:
        w = rng.choice(sorted(pending))
        i = pending[w]
        ops = workload.workers[w]
        if i >= len(ops):
            del pending[w]
            continue
        op = ops[i]
        if op.kind in ("read", "conditional") and (w, i) not in reads:
            spec = op.query or ()
            found = matches_after(to_query(spec), 0)
            if op.start is not None:
                found = [p for p in found if (p <= op.start if op.backwards else p >= op.start)]
            if op.backwards:
                found.reverse()
            inv, comp = interval()
            history.reads.append(ReadRecord(w, i, inv, comp, len(log), len(found), spec, op.start, op.backwards,
                                            read_digest((p, b"") for p in found), True, tuple(found)))
            reads[(w, i)] = len(log)
            done[w] = comp
            if op.kind == "read" or (op.skip_if_found and found):
                pending[w] += 1
            continue  # a conditional appends at a later step, as a real worker decides after reading
        if op.kind == "retry":
            if (w, op.retry_of) not in calls:
                pending[w] += 1
                continue
            spec, after = calls[(w, op.retry_of)]
        else:
            spec = op.query if op.kind == "conditional" else None
            after = reads[(w, i)] if op.kind == "conditional" and op.after_read else None
            calls[(w, i)] = (spec, after)
        ids, plans = workload.event_ids(w, i), workload.batch(w, i)
        inv, comp = interval()
        inv = max(inv, done.get(w, inv))
        rec = OpRecord(w, i, op.kind, ids, plans, conditional=spec is not None, query=spec, after=after,
                       invoke=inv, complete=comp, retry_of=op.retry_of)
        history.ops.append(rec)
        where = {e.id: e.position for e in log}
        conflicts = matches_after(to_query(spec), after or 0) if spec is not None else []
        if all(eid in where for eid in ids):
            rec.outcome, rec.position = COMMITTED, where[ids[-1]]
        elif conflicts:
            rec.outcome, rec.conflict = REJECTED, conflicts[0]
        else:
            for k, (eid, plan) in enumerate(zip(ids, plans, strict=True)):
                log.append(LogEntry(len(log) + 1, eid, plan.type, plan.tags, commit=k == len(ids) - 1))
            rec.outcome, rec.position = COMMITTED, len(log)
        if op.kill_at and rng.random() < 0.5:
            # The worker dies in this call: the outcome is unknown, whatever took effect stays.
            rec.outcome, rec.complete, rec.position, rec.conflict = UNKNOWN, None, None, None
            history.deaths[w] = comp + STEP
            del pending[w]
            continue
        pending[w] += 1
    return history, log
