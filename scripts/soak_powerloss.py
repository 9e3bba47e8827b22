#!/usr/bin/env python3
"""Power-loss soak: record every operation many times and check crash states until a target count.

    python scripts/soak_powerloss.py [--states 100000] [--seed S] [--scratch /dev/shm] [--json OUT]

Each round records every operation of the simulator once (a new seed per round) and checks its
single-fault states plus random ones; it stops once ``--states`` were checked and prints, per
operation, runs, crash states, acknowledged events checked, events lost and violations. A failing
state's run folder is kept and printed with the command that rebuilds it. Exit 1 on any violation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kroniko_ops.harness.powerloss.simulate import OPERATIONS, Figures, simulate


def main() -> int:
    """Run rounds until the target is met; print the totals."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--states", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 1_000_000)
    ap.add_argument("--scratch", default=None, help="where runs are recorded (a tmpfs makes it faster)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.scratch:
        os.makedirs(args.scratch, exist_ok=True)  # a fresh tmpfs path is fine to name
    totals = {name: Figures() for name in OPERATIONS}
    start, round_no = time.monotonic(), 0
    while sum(f.states for f in totals.values()) < args.states:
        figures = simulate(OPERATIONS, seed=args.seed + round_no, runs=1, exhaustive_limit=2000, samples=300,
                           scratch=args.scratch)
        for name, f in figures.items():
            t = totals[name]
            t.runs, t.states, t.acked = t.runs + f.runs, t.states + f.states, t.acked + f.acked
            t.lost, t.violations = t.lost + f.lost, t.violations + f.violations
            t.failures.extend(f.failures)
        round_no += 1
        done = sum(f.states for f in totals.values())
        print(f"round {round_no} seed {args.seed + round_no - 1}: {done} states, "
              f"{sum(f.violations for f in totals.values())} violations, {time.monotonic() - start:.0f}s", flush=True)
    for name, f in totals.items():
        print(f"{name:12} {f.as_dict()}")
        for failure in f.failures[:3]:
            print(failure.describe())
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({n: f.as_dict() for n, f in totals.items()}))
    return 1 if any(f.violations for f in totals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
