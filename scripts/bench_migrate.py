#!/usr/bin/env python3
"""Migration benchmarks: a generated Ruby-layout (format 1) store migrated into format 3.

    python scripts/bench_migrate.py [--size ci|full] [--dir DIR] [--events N]

``full``: 100,000 shop events (target: >= 20,000 events/s for ``migrate``, durable at the end);
``ci``: 5,000; ``--events`` any count. The legacy store is written by ``kroniko_ops.legacy.synth``
(the gem's layout, byte for byte its event files) in a temporary folder on the same disk as the
targets. Rows:

- ``migrate``, made durable and renamed into place at the end (the figure the target is about),
  with the process CPU time per event beside it (the machine may be shared);
- ``migrate --dry-run`` (read, decide, encode; write nothing);
- legacy ``fsck`` (full);
- the baseline: opening and reading every legacy event file once, the floor any migration of a
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


def bench_read_floor(legacy: str) -> float:
    """Event files per second: open, read and close every file of ``events/`` once."""
    folder = os.path.join(legacy, "events")
    names = os.listdir(folder)
    t0 = time.perf_counter()
    for name in names:
        fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        os.read(fd, 1 << 20)
        os.close(fd)
    return len(names) / (time.perf_counter() - t0)


def run(size: str = "ci", base: str | None = None, events: int | None = None) -> list[dict[str, Any]]:
    """Run the migration benchmarks at ``size`` ("ci" or "full", or ``events`` events); return
    the result rows."""
    n = events or SIZES[size]
    tmp = tempfile.mkdtemp(prefix="bench-migrate-", dir=base)
    rows: list[dict[str, Any]] = []
    try:
        legacy = os.path.join(tmp, "legacy")
        seconds, _, _ = _timed(lambda: write_shop_store(legacy, n, seed=1))
        print(f"generated {n:,} legacy events in {seconds:.1f}s", file=sys.stderr)
        os.sync()  # a real legacy store is long on disk: its write-back must not be timed as migrate's
        floor = bench_read_floor(legacy)

        wall, cpu, report = _timed(lambda: migrate(legacy, os.path.join(tmp, "new")))
        rate = n / wall
        rows.append({
            "workload": f"migrate {n:,} legacy events (durable, published at the end)", "rate": rate,
            "unit": "events/s", "target": TARGET_RATE, "ratio": round(rate / TARGET_RATE, 2),
            "cpu_us_per_event": round(cpu / n * 1e6, 1), "cpu_bound_rate": round(n / cpu),
            "baseline": round(floor), "baseline_ratio": round(rate / floor, 2),
            "note": f"exit {report.exit_code}; {cpu / n * 1e6:.0f} us CPU/event; baseline = reading every legacy "
                    f"event file once, {floor:,.0f} files/s",
        })
        shutil.rmtree(os.path.join(tmp, "new"))

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
    parser.add_argument("--events", type=int, default=None, help="Number of events (overrides --size).")
    parser.add_argument("--dir", default=None, help="Folder for the temporary stores (default: the system temp).")
    args = parser.parse_args()
    for row in run(args.size, args.dir, args.events):
        extra = {k: v for k, v in row.items() if k not in ("workload", "rate", "unit", "note")}
        print(f"{row['workload']}: {row['rate']:,.0f} {row['unit']}  {extra}  ({row['note']})")


if __name__ == "__main__":
    main()
