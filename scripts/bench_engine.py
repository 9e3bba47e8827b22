"""Append workloads for ``scripts/bench.py``: kroniko-ops and a SQLite baseline doing the same work.

The baseline is what a user would reasonably build on the stdlib's sqlite3: WAL, synchronous=FULL,
an ``events`` table (position INTEGER PRIMARY KEY, type, tags and data as JSON text) and an
``event_tags`` table (tag, position) indexed on (tag, position). A conditional append is one
BEGIN IMMEDIATE transaction: SELECT a matching event after the known head, INSERT the event and its
tag rows, COMMIT. In kroniko-ops it is ``store.append(event, AppendCondition(query, after=head))``.
Both sides encode the data with orjson, so the comparison is of the storage engines.

Not a benchmark of its own: ``scripts/bench.py`` imports it by name (its functions run in spawned
child processes, which import it the same way).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sqlite3
import time
from contextlib import closing
from typing import Any

import orjson

from kroniko_ops import AppendCondition, AppendConditionFailed, Event, EventStore, Query, QueryItem

TYPE = "ItemAdded"
PROCS = 8
ENTITIES = 10  # entities (tags) an appender cycles through when it is not opening new ones
BATCH = 100

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events(position INTEGER PRIMARY KEY, type TEXT NOT NULL, tags TEXT NOT NULL, "
    "data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS event_tags(tag TEXT NOT NULL, position INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS event_tags_tag ON event_tags(tag, position)",
)
CONFLICT = ("SELECT 1 FROM event_tags t JOIN events e ON e.position = t.position "
            "WHERE t.tag = ? AND t.position > ? AND e.type = ? LIMIT 1")
INSERT_EVENT = "INSERT INTO events(position, type, tags, data) VALUES (?, ?, ?, ?)"
INSERT_TAG = "INSERT INTO event_tags(tag, position) VALUES (?, ?)"


def payload(i: int) -> dict[str, Any]:
    """A typical small event's data."""
    return {"sku": f"s{i}", "qty": i % 7, "price": 1999, "note": "a typical small event"}


def _tag(prefix: str, i: int, new: bool) -> str:
    """The i-th append's tag: a new entity each time, or one of ENTITIES existing ones."""
    return f"{prefix}{i}" if new else f"{prefix}{i % ENTITIES}"


# -- SQLite ------------------------------------------------------------------------------------

