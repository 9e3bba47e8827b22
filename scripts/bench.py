#!/usr/bin/env python3
"""Benchmarks: kroniko-ops against a SQLite baseline doing the same work, in the same run.

    python scripts/bench.py [--size ci|full] [--json OUT] [--only NAME ...]

Prints a table of rates and ratios. The baseline is SQLite in WAL mode with synchronous=FULL,
one transaction per conditional append (check the condition with a SELECT, then INSERT), and the
raw ceiling is a bare append + fsync loop on one file. Areas other than the engine contribute
their own workloads through ``scripts/bench_<area>.py`` modules exposing ``run(size)``.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kroniko_ops import AppendCondition, Event, EventStore, Query, QueryItem

SIZES = {
    "ci": {"single": 300, "procs_each": 60, "batches": 10, "read_all": 5_000, "tag_small": 5_000,
           "tag_big": 20_000},
    "full": {"single": 3_000, "procs_each": 500, "batches": 100, "read_all": 100_000,
             "tag_small": 100_000, "tag_big": 1_000_000},
}
PROCS = 8


# -- SQLite baseline ---------------------------------------------------------------------------

def _sqlite(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=60)
    db.execute("pragma journal_mode=wal")
    db.execute("pragma synchronous=FULL")
    db.execute("create table if not exists events(pos integer primary key, type text, data text)")
    db.execute("create table if not exists tags(tag text, pos integer)")
    db.execute("create index if not exists tags_i on tags(tag, pos)")
    return db


def _sqlite_append(db: sqlite3.Connection, events: list[tuple[str, str, list[str]]],
                   cond_tag: str | None, after: int) -> int:
    """A DCB conditional append in one transaction: fail if cond_tag has an event after `after`."""
    db.execute("begin immediate")
    try:
        if cond_tag is not None:
            row = db.execute("select pos from tags where tag=? and pos>? limit 1", (cond_tag, after)).fetchone()
            if row:
                db.execute("rollback")
                return -row[0]
        pos = 0
        for type_, data, tags in events:
            pos = db.execute("insert into events(type, data) values(?, ?)", (type_, data)).lastrowid
            db.executemany("insert into tags values(?, ?)", [(t, pos) for t in tags])
        db.execute("commit")
        return pos
    except BaseException:
        db.execute("rollback")
        raise


def _sqlite_worker(path: str, worker: int, count: int, barrier: Any) -> None:
    db = _sqlite(path)
    barrier.wait(timeout=120)
    for i in range(count):
        tag = f"cart:{worker}-{i}"
        _sqlite_append(db, [("ItemAdded", '{"sku": "x"}', [tag])], tag, 0)
    db.close()


def _kroniko_worker(path: str, worker: int, count: int, barrier: Any) -> None:
    store = EventStore(path)
    barrier.wait(timeout=120)
    for i in range(count):
        tag = f"cart:{worker}-{i}"
        cond = AppendCondition(Query([QueryItem(types=["ItemAdded"], tags=[tag])]), after=0)
        store.append(Event("ItemAdded", {"sku": "x"}, [tag]), cond)
    store.close()


def _parallel(target: Any, path: str, each: int) -> float:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCS + 1)
    procs = [ctx.Process(target=target, args=(path, w, each, barrier)) for w in range(PROCS)]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    t0 = time.perf_counter()
    for p in procs:
        p.join(600)
        if p.is_alive():
            p.kill()
            raise RuntimeError("benchmark worker hung")
        if p.exitcode != 0:
            raise RuntimeError(f"benchmark worker failed with {p.exitcode}")
    return PROCS * each / (time.perf_counter() - t0)


# -- workloads ---------------------------------------------------------------------------------

def bench_raw_fsync(tmp: str, n: int) -> float:
    fd = os.open(os.path.join(tmp, "raw.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    line = b"x" * 218 + b"\n"
    t0 = time.perf_counter()
    for _ in range(n):
        os.write(fd, line)
        os.fsync(fd)
    dt = time.perf_counter() - t0
    os.close(fd)
    return n / dt


def bench_single(tmp: str, n: int) -> tuple[float, float]:
    store = EventStore(os.path.join(tmp, "single"))
    t0 = time.perf_counter()
    for i in range(n):
        tag = f"cart:{i}"
        store.append(Event("ItemAdded", {"sku": "x"}, [tag]),
                     AppendCondition(Query([QueryItem(types=["ItemAdded"], tags=[tag])]), after=0))
    ours = n / (time.perf_counter() - t0)
    store.close()
    db = _sqlite(os.path.join(tmp, "single.db"))
    t0 = time.perf_counter()
    for i in range(n):
        tag = f"cart:{i}"
        _sqlite_append(db, [("ItemAdded", '{"sku": "x"}', [tag])], tag, 0)
    theirs = n / (time.perf_counter() - t0)
    db.close()
    return ours, theirs


def bench_batches(tmp: str, batches: int) -> tuple[float, float]:
    store = EventStore(os.path.join(tmp, "batches"))
    t0 = time.perf_counter()
    for b in range(batches):
        store.append([Event("ItemAdded", {"sku": "x", "n": i}, [f"cart:{b}"]) for i in range(100)])
    ours = batches * 100 / (time.perf_counter() - t0)
    store.close()
    db = _sqlite(os.path.join(tmp, "batches.db"))
    t0 = time.perf_counter()
    for b in range(batches):
        _sqlite_append(db, [("ItemAdded", orjson.dumps({"sku": "x", "n": i}).decode(), [f"cart:{b}"])
                            for i in range(100)], None, 0)
    theirs = batches * 100 / (time.perf_counter() - t0)
    db.close()
    return ours, theirs


def build_store(path: str, n: int, tag_every: int) -> None:
    """n events in batches of 1000, fsync off; every tag_every-th event carries tag 'hot'
    so that exactly n // tag_every events match it."""
    store = EventStore(path, durable=False)
    for start in range(0, n, 1000):
        store.append([
            Event("ItemAdded", {"sku": f"s{i}", "qty": i % 7},
                  [f"cart:{i // 10}"] + (["hot"] if i % tag_every == 0 else []))
            for i in range(start, min(n, start + 1000))
        ])
    store.close()


