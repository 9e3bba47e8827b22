"""The seed's race: N processes, R rounds; each round every process tries to append "the first
ItemAdded for cart X" after reading, with conditions that overlap but differ. Exactly one may win.

Process ``k`` guards its append with one of three queries, by ``k % 3``:

- type and tag: ``ItemAdded`` events tagged ``cart:X``;
- tag only: any event tagged ``cart:X``;
- two items: ``ItemAdded`` tagged ``cart:X``, or ``CartCheckedOut`` tagged ``cart:X``.

Every candidate event (``ItemAdded`` tagged ``cart:X`` and ``item:k``) matches all three, so
whichever commits first makes every other append of the round fail its condition, and a process
that reads after the winner committed sees it and does not try. All processes wait at a barrier
before each round, so they really race; in even rounds they also wait after reading, so that
every process appends and all but one are rejected.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

from ..errors import AppendConditionFailed
from ..model import Event
from ..store import EventStore
from . import history as hist
from .mutants import STORES
from .workload import EventPlan, QuerySpec, condition_for, to_query

ROUND_TIMEOUT = 60.0


def queries(cart: str) -> list[QuerySpec]:
    """The three overlapping conditions of the race, for one cart."""
    return [
        ((("ItemAdded",), (cart,)),),
        (((), (cart,)),),
        ((("ItemAdded",), (cart,)), (("CartCheckedOut",), (cart,))),
    ]


def racer(path: str, k: int, rounds: int, durable: bool, history: str, barrier: Any, mutant: str | None = None) -> None:
    """One racing process: each round, wait at the barrier, read, decide, append conditionally.
    ``mutant`` names a broken engine of :mod:`.mutants` to race with instead of the real one."""
    rec = hist.Recorder(history)
    engine = EventStore if mutant is None else STORES[mutant]
    with engine(path, durable=durable, create=False) as store:
        for r in range(rounds):
            cart = f"cart:{r}"
            spec = queries(cart)[k % 3]
            barrier.wait(ROUND_TIMEOUT)
            t0 = time.monotonic_ns()
            result = store.read(to_query(spec))
            events = list(result)
            t1 = time.monotonic_ns()
            seen = [e for e in events if e.type == "ItemAdded"]
            positions = [e.position for e in events]
            rec.record(i=r, ev="read", t0=t0, t1=t1, head=result.head, found=len(events), query=spec,
                       digest=hist.read_digest((e.position, hist.body_hash(e.event)) for e in events),
                       ordered=positions == sorted(set(positions)), positions=positions)
            if r % 2 == 0:
                # Even rounds: everybody has read before anybody appends, so all 8 append and
                # all but one must be rejected. Odd rounds race freely (late readers see the winner).
                barrier.wait(ROUND_TIMEOUT)
            if seen:  # the decision: somebody already added the first item of this cart
                rec.record(i=r, ev="skip")
                continue
            eid = f"race.{r}.{k}"
            t = time.monotonic_ns()
            rec.record(i=r, ev="invoke", t=t, conditional=True, after=result.head)
            try:
                pos = store.append(Event("ItemAdded", {"op": eid}, (cart, f"item:{k}"), id=eid),
                                   condition_for(spec, result.head))
                out: dict[str, Any] = {"outcome": hist.COMMITTED, "pos": pos}
            except AppendConditionFailed as exc:
                out = {"outcome": hist.REJECTED, "conflict": exc.position}
            rec.record(i=r, ev="done", t=time.monotonic_ns(), **out)
    rec.close()


@dataclass
class RaceResult:
    """The race's history and the winners of each round (ids of the committed appends)."""

    history: hist.History
    winners: list[list[str]]
    rejected: int
    skipped: int


def run_race(path: str, ctx: BaseContext, processes: int = 8, rounds: int = 20, durable: bool = False,
             timeout: float = 120.0, mutant: str | None = None) -> RaceResult:
    """Run the race against the (existing) store at ``path``; every child is reaped."""
    with tempfile.TemporaryDirectory(prefix="kroniko-race-") as tmp:
        files = [os.path.join(tmp, f"racer-{k}.jsonl") for k in range(processes)]
        barrier = ctx.Barrier(processes)
        procs = [ctx.Process(target=racer, args=(path, k, rounds, durable, files[k], barrier, mutant),
                             daemon=True)
                 for k in range(processes)]
        try:
            for p in procs:
                p.start()
            deadline = time.monotonic() + timeout
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                p.join(5)
        codes = [p.exitcode for p in procs]
        if any(c != 0 for c in codes):
            raise RuntimeError(f"racers failed or hung: exit codes {codes}")
        history = hist.History()
        skipped = 0
        for k, f in enumerate(files):
            records = hist.read_records(f)
            skipped += sum(rec["ev"] == "skip" for rec in records)
            history.extend(_racer_history(k, records))
    winners = [[op.ids[0] for op in history.ops if op.index == r and op.outcome == hist.COMMITTED]
               for r in range(rounds)]
    return RaceResult(history, winners, history.count(hist.REJECTED), skipped)


def _racer_history(k: int, records: list[dict[str, Any]]) -> hist.History:
    out = hist.History()
    open_ops: dict[int, hist.OpRecord] = {}
    for rec in records:
        r = rec["i"]
        cart = f"cart:{r}"
        if rec["ev"] == "read":
            out.reads.append(hist.read_record(k, rec))
        elif rec["ev"] == "invoke":
            op = hist.OpRecord(k, r, "conditional", (f"race.{r}.{k}",), (EventPlan("ItemAdded", (cart, f"item:{k}")),),
                               conditional=True, query=queries(cart)[k % 3], after=rec["after"], invoke=rec["t"])
            open_ops[r] = op
            out.ops.append(op)
        elif rec["ev"] == "done":
            op = open_ops.pop(r)
            op.complete, op.outcome = rec["t"], rec["outcome"]
            op.position, op.conflict = rec.get("pos"), rec.get("conflict")
    return out
