#!/usr/bin/env python3
"""Benchmarks: the project's required figures, kroniko-ops against SQLite doing the same work in the same run.

    python scripts/bench.py [--size ci|full] [--only GROUP ...] [--json OUT] [--dir DIR]

GROUP is one of engine, read, tags, open, fsck, reindex, postgres, packs, scale, replicate (all by default). Every row
prints its rate, the baseline it is compared with, the ratio, the required and goal figures and whether they are met:

    durable conditional append, 1 process, 1 event       >= 1.0x SQLite       goal >= 1.3x
    the same, a new tag (entity) per event               <= 1.2x slower than the line above
    durable conditional append, 8 processes              >= 2.0x SQLite       goal >= 3x
      99th-percentile latency of one append, 8 writers   figure only (vs SQLite's; lower is better)
    durable batches of 100 events, per event             >= 0.7x SQLite       goal >= 1.5x
    read all, decoded (log segments; packs)              >= 500k events/s     goal >= 1M/s
    read one tag's 100 events: 10k vs N events,
      and 100 vs N distinct tags                         <= 1.5x              goal flat (<= 1.1x)
    open an N-event store and append one event           <= 50 ms             goal <= 10 ms
    fsck full                                            >= 200k events/s     goal >= 500k/s
      peak memory from 100k to N events                  flat (<= 1.25x)
    reindex                                              >= 100k events/s     goal >= 300k/s
    PostgreSQL: conditional batches of 100, 1 process    vs the file store (figure only)
    PostgreSQL: the same, 8 processes                    >= 1.0x file store   goal >= 1.0x
    packs (bench and realistic events): bytes vs sealed  <= 0.2x              goal <= 0.1x
      read all, streamed and into a list, segments       >= 500k events/s     goal >= 1M/s
      the same from packs                                >= 600k/s and >= 1.3x segments
      one tag's 100 events, packs vs segments            <= 1.2x
      compaction; fsck full over segments and packs      >= 200k/s; >= 200k/s (goal 500k/s)
    scale (realistic events at 10k, N, 3M): one entity's ~10 events before and after
      compaction <= 0.3 ms, read + conditional append <= 1 ms, a category's first 100
      events after compaction <= 2 ms, each within 1.5x of 10k; open + first read <= 50 ms
    replication lag at 1,000 durable appends/s, p99      < 2 s                goal < 1 s
    bytes uploaded per byte appended                     figure               goal <= 1.1x
    restore of a 200,000-event replica                   figure only (events/s)

N is 1,000,000 with ``--size full`` and 50,000 with ``--size ci`` (a smoke run of a minute or two);
``--size smoke`` only checks that every step runs (a few hundred events each, meaningless figures).
The postgres group (scripts/bench_postgres.py) starts a throwaway PostgreSQL server (initdb and
pg_ctl from /usr/lib/postgresql/*/bin, as the postgres account when run as root).
The SQLite baseline (scripts/bench_engine.py) is WAL + synchronous=FULL with an events table and an
indexed event_tags table. Comparative pairs run twice, alternating (kroniko, SQLite, kroniko, SQLite),
and the ratio uses the better run of each. Big stores are built with ``durable=False`` in batches of
1000. The raw fsync latency of the work folder's disk is printed too: the 8-process figure depends on it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_engine, bench_stores (also in spawned children)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_packs
from bench_engine import BATCH, PROCS, appends, batches, parallel, raw_fsync_ms
from bench_stores import (
    HOT,
    Fixtures,
    fsck_child,
    head,
    in_child,
    kroniko_read_all,
    open_append_kroniko,
    open_append_sqlite,
    sqlite_read_all,
    sqlite_seconds,
    tag_read_ms,
    timed,
)

import kroniko_ops

Row = dict[str, Any]


@dataclass(frozen=True)
class Size:
    """The sizes of one ``--size``."""

    seconds: float  # each timed append run
    procs_seconds: float  # each timed run of the PROCS appenders
    small: int  # events in the small store of the tag-read comparison
    big: int  # events in the big stores (N)
    fsck_small: int  # the smaller fsck size, for the memory comparison
    tag_reps: int  # tag reads per store (the median is kept)
    opens: int  # fresh processes opening the big store, per side (the median is kept)


SIZES = {
    "ci": Size(seconds=1.0, procs_seconds=2.0, small=10_000, big=50_000, fsck_small=10_000, tag_reps=50, opens=3),
    "smoke": Size(seconds=0.2, procs_seconds=0.2, small=1_000, big=2_000, fsck_small=1_000, tag_reps=3, opens=1),
    "full": Size(seconds=5.0, procs_seconds=10.0, small=10_000, big=1_000_000, fsck_small=100_000, tag_reps=300,
                 opens=7),
}


@dataclass(frozen=True)
class Spec:
    """A required figure: ``field`` of the row compared with ``op`` to ``required`` and ``goal``."""

    required_text: str
    goal_text: str
    field: str = ""
    op: str = ">="
    required: float = 0.0
    goal: float = 0.0


SPECS = {  # in the table's order
    "fsync": Spec("", ""),
    "single": Spec(">= 1.0x SQLite", ">= 1.3x", "ratio", ">=", 1.0, 1.3),
    "new_tag": Spec("<= 1.2x line above", "same", "ratio", "<=", 1.2, 1.2),
    "procs": Spec(">= 2.0x SQLite", ">= 3x", "ratio", ">=", 2.0, 3.0),
    "p99": Spec("figure only", "<= SQLite's"),
    "batch": Spec(">= 0.7x SQLite", ">= 1.5x", "ratio", ">=", 0.7, 1.5),
    "read_segments": Spec(">= 500k/s", ">= 1M/s", "rate", ">=", 500_000, 1_000_000),
    "read_packs": Spec(">= 500k/s", ">= 1M/s", "rate", ">=", 500_000, 1_000_000),
    "tag_size": Spec("<= 1.5x", "flat <= 1.1x", "ratio", "<=", 1.5, 1.1),
    "tag_distinct": Spec("<= 1.5x", "flat <= 1.1x", "ratio", "<=", 1.5, 1.1),
    "open": Spec("<= 50 ms", "<= 10 ms", "rate", "<=", 50, 10),
    "fsck": Spec(">= 200k/s", ">= 500k/s", "rate", ">=", 200_000, 500_000),
    "fsck_memory": Spec("flat <= 1.25x", "same", "ratio", "<=", 1.25, 1.25),
    "reindex": Spec(">= 100k/s", ">= 300k/s", "rate", ">=", 100_000, 300_000),
    "pk_bytes": Spec("<= 0.2x", "<= 0.1x", "ratio", "<=", 0.2, 0.1),
    "pk_seg_read": Spec(">= 500k/s", ">= 1M/s", "rate", ">=", 500_000, 1_000_000),
    "pk_pack_read": Spec(">= 600k/s", ">= 1M/s", "rate", ">=", 600_000, 1_000_000),
    "pk_pack_ratio": Spec(">= 1.3x segments", "same", "ratio", ">=", 1.3, 1.3),
    "pk_tag": Spec("<= 1.2x segments", "same", "ratio", "<=", 1.2, 1.2),
    "pk_compact": Spec(">= 200k/s", "same", "rate", ">=", 200_000, 200_000),
    "pk_fsck": Spec(">= 200k/s", ">= 500k/s", "rate", ">=", 200_000, 500_000),
    "sc_entity_before": Spec("<= 0.3 ms", "0.07 ms", "rate", "<=", 0.3, 0.07),
    "sc_entity_after": Spec("<= 0.3 ms", "0.07 ms", "rate", "<=", 0.3, 0.07),
    "sc_decision_before": Spec("<= 1 ms", "same", "rate", "<=", 1.0, 1.0),
    "sc_decision_after": Spec("<= 1 ms", "same", "rate", "<=", 1.0, 1.0),
    "sc_category_after": Spec("<= 2 ms", "same", "rate", "<=", 2.0, 2.0),
    "sc_open": Spec("<= 50 ms", "<= 10 ms", "rate", "<=", 50, 10),
    "pg_single": Spec("figure only", "", "", ">=", 0.0, 0.0),
    "pg_batch": Spec("figure only", "", "", ">=", 0.0, 0.0),
    "pg_procs": Spec(">= 1.0x file store", ">= 1.0x", "ratio", ">=", 1.0, 1.0),
    "replicate_lag": Spec("p99 < 2 s", "< 1 s", "rate", "<=", 2.0, 1.0),
    "replicate_bytes": Spec("figure", "<= 1.1x", "rate", "<=", 1e9, 1.1),
    "replicate_restore": Spec("figure only", "", "", ">=", 0.0, 0.0),
}
_SEQ = itertools.count()


def row(key: str, workload: str, rate: float, unit: str, baseline: float | None = None,
        ratio: float | None = None, note: str = "") -> Row:
    """One table row; ``ratio`` is the figure the requirement is about when it is a ratio."""
    return {"key": key, "workload": workload, "rate": rate, "unit": unit, "baseline": baseline, "ratio": ratio,
            "note": note}


def fresh(tmp: str, name: str) -> str:
    """A new path in ``tmp``."""
    return os.path.join(tmp, f"{name}-{next(_SEQ)}")


def pair(ours: Callable[[], float], theirs: Callable[[], float], lower: bool = False) -> tuple[float, float, str]:
    """Run ours, theirs, ours, theirs; return the better of each and a note with every run."""
    k1, s1, k2, s2 = ours(), theirs(), ours(), theirs()
    best = min if lower else max
    return best(k1, k2), best(s1, s2), f"runs {k1:,.1f} / {k2:,.1f} vs SQLite {s1:,.1f} / {s2:,.1f}"


# -- engine: appends ---------------------------------------------------------------------------

def append_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """Durable conditional appends of one event from one process, to existing and to new entities."""
    secs = size.seconds
    k_one, s_one, note = pair(lambda: appends("kroniko", fresh(tmp, "k"), secs, False),
                              lambda: appends("sqlite", fresh(tmp, "s.db"), secs, False))
    rows = [row("single", "durable conditional append, 1 process, 1 event", k_one, "ev/s", s_one, k_one / s_one,
                note)]
    k_new, s_new, note = pair(lambda: appends("kroniko", fresh(tmp, "k"), secs, True),
                              lambda: appends("sqlite", fresh(tmp, "s.db"), secs, True))
    rows.append(row("new_tag", "the same, a new tag (entity) per event (baseline: line above)", k_new, "ev/s",
                    k_one, k_one / k_new, f"vs SQLite {s_new:,.0f} ev/s: {k_new / s_new:.2f}x; {note}"))
    return rows


def procs_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """Durable conditional appends from PROCS processes at once, and the 99th-percentile latency
    of one acknowledged append in those runs."""
    conflicts: list[int] = []
    p99: list[float] = []
    longest: list[float] = []
    spread: list[tuple[int, int]] = []

    def run(kind: str) -> float:
        rate, lost, late, worst, counts = parallel(kind, fresh(tmp, kind), size.procs_seconds)
        conflicts.append(lost)
        p99.append(late)
        longest.append(worst)
        spread.append(counts)
        return rate

    k, s, note = pair(lambda: run("kroniko"), lambda: run("sqlite"))
    k99, s99 = min(p99[0], p99[2]), min(p99[1], p99[3])
    fair = (f"appends per process kroniko {spread[0][0]}-{spread[0][1]}, SQLite {spread[1][0]}-{spread[1][1]}; "
            f"longest kroniko {longest[0]:.0f} ms, SQLite {longest[1]:.0f} ms (first runs)")
    return [row("procs", f"durable conditional append, {PROCS} processes", k, "ev/s", s, k / s,
                f"conflicts kroniko {conflicts[0] + conflicts[2]}, SQLite {conflicts[1] + conflicts[3]}; {note}"),
            row("p99", f"99th-percentile latency of one durable append, {PROCS} writers", k99, "ms", s99, k99 / s99,
                f"lower is better; runs {p99[0]:.1f} / {p99[2]:.1f} ms vs SQLite {p99[1]:.1f} / {p99[3]:.1f} ms; "
                f"{fair}")]


def batch_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """Durable appends of BATCH events per call / per transaction."""
    k, s, note = pair(lambda: batches("kroniko", fresh(tmp, "k"), size.seconds),
                      lambda: batches("sqlite", fresh(tmp, "s.db"), size.seconds))
    return [row("batch", f"durable batches of {BATCH} events, per event", k, "ev/s", s, k / s, note)]


# -- reads -------------------------------------------------------------------------------------

def read_segment_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """Read all of the big store as built (events in log segments)."""
    n = size.big
    path, db = fx.store(n, n), fx.sqlite(n, n)
    k, s, note = pair(lambda: kroniko_read_all(path), lambda: sqlite_read_all(db))
    return [row("read_segments", f"read all {n:,} events, decoded (log segments)", k, "ev/s", s, k / s, note)]


def read_pack_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """Compact the big store (so it runs last), then read all of it (events in packs)."""
    n = size.big
    path, db = fx.store(n, n), fx.sqlite(n, n)
    seconds = timed(kroniko_ops.compact, path)
    k, s, note = pair(lambda: kroniko_read_all(path), lambda: sqlite_read_all(db))
    return [row("read_packs", f"read all {n:,} events, decoded (packs, after compact)", k, "ev/s", s, k / s,
                f"compact took {seconds:.1f} s; {note}")]


def tag_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """One tag's HOT events: small vs big store (100 cart tags), 100 vs N distinct tags (N events)."""
    small, big = size.small, size.big
    paths = [fx.store(small, 100), fx.store(big, 100), fx.store(big, big)]
    t_small, t_big, t_many = tag_read_ms(paths, size.tag_reps)
    note = f"median of {size.tag_reps}; baseline is the smaller case (kroniko), ratio bigger / smaller"
    return [
        row("tag_size", f"read one tag's {HOT} events: {small:,} vs {big:,} events", t_big, "ms", t_small,
            t_big / t_small, note),
        row("tag_distinct", f"read one tag's {HOT} events: 100 vs {big:,} distinct tags", t_many, "ms", t_big,
            t_many / t_big, note),
    ]