def sqlite_open(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL."""
    db = sqlite3.connect(path, isolation_level=None, timeout=120)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    for statement in SCHEMA:
        db.execute(statement)
    return db


def sqlite_rows(events: list[tuple[int, str, list[str], Any]]) -> tuple[list[tuple], list[tuple]]:
    """(event rows, tag rows) for ``(position, type, tags, data)`` events."""
    rows = [(pos, type_, orjson.dumps(tags).decode(), orjson.dumps(data).decode()) for pos, type_, tags, data in events]
    return rows, [(tag, pos) for pos, _, tags, _ in events for tag in tags]


def sqlite_append(db: sqlite3.Connection, events: list[tuple[str, list[str], Any]],
                  cond: tuple[str, int] | None = None) -> int:
    """Append ``(type, tags, data)`` events in one transaction; return the last position, or 0
    when ``cond`` = (tag, after) finds an event of TYPE with that tag after ``after``."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if cond is not None and db.execute(CONFLICT, (cond[0], cond[1], TYPE)).fetchone():
            db.execute("ROLLBACK")
            return 0
        head = db.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
        rows, tag_rows = sqlite_rows([(head + k + 1, *event) for k, event in enumerate(events)])
        db.executemany(INSERT_EVENT, rows)
        db.executemany(INSERT_TAG, tag_rows)
        db.execute("COMMIT")
        return head + len(events)
    except BaseException:
        db.execute("ROLLBACK")
        raise


# -- one appender ------------------------------------------------------------------------------

def kroniko_loop(store: EventStore, prefix: str, deadline: float, new: bool,
                 latencies: list[float] | None = None) -> tuple[int, int]:
    """Durable conditional appends of one event until ``deadline``: (appended, conflicts); each
    acknowledged append's seconds go to ``latencies`` when given."""
    heads: dict[str, int] = {}
    done = conflicts = 0
    clock = time.perf_counter
    while (t0 := clock()) < deadline:
        tag = _tag(prefix, done + conflicts, new)
        query = Query([QueryItem(types=[TYPE], tags=[tag])])
        try:
            heads[tag] = store.append(Event(TYPE, payload(done), [tag]), AppendCondition(query, after=heads.get(tag)))
            done += 1
            if latencies is not None:
                latencies.append(clock() - t0)
        except AppendConditionFailed:
            conflicts += 1
            heads[tag] = store.read(query).head
    return done, conflicts


def sqlite_loop(db: sqlite3.Connection, prefix: str, deadline: float, new: bool,
                latencies: list[float] | None = None) -> tuple[int, int]:
    """The same in SQLite: (appended, conflicts)."""
    heads: dict[str, int] = {}
    done = conflicts = 0
    clock = time.perf_counter
    while (t0 := clock()) < deadline:
        tag = _tag(prefix, done + conflicts, new)
        pos = sqlite_append(db, [(TYPE, [tag], payload(done))], (tag, heads.get(tag, 0)))
        if pos:
            heads[tag] = pos
            done += 1
            if latencies is not None:
                latencies.append(clock() - t0)
        else:
            conflicts += 1
            heads[tag] = db.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
    return done, conflicts


def _open(kind: str, path: str) -> Any:
    return EventStore(path) if kind == "kroniko" else sqlite_open(path)


def appends(kind: str, path: str, seconds: float, new: bool) -> float:
    """Events/s of one process doing durable conditional appends for ``seconds`` on a new store."""
    loop = kroniko_loop if kind == "kroniko" else sqlite_loop
    with closing(_open(kind, path)) as handle:
        t0 = time.perf_counter()
        done, _ = loop(handle, "cart:", t0 + seconds, new)
        return done / (time.perf_counter() - t0)


def batches(kind: str, path: str, seconds: float) -> float:
    """Events/s of durable appends of BATCH events per call / per transaction, for ``seconds``."""
    with closing(_open(kind, path)) as handle:
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() < t0 + seconds:
            tag = f"order:{n // BATCH}"
            if kind == "kroniko":
                handle.append([Event(TYPE, payload(n + i), [tag]) for i in range(BATCH)])
            else:
                sqlite_append(handle, [(TYPE, [tag], payload(n + i)) for i in range(BATCH)])
            n += BATCH
        return n / (time.perf_counter() - t0)


# -- PROCS appenders ---------------------------------------------------------------------------

def _worker(kind: str, path: str, worker: int, seconds: float, start: Any, results: Any) -> None:
    loop = kroniko_loop if kind == "kroniko" else sqlite_loop
    with closing(_open(kind, path)) as handle:
        results.put(("ready", worker))
        start.wait(timeout=120)
        t0 = time.perf_counter()
        latencies: list[float] = []
        done, conflicts = loop(handle, f"cart:{worker}-", t0 + seconds, False, latencies)
        results.put((done, conflicts, time.perf_counter() - t0, latencies))


def _gather(results: Any, procs: list[Any], timeout: float) -> list[Any]:
    """One message from each of ``procs``; raise as soon as one of them has failed."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < len(procs):
        try:
            got.append(results.get(timeout=0.5))
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                raise RuntimeError(f"{len(failed)} of {len(procs)} workers failed (exit codes {failed}), "
                                   f"or they took over {timeout:.0f} s; see their tracebacks above") from None
    return got


def parallel(kind: str, path: str, seconds: float) -> tuple[float, int, float, float, tuple[int, int]]:
    """(aggregate events/s, conflicts, 99th-percentile and longest latency of one acknowledged
    append in ms, fewest and most appends of one process) of PROCS spawned processes, each with
    its own handle and its own tags, doing durable conditional appends for ``seconds`` from a
    common start. The spread shows fairness: a lock that lets one process run alone gives a low
    percentile over all appends while the others wait for seconds."""
    with closing(_open(kind, path)):
        pass  # create the store or database before the workers race to
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(kind, path, w, seconds, start, results)) for w in range(PROCS)]
    for p in procs:
        p.start()
    try:
        _gather(results, procs, 120)  # every handle open
        start.set()
        got = _gather(results, procs, seconds + 120)
    finally:
        start.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    latencies = sorted(x for g in got for x in g[3])
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3 if latencies else 0.0
    longest = latencies[-1] * 1e3 if latencies else 0.0
    spread = (min(g[0] for g in got), max(g[0] for g in got))
    return sum(g[0] for g in got) / max(g[2] for g in got), sum(g[1] for g in got), p99, longest, spread


def raw_fsync_ms(folder: str, seconds: float) -> float:
    """Milliseconds per (append one 220-byte line + fsync) to one file in ``folder``."""
    fd = os.open(os.path.join(folder, "raw-fsync.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    line = b"x" * 219 + b"\n"
    n = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() < t0 + seconds:
            os.write(fd, line)
            os.fsync(fd)
            n += 1
    finally:
        os.close(fd)
    return (time.perf_counter() - t0) * 1e3 / n