def bench_read_all(path: str) -> float:
    store = EventStore(path)
    t0 = time.perf_counter()
    count = sum(1 for _ in store.read())
    dt = time.perf_counter() - t0
    store.close()
    return count / dt


def bench_tag(path: str, repeat: int = 20) -> float:
    store = EventStore(path)
    q = Query([QueryItem(tags=["hot"])])
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = sum(1 for _ in store.read(q))
        best = min(best, time.perf_counter() - t0)
    store.close()
    assert got == 100, got
    return best


def engine_rows(size: str, tmp: str) -> list[dict[str, Any]]:
    cfg = SIZES[size]
    rows: list[dict[str, Any]] = []
    raw = bench_raw_fsync(tmp, cfg["single"])
    rows.append({"workload": "raw append+fsync ceiling (1 line)", "rate": raw, "unit": "ops/s"})
    ours, theirs = bench_single(tmp, cfg["single"])
    rows.append({"workload": "durable conditional append, 1 process, 1 event", "rate": ours, "unit": "ev/s",
                 "baseline": theirs, "ratio": ours / theirs, "target": 0.4})
    ours = _parallel(_kroniko_worker, os.path.join(tmp, "procs"), cfg["procs_each"])
    theirs = _parallel(_sqlite_worker, os.path.join(tmp, "procs.db"), cfg["procs_each"])
    rows.append({"workload": f"durable conditional append, {PROCS} processes", "rate": ours, "unit": "ev/s",
                 "baseline": theirs, "ratio": ours / theirs, "target": 1.5})
    ours, theirs = bench_batches(tmp, cfg["batches"])
    rows.append({"workload": "durable batches of 100", "rate": ours, "unit": "ev/s", "baseline": theirs,
                 "ratio": ours / theirs, "target": 2.0})
    small = os.path.join(tmp, "small")
    build_store(small, cfg["tag_small"], cfg["tag_small"] // 100)
    rows.append({"workload": f"read all {cfg['tag_small']:,} loose events", "rate": bench_read_all(small),
                 "unit": "ev/s", "target_rate": 25_000})
    t_small = bench_tag(small)
    big = os.path.join(tmp, "big")
    build_store(big, cfg["tag_big"], cfg["tag_big"] // 100)
    t_big = bench_tag(big)
    rows.append({"workload": f"read one tag's 100 events: {cfg['tag_small']:,} vs {cfg['tag_big']:,}",
                 "rate": 100 / t_big, "unit": "ev/s", "note": f"{t_small * 1e3:.2f} ms vs {t_big * 1e3:.2f} ms",
                 "ratio": t_big / t_small, "target_max": 1.5})
    return rows


def area_rows(size: str, only: list[str] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for module in sorted(Path(__file__).parent.glob("bench_*.py")):
        area = module.stem[len("bench_"):]
        if only and area not in only:
            continue
        # Importable by name (scripts/ on sys.path, registered in sys.modules), so that a
        # benchmark's spawned child processes can unpickle their target functions.
        sys.path.insert(0, str(module.parent))
        mod = importlib.import_module(module.stem)
        for row in mod.run(size):
            rows.append({"area": area, **row})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'workload':<62} {'rate':>12} {'unit':<6} {'baseline':>10} {'ratio':>7} {'target':>7}")
    for r in rows:
        base = f"{r['baseline']:,.0f}" if "baseline" in r else ""
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        target = r.get("target", r.get("target_max", r.get("target_rate", "")))
        name = (f"[{r['area']}] " if "area" in r else "") + r["workload"]
        print(f"{name:<62} {r['rate']:>12,.0f} {r['unit']:<6} {base:>10} {ratio:>7} {target!s:>7}")
        if r.get("note"):
            print(f"    {r['note']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="ci")
    ap.add_argument("--json", metavar="OUT", help="also write the rows as JSON to OUT")
    ap.add_argument("--only", nargs="*", help="run only these areas ('engine' or a bench_<area> name)")
    ap.add_argument("--dir", help="work folder (default: a temp folder on the same disk as /tmp)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kroniko-bench-", dir=args.dir)
    try:
        rows = engine_rows(args.size, tmp) if not args.only or "engine" in args.only else []
        rows += area_rows(args.size, [a for a in args.only or [] if a != "engine"] or None) \
            if not args.only or any(a != "engine" for a in args.only) else []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# {platform.node()} {platform.machine()} cpus={os.cpu_count()} python={platform.python_version()} "
          f"size={args.size}")
    print_table(rows)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"size": args.size, "rows": rows}, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
