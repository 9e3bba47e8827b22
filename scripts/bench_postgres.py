"""The PostgreSQL group of ``scripts/bench.py`` (``--only postgres``): durable conditional appends
of one event from 1 and from PROCS processes, and of batches of BATCH events from 1, against
PostgresEventStore and the format-3 file store in the same run.

Each appender repeats: append one event or a batch tagged with one of its own entities under the
condition "no event with that tag after the position I last saw". The server is a throwaway one
(``kroniko_ops.postgres.server``: initdb in a temp folder, ``fsync=on``, loopback TCP) started for
the run, so both stores pay for durable commits on the same disk.

Not a benchmark of its own: ``scripts/bench.py`` imports it by name (its functions run in spawned
child processes, which import it the same way).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from bench_engine import BATCH, ENTITIES, PROCS, TYPE, payload

from kroniko_ops import AppendCondition, AppendConditionFailed, Event, Query, QueryItem
from kroniko_ops.postgres import open_store
from kroniko_ops.postgres import server as pgserver


def loop(store: Any, prefix: str, deadline: float, max_batches: int, batch: int) -> tuple[int, int]:
    """Conditional appends of ``batch`` events until ``deadline`` or ``max_batches``: (events
    appended, conflicts)."""
    heads: dict[str, int] = {}
    done = conflicts = n = 0
    while time.perf_counter() < deadline and n < max_batches:
        tag = f"{prefix}{n % ENTITIES}"
        query = Query([QueryItem(types=[TYPE], tags=[tag])])
        try:
            heads[tag] = store.append([Event(TYPE, payload(done + i), [tag]) for i in range(batch)],
                                      AppendCondition(query, after=heads.get(tag)))
            done += batch
        except AppendConditionFailed:
            conflicts += 1
            heads[tag] = store.read(query).head
        n += 1
    return done, conflicts


def _worker(target: str, worker: int, seconds: float, max_batches: int, batch: int, start: Any,
            results: Any) -> None:
    with open_store(target) as store:
        results.put(("ready", worker))
        start.wait(timeout=120)
        t0 = time.perf_counter()
        done, conflicts = loop(store, f"order:{worker}-", t0 + seconds, max_batches, batch)
        results.put((done, conflicts, time.perf_counter() - t0))


def run(target: str, procs: int, seconds: float, max_batches: int, batch: int = BATCH) -> float:
    """Aggregate events/s of ``procs`` spawned appenders of ``batch`` events per append on the store
    at ``target`` (a folder or a URL), from a common start."""
    open_store(target).close()  # create the store before the workers race to
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(target, w, seconds, max_batches, batch, start, results))
               for w in range(procs)]
    for p in workers:
        p.start()
    try:
        for _ in workers:
            results.get(timeout=120)  # every store open
        start.set()
        got = [results.get(timeout=seconds + 120) for _ in workers]
    finally:
        start.set()
        for p in workers:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return sum(g[0] for g in got) / max(g[2] for g in got)


class Server:
    """The run's throwaway server (durable: fsync on), one database per measured run."""

    def __init__(self) -> None:
        self.srv = pgserver.start(fsync=True)
        self.count = 0

    def new_url(self) -> str:
        """A fresh database's URL."""
        self.count += 1
        return self.srv.create_database(f"bench{self.count}")

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        self.srv.stop()


__all__ = ["BATCH", "PROCS", "Server", "run"]
