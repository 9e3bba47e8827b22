"""Worker functions the multi-process tests start with the ``spawn`` method (module-level, so
that a fresh interpreter can import them)."""

from __future__ import annotations

import traceback
from typing import Any

from kroniko_ops import AppendCondition, AppendConditionFailed, Event, EventStore, Query, QueryItem

BARRIER_TIMEOUT = 60.0


def append_batches(path: str, worker: int, sizes: list[int], barrier: Any, results: Any) -> None:
    """Append unconditional batches of ``sizes``; report ``(worker, [(ids, last position)])``."""
    try:
        out = []
        with EventStore(path, lock_timeout=60.0) as store:
            barrier.wait(BARRIER_TIMEOUT)
            for b, size in enumerate(sizes):
                ids = [f"w{worker}-b{b}-e{i}" for i in range(size)]
                last = store.append([Event("Work", {"w": worker, "b": b, "i": i}, [f"w:{worker}"], None, eid)
                                     for i, eid in enumerate(ids)])
                out.append((ids, last))
        results.put((worker, out))
    except BaseException:
        results.put((worker, traceback.format_exc()))
        raise


def race_first_event(path: str, worker: int, rounds: int, barrier: Any, results: Any) -> None:
    """Each round, every worker tries to append "the first event for cart R", deciding on a read
    and appending on its head; even workers condition on type+tag, odd ones on the tag alone.

    Reports ``(worker, [(round, outcome, position)])`` with outcome ``won``, ``conflict`` (the
    condition failed at ``position``) or ``declined`` (the read already showed the cart).
    """
    try:
        out = []
        with EventStore(path, lock_timeout=60.0) as store:
            for r in range(rounds):
                tag = f"cart:{r}"
                item = QueryItem(types=["CartCreated"], tags=[tag]) if worker % 2 == 0 else QueryItem(tags=[tag])
                query = Query([item])
                barrier.wait(BARRIER_TIMEOUT)
                seen = store.read(query)
                if list(seen):
                    out.append((r, "declined", None))
                    continue
                try:
                    pos = store.append(Event("CartCreated", {"by": worker}, [tag, f"by:{worker}"]),
                                       AppendCondition(query, after=seen.head))
                    out.append((r, "won", pos))
                except AppendConditionFailed as exc:
                    out.append((r, "conflict", exc.position))
        results.put((worker, out))
    except BaseException:
        results.put((worker, traceback.format_exc()))
        raise


def open_new_and_append(path: str, worker: int, barrier: Any, results: Any) -> None:
    """Open a store that does not exist yet, all workers at once, and append one event."""
    try:
        barrier.wait(BARRIER_TIMEOUT)
        with EventStore(path, lock_timeout=60.0) as store:
            results.put((worker, store.append(Event("Opened", {"w": worker}))))
    except BaseException:
        results.put((worker, traceback.format_exc()))
        raise
