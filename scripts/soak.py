#!/usr/bin/env python3
"""The long soak of the proof harness: torture for N minutes, plus the full crash and fault sweeps.

    python scripts/soak.py --minutes 30 [--workers 4] [--kill-rate 0.5] [--segment 120]
                           [--segment-bytes 4096] [--seed X] [--dir DIR] [--sweeps [--sweep-dir DIR]]
                           [--json OUT]

Runs ``kroniko_ops.harness.torture.torture`` in segments of ``--segment`` seconds, each on a
fresh store in DIR (so the per-round recover + fsck stays cheap), until the minutes are up, and
adds up operations, commits, rejections, reads, kills, recoveries and violations. Every other
store is created with ``--segment-bytes`` (default 4096: log segments roll and seal every dozen
events under the workers), the others with the default size. With ``--sweeps`` it first runs
the full-size crash-point and I/O-fault sweeps (every shape, every file operation, EIO and
ENOSPC, once and sticky). Stores of a segment with a violation are kept; others are removed.
Exit 0 when no violation was found, 1 otherwise. Uses every core (workers are processes); run
it on a quiet machine.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kroniko_ops.harness import scenarios
from kroniko_ops.harness.crash import crash_sweep
from kroniko_ops.harness.faults import fault_sweep
from kroniko_ops.harness.torture import torture

TOTALS = ("rounds", "operations", "commits", "rejections", "unknown", "reads", "kills", "recoveries",
          "violations")


def sweeps(folder: str) -> dict[str, Any]:
    """The full crash and fault sweeps over every append and maintenance shape."""
    shapes = scenarios.default_shapes(full=True) + scenarios.maintenance_shapes()
    t = time.monotonic()
    crash = crash_sweep(shapes, folder)
    print(f"crash sweep: {crash.summary()} in {time.monotonic() - t:.0f}s", flush=True)
    for label, v in crash.violations[:20]:
        print(f"  {label}\n{v.render()}")
    t = time.monotonic()
    fault = fault_sweep(shapes, folder)
    print(f"fault sweep: {fault.summary()} in {time.monotonic() - t:.0f}s", flush=True)
    for label, v in fault.violations[:20]:
        print(f"  {label}\n{v.render()}")
    return {"crash_points": crash.points, "crash_violations": len(crash.violations), "fault_cases": fault.cases,
            "fault_sites": len(fault.sites), "fault_violations": len(fault.violations)}


def soak(minutes: float, workers: int, kill_rate: float, segment: float, seed: int, folder: str,
         durable: bool = True, segment_bytes: int = 4096) -> dict[str, Any]:
    """Torture in segments until ``minutes`` are up; the totals."""
    rng = random.Random(seed)
    totals: dict[str, Any] = dict.fromkeys(TOTALS, 0)
    totals.update(seed=seed, segments=0, failing=[])
    end = time.monotonic() + minutes * 60
    n = 0
    while (left := end - time.monotonic()) > 1:
        n += 1
        store = str(Path(folder) / f"segment-{n:04d}")
        seg_seed = rng.getrandbits(32)
        report = torture(store, workers=workers, duration=min(segment, left), kill_rate=kill_rate, seed=seg_seed,
                         durable=durable, segment_bytes=segment_bytes if n % 2 else None)
        fig = report.figures
        for key in TOTALS:
            totals[key] += fig[key]
        totals["segments"] += 1
        print(f"segment {n} seed {seg_seed}{' small segments' if n % 2 else ''}: "
              + " ".join(f"{k}={fig[k]}" for k in TOTALS), flush=True)
        if fig["violations"]:
            totals["failing"].append({"store": store, "seed": seg_seed, "round_seed": fig.get("failing_round_seed")})
            for f in report.findings:
                print(f.message)
        else:
            shutil.rmtree(store, ignore_errors=True)
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kill-rate", type=float, default=0.5)
    parser.add_argument("--segment", type=float, default=120.0, help="seconds per store")
    parser.add_argument("--segment-bytes", type=int, default=4096,
                        help="log segment size of every other store (small: rolls and seals under load)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-fsync", action="store_true",
                        help="skip fsync (a SIGKILL leaves the page cache intact, so kills test the same thing)")
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temp folder)")
    parser.add_argument("--sweeps", action="store_true", help="also run the full crash and fault sweeps first")
    parser.add_argument("--sweep-dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where the sweeps copy their stores (default: RAM, /dev/shm, when there is one)")
    parser.add_argument("--json", default=None, help="write the totals here")
    args = parser.parse_args()
    logging.getLogger("kroniko_ops").setLevel(logging.ERROR)  # faults make the engine warn by design
    seed = random.SystemRandom().getrandbits(32) if args.seed is None else args.seed
    folder = args.dir or tempfile.mkdtemp(prefix="kroniko-soak-")
    Path(folder).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result: dict[str, Any] = {}
    if args.sweeps:
        sweep_folder = tempfile.mkdtemp(prefix="kroniko-soak-sweeps-", dir=args.sweep_dir)
        try:
            result.update(sweeps(sweep_folder))
        finally:
            shutil.rmtree(sweep_folder, ignore_errors=True)
    result.update(soak(args.minutes, args.workers, args.kill_rate, args.segment, seed, folder,
                       durable=not args.no_fsync, segment_bytes=args.segment_bytes))
    result["seconds"] = round(time.monotonic() - started, 1)
    print("soak totals: " + " ".join(f"{k}={v}" for k, v in result.items() if k != "failing"))
    for failing in result["failing"]:
        print(f"  violation in {failing['store']} (segment seed {failing['seed']}, round seed {failing['round_seed']})")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if args.dir is None and not result["failing"]:
        shutil.rmtree(folder, ignore_errors=True)
    bad = result["violations"] + result.get("crash_violations", 0) + result.get("fault_violations", 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