# -- open, fsck, reindex ---------------------------------------------------------------------------

def open_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """Open the big store and append one event, each time in a fresh process."""
    n = size.big
    path, db = fx.store(n, n), fx.sqlite(n, n)
    k: list[float] = []
    s: list[float] = []
    for _ in range(size.opens):
        k.append(in_child(open_append_kroniko, path))
        s.append(in_child(open_append_sqlite, db))
    km, sm = statistics.median(k), statistics.median(s)
    return [row("open", f"open a {n:,}-event store and append one event", km, "ms", sm, km / sm,
                f"median of {size.opens} fresh processes each (import excluded); runs {min(k):.1f}-{max(k):.1f} ms")]


def fsck_figures(fx: Fixtures, n: int) -> dict[str, Any]:
    """fsck full of an n-event store (unique tag per event), each run in a fresh process: the best rate
    of two runs alternating with SQLite's integrity_check, peak RSS and the peak Python heap."""
    path, db = fx.store(n, n), fx.sqlite(n, n)
    count = head(path)
    runs: list[tuple[float, float, Any]] = []

    def ours() -> float:
        runs.append(in_child(fsck_child, path, False))
        return count / runs[-1][0]

    k, s, note = pair(ours, lambda: count / sqlite_seconds(db, "PRAGMA integrity_check"))
    return {"n": count, "rate": k, "sqlite": s, "note": note, "heap": in_child(fsck_child, path, True)[1],
            "rss": max(r[1] for r in runs), "exit": runs[-1][2]}


