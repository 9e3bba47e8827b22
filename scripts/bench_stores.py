"""Store-level workloads for ``scripts/bench.py``: built stores (with SQLite mirrors), reads, open,
fsck in a fresh process.

Not a benchmark of its own: ``scripts/bench.py`` imports it by name (``in_child`` runs its functions
in spawned processes, which import it the same way).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import queue
import resource
import sqlite3
import statistics
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import orjson
from bench_engine import INSERT_EVENT, INSERT_TAG, TYPE, payload, sqlite_append, sqlite_open, sqlite_rows

import kroniko_ops
from kroniko_ops import AppendCondition, Event, EventStore, Query, QueryItem

HOT = 100  # events carrying the tag "hot" in every built store


def _child(results: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        results.put((True, fn(*args)))
    except BaseException as exc:
        results.put((False, "".join(traceback.format_exception(exc))))


def in_child(fn: Callable[..., Any], *args: Any, timeout: float = 3600) -> Any:
    """``fn(*args)`` in a fresh spawned process (no handle, cache or heap of ours): its result."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_child, args=(results, fn, args))
    child.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            alive = child.is_alive()  # before the get: a result sent just before exiting is still read
            try:
                ok, value = results.get(timeout=1)
                break
            except queue.Empty:
                if not alive or time.monotonic() > deadline:
                    raise RuntimeError(f"{fn.__name__} child died or hung (exit {child.exitcode})") from None
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    if not ok:
        raise RuntimeError(f"{fn.__name__} failed in its child process:\n{value}")
    return value


def _events(n: int, pool: int) -> Iterator[tuple[int, str, list[str], Any]]:
    """The i-th built event as (position, type, tags, data): tag cart:(i % pool) and, on HOT
    evenly spread events, the tag 'hot' (so pool = n gives every event its own entity)."""
    every = n // HOT
    for i in range(n):
        tags = [f"cart:{i % pool}", "hot"] if i % every == 0 else [f"cart:{i % pool}"]
        yield i + 1, TYPE, tags, payload(i)


class Fixtures:
    """Stores and SQLite mirrors of the same events, built once (fsync off) and shared by groups."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.paths: dict[str, str] = {}

    def store(self, n: int, pool: int) -> str:
        """A kroniko store of ``n`` events over ``pool`` distinct cart tags (plus 'hot')."""
        return self._get(f"store-{n}-{pool}", n, pool, self._build_store)

    def sqlite(self, n: int, pool: int) -> str:
        """A SQLite database of the same events."""
        return self._get(f"sqlite-{n}-{pool}.db", n, pool, self._build_sqlite)

    def _get(self, name: str, n: int, pool: int, build: Callable[[str, int, int], None]) -> str:
        if name not in self.paths:
            path = os.path.join(self.tmp, name)
            build(path, n, pool)
            self.paths[name] = path
        return self.paths[name]

    @staticmethod
    def _build_store(path: str, n: int, pool: int) -> None:
        with closing(EventStore(path, durable=False)) as store:
            batch: list[Event] = []
            for _, type_, tags, data in _events(n, pool):
                batch.append(Event(type_, data, tags))
                if len(batch) == 1000:
                    store.append(batch)
                    batch = []
            if batch:
                store.append(batch)

    @staticmethod
    def _build_sqlite(path: str, n: int, pool: int) -> None:
        events = _events(n, pool)
        with closing(sqlite_open(path)) as db:
            db.execute("BEGIN")
            while chunk := list(itertools.islice(events, 10_000)):
                rows, tag_rows = sqlite_rows(chunk)
                db.executemany(INSERT_EVENT, rows)
                db.executemany(INSERT_TAG, tag_rows)
            db.execute("COMMIT")


def head(path: str) -> int:
    """The store's last position."""
    with closing(EventStore(path)) as store:
        return store.head()


def timed(fn: Callable[..., Any], *args: Any) -> float:
    """Seconds taken by ``fn(*args)``."""
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def sqlite_seconds(path: str, sql: str) -> float:
    """Seconds to run ``sql`` (PRAGMA integrity_check, REINDEX) to completion on a fresh connection."""
    with closing(sqlite3.connect(path)) as db:
        t0 = time.perf_counter()
        db.execute(sql).fetchall()
        return time.perf_counter() - t0


def kroniko_read_all(path: str) -> float:
    """Events/s of ``for e in store.read()`` touching e.data, on a fresh handle (all of them, checked)."""
    with closing(EventStore(path)) as store:
        t0 = time.perf_counter()
        result = store.read()
        n = sum(1 for e in result if e.data is not None)
        seconds = time.perf_counter() - t0
    if n != result.head:
        raise RuntimeError(f"read {n:,} events from {path}, its head is {result.head:,}")
    return n / seconds


def sqlite_read_all(path: str) -> float:
    """Events/s of reading every row in order and decoding its tags and data."""
    with closing(sqlite3.connect(path)) as db:
        t0 = time.perf_counter()
        n = 0
        for _pos, _type, tags, data in db.execute("SELECT position, type, tags, data FROM events ORDER BY position"):
            orjson.loads(tags)
            orjson.loads(data)
            n += 1
        return n / (time.perf_counter() - t0)


def tag_read_ms(paths: list[str], reps: int) -> list[float]:
    """Median ms to read the HOT events of tag 'hot' from each store, the stores interleaved."""
    query = Query([QueryItem(tags=["hot"])])
    stores = [EventStore(p) for p in paths]
    samples: list[list[float]] = [[] for _ in stores]
    try:
        for _ in range(reps):
            for path, store, sample in zip(paths, stores, samples, strict=True):
                t0 = time.perf_counter()
                got = sum(1 for e in store.read(query) if e.data is not None)
                sample.append((time.perf_counter() - t0) * 1e3)
                if got != HOT:
                    raise RuntimeError(f"read {got} events of tag 'hot' from {path}, expected {HOT}")
    finally:
        for store in stores:
            store.close()
    return [statistics.median(s) for s in samples]


def open_append_kroniko(path: str) -> float:
    """Ms to open the store and make one durable conditional append (a new entity)."""
    t0 = time.perf_counter()
    store = EventStore(path)
    tag = f"open:{os.getpid()}"
    store.append(Event(TYPE, payload(0), [tag]), AppendCondition(Query([QueryItem(types=[TYPE], tags=[tag])])))
    ms = (time.perf_counter() - t0) * 1e3
    store.close()
    return ms


def open_append_sqlite(path: str) -> float:
    """The same in SQLite: connect, set WAL/FULL, one conditional append transaction."""
    t0 = time.perf_counter()
    db = sqlite_open(path)
    tag = f"open:{os.getpid()}"
    sqlite_append(db, [(TYPE, [tag], payload(0))], (tag, 0))
    ms = (time.perf_counter() - t0) * 1e3
    db.close()
    return ms


def fsck_child(path: str, traced: bool) -> tuple[float, float, Any]:
    """(seconds, peak MiB, exit code) of ``kroniko_ops.fsck(path)``: peak RSS of this process and
    its children, or with ``traced`` the peak Python heap (tracemalloc, which slows the run)."""
    fsck = kroniko_ops.fsck  # imported before the clock starts, as in bench_packs.fsck_rate
    if traced:
        tracemalloc.start()
    t0 = time.perf_counter()
    report = fsck(path)
    seconds = time.perf_counter() - t0
    if traced:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    else:
        peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        peak /= 1024
    return seconds, peak, getattr(report, "exit_code", "?")
