#!/usr/bin/env python3
"""Compaction benchmark.

    python scripts/bench_compact.py [--events N] [--segment-bytes B] [--dir DIR] [--fast]

Builds a store of N events (``EventStore(durable=False, segment_bytes=B)``, batches of 1000),
reads every event (a fresh handle), compacts it (durable unless ``--fast``) and reads again.
Prints the compaction rate, the read-all rates before and after, and the bytes on disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kroniko_ops import Event, EventStore
from kroniko_ops.ops.compact import compact


def build(path: str, n: int, segment_bytes: int) -> float:
    t0 = time.perf_counter()
    with EventStore(path, durable=False, segment_bytes=segment_bytes) as store:
        for start in range(0, n, 1000):
            store.append([Event("ItemAdded", {"sku": f"s{i}", "qty": i % 7, "price": 1999,
                                              "note": "a typical small event"}, [f"cart:{i // 10}"])
                          for i in range(start, min(n, start + 1000))])
    return n / (time.perf_counter() - t0)


def read_all(path: str, repeat: int = 3) -> float:
    best = 0.0
    for _ in range(repeat):
        with EventStore(path, create=False) as store:
            t0 = time.perf_counter()
            count = sum(1 for _ in store.read())
            best = max(best, count / (time.perf_counter() - t0))
    return best


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _s, files in os.walk(path) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--segment-bytes", type=int, default=1 << 20)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--fast", action="store_true", help="compact with durable=False (no fsync)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kroniko-bench-compact-", dir=args.dir)
    path = os.path.join(tmp, "store")
    try:
        built = build(path, args.events, args.segment_bytes)
        log_before = folder_bytes(os.path.join(path, "log"))
        before = read_all(path)
        t0 = time.perf_counter()
        report = compact(path, durable=not args.fast)
        seconds = time.perf_counter() - t0
        assert report.exit_code == 0, report.findings
        after = read_all(path)
        fig = report.figures
        moved = fig.get("events_packed", 0) + fig.get("events_rewritten", 0)
        print(f"built {args.events:,} events at {built:,.0f} ev/s (segments of {args.segment_bytes:,} bytes)")
        print(f"compact: {seconds:.2f} s, {args.events / seconds:,.0f} ev/s of the store "
              f"({moved:,} events packed or rewritten; {fig.get('segments_packed', 0)} segments, "
              f"{fig.get('packs_written', 0)} packs written), durable={not args.fast}")
        print(f"read all before: {before:,.0f} ev/s; after: {after:,.0f} ev/s ({after / before:.2f}x)")
        print(f"log before {log_before / 1e6:.1f} MB; sealed+packs {fig['bytes_before'] / 1e6:.1f} MB -> "
              f"{fig['bytes_after'] / 1e6:.1f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