def fsck_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """fsck full at two sizes: the rate at the bigger, and peak memory at both."""
    a, b = fsck_figures(fx, size.fsck_small), fsck_figures(fx, size.big)
    return [
        row("fsck", f"fsck full, {b['n']:,} events (baseline: SQLite integrity_check)", b["rate"], "ev/s",
            b["sqlite"], b["rate"] / b["sqlite"], f"exit {b['exit']}; at {a['n']:,} events {a['rate']:,.0f} ev/s "
            f"(exit {a['exit']}); {b['note']}"),
        row("fsck_memory", f"fsck full peak Python heap, {a['n']:,} vs {b['n']:,} events", b["heap"], "MiB",
            a["heap"], b["heap"] / a["heap"],
            f"tracemalloc peak; process peak RSS {a['rss']:.0f} vs {b['rss']:.0f} MiB"),
    ]


def reindex_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """reindex of the big store, against SQLite's REINDEX of its tag index."""
    path, db = fx.store(size.big, size.big), fx.sqlite(size.big, size.big)
    n = head(path)
    k, s, note = pair(lambda: n / timed(kroniko_ops.reindex, path), lambda: n / sqlite_seconds(db, "REINDEX"))
    return [row("reindex", f"reindex, {n:,} events (baseline: SQLite REINDEX)", k, "ev/s", s, k / s, note)]


