"""Concurrent writers in several processes, and writers SIGKILLed mid-append, on a real server."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

from kroniko_ops.errors import AppendConditionFailed
from kroniko_ops.format.record import GENESIS, chain_of
from kroniko_ops.model import AppendCondition, Event, Query, QueryItem
from kroniko_ops.postgres import PostgresEventStore

REAP = 120.0  # seconds a child may take before the test fails (a hang guard, not a timing assertion)
COUNTER = Query([QueryItem(tags=["counter"])])


def _increment(url: str, worker: int, n: int, acks: mp.Queue) -> None:  # type: ignore[type-arg]
    """Read the counter, append counter+1 under a condition; retry on conflict."""
    with PostgresEventStore(url) as store:
        done = 0
        while done < n:
            # The value and the condition's "after" must come from one read: a head taken by a
            # second read could include a rival's increment the value does not (a lost update).
            result = store.read(COUNTER, backwards=True, limit=1)
            events = list(result)
            value = events[0].data["value"] if events else 0
            try:
                pos = store.append([Event("Inc", {"value": value + 1}, ["counter"]),
                                    Event("Note", {"w": worker}, [f"w{worker}"])],
                                   AppendCondition(COUNTER, after=result.head))
            except AppendConditionFailed:
                continue
            acks.put((worker, pos))
            done += 1


def _writer(url: str, worker: int, acks: mp.Queue) -> None:  # type: ignore[type-arg]
    """Append batches forever, reporting each acknowledged position (until killed)."""
    with PostgresEventStore(url) as store:
        for i in range(10**6):
            pos = store.append([Event("K", {"i": i, "k": k}, [f"k{worker}"], None, f"w{worker}-{i}-{k}")
                                for k in range(20)])
            acks.put((f"w{worker}-{i}-19", pos))


def _chain_ok(store: PostgresEventStore) -> int:
    chain, n = GENESIS, 0
    for row in store.rows(1, store.head()):
        n += 1
        assert row.position == n
        chain = chain_of(chain, row.event_hash)
        assert chain == row.chain
    assert (n, chain) == store.head_chain()
    return n


def test_concurrent_conditional_increments_keep_the_counter(pg_url: str) -> None:
    ctx = mp.get_context("spawn")
    acks = ctx.Queue()
    procs = [ctx.Process(target=_increment, args=(pg_url, w, 8, acks)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(REAP)
        assert p.exitcode == 0, f"worker exit {p.exitcode}"
    got = [acks.get(timeout=5) for _ in range(32)]
    with PostgresEventStore(pg_url) as store:
        values = [e.data["value"] for e in store.read(COUNTER)]
        assert values == list(range(1, 33)), "a lost update or a duplicate counter value"
        assert sorted(p for _, p in got) == list(range(2, 65, 2))
        assert _chain_ok(store) == 64


def test_killed_writers_leave_a_gap_free_chained_log(pg_url: str) -> None:
    ctx = mp.get_context("spawn")
    acks = ctx.Queue()
    PostgresEventStore(pg_url).close()  # the schema exists before the writers race
    procs = [ctx.Process(target=_writer, args=(pg_url, w, acks)) for w in range(3)]
    for p in procs:
        p.start()
    seen = [acks.get(timeout=REAP) for _ in range(12)]  # they are appending
    for p in procs:
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.join(REAP)
        assert p.exitcode == -signal.SIGKILL
    while not acks.empty():
        seen.append(acks.get(timeout=5))
    with PostgresEventStore(pg_url) as store:
        head = _chain_ok(store)
        assert head % 20 == 0, "a batch was cut short"
        ids = {e.id: e.position for e in store.read()}
        for eid, pos in seen:
            assert ids.get(eid) == pos, f"acknowledged {eid} at {pos} is missing"
        # The store goes on after the kills.
        assert store.append(Event("After", 1)) == head + 1


def test_an_append_whose_writer_died_before_its_flush_becomes_visible(pg_url: str, monkeypatch) -> None:
    """A writer killed between its commit and its synchronous flush: readers make it durable and
    show it (as the file store's sync_idle does for a writer that died before its fsync)."""
    with PostgresEventStore(pg_url) as writer, PostgresEventStore(pg_url) as reader:
        writer.append(Event("A", 1))
        monkeypatch.setattr(writer, "_sync", lambda position: None)  # dies right after COMMIT
        assert writer.append(Event("B", 2, ["b"])) == 2
        result = reader.read(Query([QueryItem(tags=["b"])]))
        assert result.head == 2 and [e.position for e in result] == [2]
