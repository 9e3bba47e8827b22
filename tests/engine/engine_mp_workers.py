"""Worker functions the multi-process engine tests start with the ``spawn`` method (module-level,
so that a fresh interpreter can import them). Each reports ``(worker, result)`` on ``results``,
or ``(worker, traceback text)`` when it failed."""

from __future__ import annotations

import os
import resource
import time
import traceback
from typing import Any

from kroniko_ops import AppendCondition, AppendConditionFailed, Event, EventStore, Query, QueryItem

BARRIER_TIMEOUT = 60.0


def append_batches(path: str, worker: int, sizes: list[int], barrier: Any, results: Any) -> None:
    """Append unconditional batches of ``sizes``; report ``[(ids, last position)]``."""
    try:
        out = []
        with EventStore(path, lock_timeout=60.0, segment_bytes=4096) as store:
            barrier.wait(BARRIER_TIMEOUT)
            for b, size in enumerate(sizes):
                ids = [f"w{worker}-b{b}-e{i}" for i in range(size)]
                last = store.append([Event("Work", {"w": worker, "b": b, "i": i, "pad": "p" * 100}, [f"w:{worker}"],
                                           None, eid) for i, eid in enumerate(ids)])
                out.append((ids, last))
        results.put((worker, out))
    except BaseException:
        results.put((worker, traceback.format_exc()))
        raise


def race_first_event(path: str, worker: int, rounds: int, barrier: Any, results: Any) -> None:
    """Each round, every worker tries to append "the first event for cart R", deciding on a read
    and appending on its head; even workers condition on type+tag, odd ones on the tag alone.
    Reports ``[(round, outcome, position)]``: ``won``, ``conflict`` or ``declined``."""
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


def bounded_counter(path: str, worker: int, limit: int, barrier: Any, results: Any) -> None:
    """Keep trying "read how many seats are taken, take one if fewer than ``limit``", retrying
    on a conflict, until the read shows the limit reached. Reports ``(seats won, conflicts)``."""
    try:
        query = Query([QueryItem(types=["SeatTaken"], tags=["show:1"])])
        won = conflicts = 0
        with EventStore(path, lock_timeout=60.0) as store:
            barrier.wait(BARRIER_TIMEOUT)
            while True:
                seen = store.read(query)
                if len(list(seen)) >= limit:
                    break
                try:
                    store.append([Event("SeatTaken", {"by": worker}, ["show:1", f"by:{worker}"]),
                                  Event("Noise", {"by": worker}, ["noise"])],
                                 AppendCondition(query, after=seen.head))
                    won += 1
                except AppendConditionFailed:
                    conflicts += 1
        results.put((worker, (won, conflicts)))
    except BaseException:
        results.put((worker, traceback.format_exc()))
        raise


def watch_heads(path: str, worker: int, until: int, barrier: Any, results: Any) -> None:
    """Read the head (and a full read's last position) until it reaches ``until``; report the
    heads seen, in order, and whether each read ended exactly at its head."""
    try:
        heads: list[int] = []
        exact = True
        with EventStore(path) as store:
            barrier.wait(BARRIER_TIMEOUT)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                head = store.head()
                heads.append(head)
                result = store.read(start=max(1, head - 5))
                got = [e.position for e in result]
                exact = exact and (got[-1] if got else 0) == result.head and result.head >= head
                if head >= until:
                    break
        results.put((worker, (heads, exact)))
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


def append_and_die(path: str, batches: int, results: Any) -> None:
    """Append ``batches`` batches of three, report the head, then die without closing the store
    (its records past the index checkpoint stay unindexed)."""
    try:
        store = EventStore(path)
        for b in range(batches):
            store.append([Event("Died", {"b": b, "i": i}, [f"b:{b}", "died"]) for i in range(3)])
        results.put(store.head())
    except BaseException:
        results.put(traceback.format_exc())
    results.close()
    results.join_thread()  # the report must leave before the process dies without cleanup
    os._exit(0)


def big_batch_low_limits(path: str, n: int, results: Any) -> None:
    """With 64 file descriptors, append one batch of ``n`` small events and read it all back;
    report ``(last position, events read, events of one tag, peak RSS growth in bytes)``."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        with EventStore(path, durable=False) as store:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            last = store.append(Event("Tiny", i, [f"t:{i % 100}"]) for i in range(n))
            count = sum(1 for _ in store.read())
            tagged = sum(1 for _ in store.read(Query([QueryItem(tags=["t:7"])])))
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
        results.put((last, count, tagged, grown))
    except BaseException:
        results.put(traceback.format_exc())


def count_under_low_limits(path: str, results: Any) -> None:
    """With 64 file descriptors, read the whole store forwards, backwards and by type; report
    the three counts."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        with EventStore(path, durable=False) as store:
            q = Query([QueryItem(types=["A", "B", "C", "Huge"])])
            results.put((sum(1 for _ in store.read()), sum(1 for _ in store.read(backwards=True)),
                         sum(1 for _ in store.read(q))))
    except BaseException:
        results.put(traceback.format_exc())