# -- packs and the read path at scale (issue 19) ---------------------------------------------------

def packs_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """Both event sets of ``bench_packs``: bytes, reads, compaction, fsck, a tag."""
    n_real = size.big if size.big < 1_000_000 else 1_000_000
    return bench_packs.pack_rows(size.big, n_real, tmp, min(size.tag_reps, 100))


def scale_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """Realistic events at 10k, N (and 3M with --size full): entity reads before and after compaction."""
    sizes = [size.small, size.big] + ([3_000_000] if size.big >= 1_000_000 else [])
    return bench_packs.scale_rows(sizes, tmp, min(size.tag_reps, 200))


# -- table -------------------------------------------------------------------------------------

def postgres_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """Durable conditional appends (one event: 1 and PROCS processes; batches of BATCH: 1 process):
    PostgreSQL vs the format-3 file store."""
    import bench_postgres as bp

    # A smoke run stops after 1 append per appender; otherwise time decides.
    cap = 1 if size.seconds < 0.5 else 10**9
    srv = bp.Server()
    try:
        rows = []
        runs = (("pg_single", 1, 1, size.seconds), ("pg_procs", bp.PROCS, 1, size.procs_seconds),
                ("pg_batch", 1, bp.BATCH, size.seconds))
        for key, procs, batch, secs in runs:
            def ours(procs: int = procs, batch: int = batch, secs: float = secs) -> float:
                return bp.run(srv.new_url(), procs, secs, cap, batch)

            def theirs(procs: int = procs, batch: int = batch, secs: float = secs) -> float:
                return bp.run(fresh(tmp, "k"), procs, secs, cap, batch)

            k1, f1, k2, f2 = ours(), theirs(), ours(), theirs()
            k, f = max(k1, k2), max(f1, f2)
            what = "one event" if batch == 1 else f"batches of {batch}"
            rows.append(row(key, f"PostgreSQL: durable conditional appends of {what}, {procs} process(es)",
                            k, "ev/s", f, k / f, f"baseline: format-3 file store; runs {k1:,.0f} / {k2:,.0f} "
                            f"vs file {f1:,.0f} / {f2:,.0f}"))
        return rows
    finally:
        srv.stop()


