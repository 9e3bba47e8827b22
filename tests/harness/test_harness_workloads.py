"""Workloads drawn by Hypothesis, run by real worker processes started together, checked.

Each example is a fresh store (half of them with 4 KiB segments, so segments roll and seal
under the workers) and 2-4 processes, each with its own list of reads (forwards, backwards,
from a start), conditional appends (read, decide, append with the read's head), unconditional
batches of 1-20 events and idempotent retries. Every read's result is checked as well as every
append. A failing example shrinks to a minimal schedule; the checker's message names the
operations involved. Most examples skip fsync: a process kill loses nothing the page cache
holds, so fsync changes no outcome here; one test runs durable workloads too.
"""

from __future__ import annotations

import os
import random
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops.harness.verify import check_store, recover_and_fsck
from kroniko_ops.harness.worker import create_store, run_workload
from kroniko_ops.harness.workload import EventPlan, Limits, OpPlan, Workload, workloads

SMALL = Limits(min_workers=2, max_workers=4, min_ops=1, max_ops=5, max_batch=20)
KILLING = Limits(min_workers=2, max_workers=4, min_ops=2, max_ops=6, max_batch=20, kill_chance=0.3, max_kill_at=10)
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


def _run(workload: Workload, ctx, kills=(), p6: bool = False) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="kroniko-wl-") as tmp:
        path = os.path.join(tmp, "store")
        create_store(path, workload)
        result = run_workload(path, workload, kills, ctx=ctx, workdir=tmp)
        found = []
        if p6:
            found += recover_and_fsck(path)
        found += check_store(path, result.history)
        return [v.render(result.history.t0) for v in found]


@settings(max_examples=100, **SETTINGS)
@given(workload=workloads(SMALL))
def test_concurrent_workloads_keep_every_property(workload: Workload, mp_context) -> None:
    violations = _run(workload, mp_context)
    assert not violations, "\n".join(violations)


@settings(max_examples=15, **SETTINGS)
@given(workload=workloads(Limits(min_workers=2, max_workers=3, max_ops=4, max_batch=8), durable=True))
def test_durable_workloads_keep_every_property(workload: Workload, mp_context) -> None:
    violations = _run(workload, mp_context, p6=True)
    assert not violations, "\n".join(violations)


@settings(max_examples=50, **SETTINGS)
@given(workload=workloads(KILLING), kill_seed=st.integers(0, 2**32 - 1), rate=st.sampled_from([0.0, 0.5, 1.0]))
def test_killed_workers_leave_a_recoverable_store(workload: Workload, kill_seed: int, rate: float,
                                                  mp_context) -> None:
    """SIGKILLs by the parent at random moments, and by workers on themselves in the middle of a
    commit (at a drawn file operation); then recover + fsck are clean and 1-5 hold."""
    rng = random.Random(kill_seed)
    kills = [(w, rng.uniform(0, 0.03)) for w in range(len(workload.workers)) if rng.random() < rate]
    violations = _run(workload, mp_context, kills, p6=True)
    assert not violations, "\n".join(violations)


def test_workers_killed_at_the_start_never_block_the_others(tmp_path, mp_context) -> None:
    """Regression (found by the soak): with a multiprocessing Event as the start signal, a worker
    SIGKILLed while waking up held the Event's lock forever and the others hung. The start is
    now a pipe: kill three of four workers the instant they start, many times over; the fourth
    always finishes its whole schedule."""
    ops = tuple(OpPlan("append", (EventPlan("A", ("s:0",)),)) for _ in range(3))
    for run in range(25):
        workload = Workload((ops, ops, ops, ops), run=f"k{run}")
        path = os.path.join(tmp_path, f"s{run}")
        create_store(path, workload)
        result = run_workload(path, workload, [(1, 0.0), (2, 0.0), (3, 0.0)], ctx=mp_context, timeout=60)
        survivor = [op for op in result.history.ops if op.worker == 0]
        assert [op.outcome for op in survivor] == ["committed"] * 3
        assert not check_store(path, result.history)
