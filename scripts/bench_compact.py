#!/usr/bin/env python3
"""Compaction benchmarks: compaction rate, reads and fsck after compacting, disk used.

    python scripts/bench_compact.py [--size ci|full] [--dir DIR]

``full`` builds a 1M-event store (``EventStore(durable=False)``, batches of 1000), ``quick``
100k, ``ci`` 20k. ``run(size)`` returns rows for ``scripts/bench.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kroniko_ops import Event, EventStore, Query, QueryItem
from kroniko_ops.ops.compact import compact
from kroniko_ops.packs import check_packs
from kroniko_ops.report import Report

SIZES = {"ci": 20_000, "quick": 100_000, "full": 1_000_000}
HOT = 100  # events carrying the tag "hot"


def build(path: str, n: int) -> float:
    """n events in batches of 1000 without fsync; HOT of them carry the tag 'hot'. Returns ev/s."""
    every = max(1, n // HOT)
    t0 = time.perf_counter()
    with EventStore(path, durable=False) as store:
        for start in range(0, n, 1000):
            store.append([
                Event("ItemAdded", {"sku": f"s{i}", "qty": i % 7, "price": 1999, "note": "a typical small event"},
                      [f"cart:{i // 10}"] + (["hot"] if i % every == 0 else []))
                for i in range(start, min(n, start + 1000))
            ])
    return n / (time.perf_counter() - t0)


def raw_unlink(tmp: str, n: int = 2000, threads: int = 32) -> float:
    """The file system's ceiling: removals per second of ``n`` small synced files, from as many
    threads as compaction uses (removal is where this machine spends a compaction's time)."""
    from concurrent.futures import ThreadPoolExecutor

    folder = os.path.join(tmp, "unlink")
    os.makedirs(folder)
    paths = [os.path.join(folder, f"{i}.json") for i in range(n)]
    for p in paths:
        with open(p, "wb") as f:
            f.write(b"x" * 180)
    os.sync()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda part: [os.unlink(p) for p in part], [paths[k::threads] for k in range(threads)]))
    return n / (time.perf_counter() - t0)


