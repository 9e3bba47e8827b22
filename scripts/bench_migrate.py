#!/usr/bin/env python3
"""Migration benchmarks: a generated Ruby-layout (format 1) store migrated into format 2.

    python scripts/bench_migrate.py [--size ci|full] [--dir DIR]

``full``: 100,000 shop events (target: >= 20,000 events/s for ``migrate``, durable at the end);
``ci``: 5,000. The legacy store is written by ``kroniko_ops.legacy.synth`` (the gem's layout,
byte for byte its event files) in a temporary folder on the same disk as the targets. Rows:

- ``migrate`` with the default bulk writer, made durable at the end (the figure the target is
  about), with the process CPU time per event beside it (the machine may be shared);
- ``migrate`` through ``EventStore.append`` (the engine writer), same bytes;
- ``migrate --dry-run`` (read, decide, encode; write nothing);
- legacy ``fsck`` (full);
- the baseline: creating and writing one 300-byte file per event on the same disk, the floor any
  one-file-per-event layout pays (the ratio says how close migrate gets to it).

``run(size)`` returns rows for ``scripts/bench.py``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kroniko_ops.legacy.check import check_legacy
from kroniko_ops.legacy.migrate import migrate
from kroniko_ops.legacy.synth import write_shop_store
from kroniko_ops.report import Report

SIZES = {"ci": 5_000, "full": 100_000}
TARGET_RATE = 20_000


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(fn: Any) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds, result) of ``fn()``."""
    c0, t0 = _cpu(), time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, _cpu() - c0, result


def bench_file_floor(folder: str, n: int) -> float:
    """Files per second: create, write 300 bytes, close, in one new folder (no fsync)."""
    os.makedirs(folder)
    payload = b"x" * 300
    t0 = time.perf_counter()
    for i in range(n):
        fd = os.open(os.path.join(folder, f"1795736064.{i:06d}-{uuid.uuid4()}.json"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        os.write(fd, payload)
        os.close(fd)
    return n / (time.perf_counter() - t0)


def run(size: str = "ci", base: str | None = None) -> list[dict[str, Any]]:
    """Run the migration benchmarks at ``size`` ("ci" or "full"); return the result rows."""
    n = SIZES[size]
    tmp = tempfile.mkdtemp(prefix="bench-migrate-", dir=base)
    rows: list[dict[str, Any]] = []
    try:
        legacy = os.path.join(tmp, "legacy")
        seconds, _, _ = _timed(lambda: write_shop_store(legacy, n, seed=1))
        print(f"generated {n:,} legacy events in {seconds:.1f}s", file=sys.stderr)
        floor = bench_file_floor(os.path.join(tmp, "floor"), n)
        shutil.rmtree(os.path.join(tmp, "floor"))

        wall, cpu, report = _timed(lambda: migrate(legacy, os.path.join(tmp, "bulk")))
        rate = n / wall
        rows.append({
            "workload": f"migrate {n:,} legacy events (bulk writer, durable at the end)", "rate": rate,
            "unit": "events/s", "target": TARGET_RATE, "ratio": round(rate / TARGET_RATE, 2),
            "cpu_us_per_event": round(cpu / n * 1e6, 1), "cpu_bound_rate": round(n / cpu),
            "baseline": round(floor), "baseline_ratio": round(rate / floor, 2),
            "note": f"exit {report.exit_code}; {cpu / n * 1e6:.0f} us CPU/event; baseline = bare file "
                    f"creation {floor:,.0f} files/s on the same disk",
        })
        shutil.rmtree(os.path.join(tmp, "bulk"))

        wall, cpu, report = _timed(lambda: migrate(legacy, os.path.join(tmp, "engine"), writer="engine"))
        rows.append({"workload": f"migrate {n:,} legacy events (through EventStore.append)", "rate": n / wall,
                     "unit": "events/s", "cpu_us_per_event": round(cpu / n * 1e6, 1),
                     "note": f"exit {report.exit_code}; same bytes as the bulk writer"})
        shutil.rmtree(os.path.join(tmp, "engine"))

        wall, cpu, report = _timed(lambda: migrate(legacy, os.path.join(tmp, "dry"), dry_run=True))
        rows.append({"workload": f"migrate --dry-run {n:,} legacy events", "rate": n / wall, "unit": "events/s",
                     "cpu_us_per_event": round(cpu / n * 1e6, 1), "note": "reads, decides, encodes; writes nothing"})

        def check() -> Report:
            report = Report("fsck", legacy)
            check_legacy(legacy, report, "full")
            return report

        wall, cpu, report = _timed(check)
        rows.append({"workload": f"fsck legacy store of {n:,} events (full)", "rate": n / wall, "unit": "events/s",
                     "cpu_us_per_event": round(cpu / n * 1e6, 1),
                     "note": f"exit {report.exit_code}, {report.figures.get('legacy_index_entries')} index entries"})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> None:
    """Command line: print one line per row."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="ci")
    parser.add_argument("--dir", default=None, help="Folder for the temporary stores (default: the system temp).")
    args = parser.parse_args()
    for row in run(args.size, args.dir):
        extra = {k: v for k, v in row.items() if k not in ("workload", "rate", "unit", "note")}
        print(f"{row['workload']}: {row['rate']:,.0f} {row['unit']}  {extra}  ({row['note']})")


if __name__ == "__main__":
    main()
