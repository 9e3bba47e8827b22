#!/usr/bin/env python3
"""fsck benchmarks: full and quick check rates, peak memory against store size, reindex rate.

    python scripts/bench_fsck.py [--size ci|full] [--dir DIR]

``full``: rates on 100k loose events (targets: full >= 25,000 events/s, quick >= 500,000 log
lines/s), peak memory of a full check at 100k and 1M events (it must not grow with the store).
``ci``: the same on 10k and 50k events. Stores are built with ``EventStore(durable=False)`` in
batches of 1000. Peak memory is the Python heap's peak during a full check (tracemalloc), in a
fresh child process, with the process's peak RSS beside it. ``run(size)`` returns rows
for ``scripts/bench.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kroniko_ops import Event, EventStore

SIZES = {"ci": (10_000, 50_000), "full": (100_000, 1_000_000)}
TYPES = ("CartCreated", "ItemAdded", "ItemRemoved", "CheckedOut", "Paid")


def build(path: str, n: int, start: int = 0) -> float:
    """Grow the store at ``path`` to ``n`` events (batches of 1000, no fsync); return events/s."""
    t0 = time.perf_counter()
    with EventStore(path, durable=False) as store:
        for first in range(start, n, 1000):
            store.append([
                Event(TYPES[i % 5], {"sku": f"s{i}", "qty": i % 7, "price": 1999, "note": "a typical small event"},
                      [f"cart:{i // 10}", f"shop:{i % 3}"])
                for i in range(first, min(n, first + 1000))
            ])
    return (n - start) / max(time.perf_counter() - t0, 1e-9)


def _timed(path: str, level: str) -> tuple[float, Any]:
    from kroniko_ops import fsck

    t0 = time.perf_counter()
    report = fsck(path, level)
    return time.perf_counter() - t0, report


def _rate(path: str, level: str, n: int, runs: int = 2) -> tuple[float, str]:
    """Best of ``runs`` (the page cache is warm after the first)."""
    best = 0.0
    note = ""
    for _ in range(runs):
        seconds, report = _timed(path, level)
        best = max(best, n / seconds)
        note = f"exit {report.exit_code}, {report.figures.get('events_checked')} checked"
    return best, note


def _peak_child(path: str, queue: Any) -> None:
    from kroniko_ops import fsck

    tracemalloc.start()
    report = fsck(path, "full")
    heap = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    queue.put((heap / 2**20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, report.exit_code))


def peak_memory(path: str) -> tuple[float, float, int]:
    """(peak Python heap MiB, peak RSS MiB, exit code) of a full fsck in a fresh process, under
    tracemalloc (which slows it: no rate is measured here)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_peak_child, args=(path, queue))
    child.start()
    try:
        result = queue.get(timeout=3600)
    finally:
        child.join(timeout=60)
    return result


def _reindex_rate(path: str, n: int) -> float:
    from kroniko_ops import reindex

    t0 = time.perf_counter()
    report = reindex(path)
    assert report.exit_code == 0
    return n / (time.perf_counter() - t0)


def run(size: str) -> list[dict[str, Any]]:
    """The rows for scripts/bench.py (``size``: ci or full)."""
    small, big = SIZES[size]
    rows: list[dict[str, Any]] = []
    folder = tempfile.mkdtemp(prefix="kroniko-bench-fsck-")
    try:
        path = str(Path(folder, "store"))
        built = build(path, small)
        full, note_full = _rate(path, "full", small)
        quick, note_quick = _rate(path, "quick", small)
        rows.append({"workload": f"fsck full, {small:,} loose events", "rate": full, "unit": "events/s",
                     "note": note_full, "target": 25_000, "ratio": full / 25_000})
        rows.append({"workload": f"fsck --quick, {small:,} log lines", "rate": quick, "unit": "lines/s",
                     "note": note_quick, "target": 500_000, "ratio": quick / 500_000})
        rows.append({"workload": f"reindex, {small:,} events", "rate": _reindex_rate(path, small),
                     "unit": "events/s", "note": f"store built at {built:,.0f} events/s"})
        heap, rss, code = peak_memory(path)
        rows.append({"workload": f"fsck full peak memory, {small:,} events", "rate": heap, "unit": "MiB",
                     "note": f"peak Python heap (tracemalloc); process peak RSS {rss:.0f} MiB; exit {code}"})
        build(path, big, start=small)
        t0 = time.perf_counter()
        _timed(path, "full")
        big_rate = big / (time.perf_counter() - t0)
        heap_big, rss_big, code = peak_memory(path)
        rows.append({"workload": f"fsck full peak memory, {big:,} events", "rate": heap_big, "unit": "MiB",
                     "note": f"peak Python heap; process peak RSS {rss_big:.0f} MiB; exit {code}; "
                             f"full fsck ran at {big_rate:,.0f} events/s",
                     "baseline": heap, "ratio": heap_big / max(heap, 1e-9)})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    """Print the rows as a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="ci")
    parser.add_argument("--dir", help="Temp folder root (default: the system's).")
    args = parser.parse_args()
    if args.dir:
        tempfile.tempdir = args.dir
    for row in run(args.size):
        extra = f"  (target {row['target']:,}, x{row['ratio']:.2f})" if "target" in row else ""
        if "baseline" in row:
            extra = f"  (vs {row['baseline']:.1f} MiB at the small size: x{row['ratio']:.2f})"
        print(f"{row['workload']:<45} {row['rate']:>14,.1f} {row['unit']:<9} {row['note']}{extra}")


if __name__ == "__main__":
    main()