def replicate_rows(size: Size, tmp: str, fx: Fixtures) -> list[Row]:
    """Replication to a throwaway SeaweedFS: lag at 1,000 durable appends/s, bytes uploaded per
    byte appended, restore of a replica (scripts/bench_replicate.py)."""
    import bench_replicate as br

    seconds = {"smoke": 3.0, "ci": 20.0}.get(size_name(size), 60.0)
    events = {"smoke": 2_000, "ci": 50_000}.get(size_name(size), 200_000)
    return br.rows(tmp, seconds, events)


def size_name(size: Size) -> str:
    """The ``--size`` name of ``size``."""
    return next(k for k, v in SIZES.items() if v == size)


Step = Callable[[Size, str, Fixtures], list[Row]]
GROUPS: dict[str, tuple[Step, ...]] = {  # in run order: the last step compacts the big store
    "engine": (append_rows, procs_rows, batch_rows), "tags": (tag_rows,), "open": (open_rows,),
    "fsck": (fsck_rows,), "reindex": (reindex_rows,), "read": (read_segment_rows, read_pack_rows),
    "postgres": (postgres_rows,), "packs": (packs_rows,), "scale": (scale_rows,),
    "replicate": (replicate_rows,),
}


def judge(r: Row) -> Row:
    """Add the row's required and goal figures and whether they are met (goal, yes, NO)."""
    spec = SPECS.get(r["key"], Spec("", ""))
    value = r.get(spec.field) if spec.field else None
    met = ""
    if value is not None:
        ok = (lambda t: value >= t) if spec.op == ">=" else (lambda t: value <= t)
        met = "goal" if ok(spec.goal) else "yes" if ok(spec.required) else "NO"
    return {**r, "required": spec.required_text, "goal": spec.goal_text, "met": met}


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    return f"{value:,.2f}" if unit in ("ms", "MiB", "s", "x") else f"{value:,.0f}"