def disk(path: str) -> int:
    """Bytes of disk used under ``path`` (allocated blocks, like du)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        total += os.lstat(dirpath).st_blocks * 512
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def read_all(path: str, repeat: int = 1) -> tuple[float, int, float]:
    """Best wall-clock rate of ``repeat`` reads of every event (a fresh handle each, so each
    verifies the packs it reads), the count, and the best rate in CPU time of this process (less
    sensitive to other processes sharing the machine)."""
    best = best_cpu = 0.0
    count = 0
    for _ in range(repeat):
        with EventStore(path, create=False) as store:
            c0, t0 = time.process_time(), time.perf_counter()
            count = sum(1 for _ in store.read())
            best = max(best, count / (time.perf_counter() - t0))
            best_cpu = max(best_cpu, count / max(1e-9, time.process_time() - c0))
    return best, count, best_cpu


def read_tag(path: str, repeat: int = 20) -> float:
    """Best time to read the HOT events of the tag 'hot' (a fresh handle each time)."""
    best = float("inf")
    query = Query([QueryItem(tags=["hot"])])
    for _ in range(repeat):
        with EventStore(path, create=False) as store:
            t0 = time.perf_counter()
            got = sum(1 for _ in store.read(query))
            best = min(best, time.perf_counter() - t0)
    assert got == HOT, got
    return best


def fsck_full(path: str, n: int) -> tuple[float, str]:
    try:
        from kroniko_ops.ops.fsck import fsck
    except ImportError:
        report = Report("fsck", path)
        t0 = time.perf_counter()
        check_packs(path, report, full=True)
        assert not report.problems, report.findings
        return n / (time.perf_counter() - t0), "fsck not available: check_packs(full=True) only"
    t0 = time.perf_counter()
    report = fsck(path)
    rate = n / (time.perf_counter() - t0)
    return rate, f"fsck full exit {report.exit_code}"


def run(size: str) -> list[dict[str, Any]]:
    """The rows for scripts/bench.py (``size``: ci, quick or full)."""
    n = SIZES[size]
    tmp = tempfile.mkdtemp(prefix="kroniko-bench-compact-")
    path = os.path.join(tmp, "store")
    rows: list[dict[str, Any]] = []
    load = os.getloadavg()[0]
    try:
        build_rate = build(path, n)
        loose_disk = disk(path)
        loose_read, _, _ = read_all(path)
        tag_before = read_tag(path)
        os.sync()  # loose files are usually old: on disk, not in the page cache's dirty pages
        t0 = time.perf_counter()
        report = compact(path)
        seconds = time.perf_counter() - t0
        compact_rate = n / seconds
        assert report.exit_code == 0, report.findings
        fig = report.figures
        unlink_rate = raw_unlink(tmp)
        packed_read, count, packed_cpu = read_all(path, 3)
        assert count == n
        tag_after = read_tag(path)
        fsck_rate, fsck_note = fsck_full(path, n)
        packs = os.path.join(path, "packs")
        pack_bytes = sum(os.path.getsize(os.path.join(packs, f)) for f in os.listdir(packs) if f.endswith(".pack"))
        own = pack_bytes - n - 106 * report.figures["packs"]  # minus the newline per event and trailers
        packs_disk, store_disk = disk(packs), disk(path)
        rows += [
            {"workload": f"compact {n:,} loose events", "rate": compact_rate, "unit": "ev/s", "target_rate": 50_000,
             "note": f"{seconds:.1f}s: packs written, read back, checked and published in {fig['pack_seconds']}s "
                     f"({n / max(fig['pack_seconds'], 1e-9):,.0f} ev/s), then {fig['removal_wait_seconds']}s more "
                     f"removing loose files; this file system removes {unlink_rate:,.0f} files/s at best "
                     f"(32 threads). Built at {build_rate:,.0f} ev/s (durable=False, batches of 1000); load average "
                     f"{load:.1f} at start on {os.cpu_count()} CPUs"},
            {"workload": f"read all {n:,} packed events", "rate": packed_read, "unit": "ev/s",
             "target_rate": 400_000, "baseline": loose_read, "ratio": packed_read / loose_read,
             "note": f"best of 3 fresh handles; {packed_cpu:,.0f} ev/s of CPU time; before compaction "
                     f"(loose): {loose_read:,.0f} ev/s"},
            {"workload": f"fsck --full of {n:,} packed events", "rate": fsck_rate, "unit": "ev/s",
             "target_rate": 300_000, "note": fsck_note},
            {"workload": f"read one tag's {HOT} events after compaction", "rate": HOT / tag_after, "unit": "ev/s",
             "baseline": HOT / tag_before, "ratio": tag_before / tag_after, "target": 1.0,
             "note": f"{tag_before * 1e3:.2f} ms before, {tag_after * 1e3:.2f} ms after"},
            {"workload": "disk of packs / events' own bytes", "rate": packs_disk / own, "unit": "x",
             "target_max": 1.5,
             "note": f"events {own / 1e6:.1f} MB; packs+idx {packs_disk / 1e6:.1f} MB; loose before "
                     f"{loose_disk / 1e6:.1f} MB (whole store); whole store after {store_disk / 1e6:.1f} MB "
                     f"({store_disk / own:.2f}x, log {n * 219 / 1e6:.1f} MB and index included)"},
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="ci")
    args = ap.parse_args()
    for row in run(args.size):
        extra = f"  (baseline {row['baseline']:,.0f}, ratio {row['ratio']:.2f})" if "baseline" in row else ""
        print(f"{row['workload']:<52} {row['rate']:>12,.2f} {row['unit']}{extra}")
        if row.get("note"):
            print(f"    {row['note']}")


if __name__ == "__main__":
    main()