def print_table(rows: list[Row]) -> None:
    """The rows in the required table's order, each with its note indented below."""
    order = list(SPECS)
    rows = sorted(rows, key=lambda r: order.index(r["key"]) if r["key"] in order else len(order))
    print(f"{'workload':<66} {'rate':>11} {'unit':<5} {'baseline':>11} {'ratio':>6}  {'required':<19} "
          f"{'goal':<13} met?")
    for r in rows:
        ratio = f"{r['ratio']:.3g}" if r.get("ratio") is not None else ""
        print(f"{r['workload']:<66} {_num(r.get('rate'), r['unit']):>11} {r['unit']:<5} "
              f"{_num(r.get('baseline'), r['unit']):>11} {ratio:>6}  {r['required']:<19} {r['goal']:<13} {r['met']}")
        if r.get("note"):
            print(f"    {r['note']}")


def run_groups(size: Size, tmp: str, only: list[str]) -> list[Row]:
    """The raw fsync row, then the selected groups' rows; a step that fails gives a "failed" row."""
    fx = Fixtures(tmp)
    ms = raw_fsync_ms(tmp, 0.5 if size.seconds < 2 else 2.0)
    rows = [row("fsync", "raw append one line + fsync, same folder", ms, "ms", note=f"{1e3 / ms:,.0f} fsyncs/s")]
    for step in (step for name in GROUPS if name in only for step in GROUPS[name]):
        try:
            rows += step(size, tmp, fx)
        except Exception as exc:
            traceback.print_exc()
            rows.append({"key": step.__name__, "workload": f"{step.__name__} failed", "unit": "",
                         "note": str(exc).strip().splitlines()[-1][:200], "error": True})
    return [judge(r) for r in rows]


def main() -> int:
    """Parse the arguments, run, print; exit 1 when a group failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="ci")
    ap.add_argument("--only", nargs="+", choices=list(GROUPS), metavar="GROUP", help=", ".join(GROUPS))
    ap.add_argument("--json", metavar="OUT", help="also write the rows as JSON to OUT")
    ap.add_argument("--dir", help="parent of the work folder (default: the system temp folder)")
    args = ap.parse_args()
    machine = {"host": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count(),
               "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "size": args.size}
    tmp = tempfile.mkdtemp(prefix="kroniko-bench-", dir=args.dir)
    machine["dir"] = os.path.dirname(tmp)
    print("# " + " ".join(f"{k}={v}" for k, v in machine.items()), flush=True)
    try:
        rows = run_groups(SIZES[args.size], tmp, args.only or list(GROUPS))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"machine": machine, "rows": rows}, option=orjson.OPT_INDENT_2))
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
