"""The checker catches broken engines in real runs: each mutant of ``kroniko_ops.harness.mutants``
(a subclass of EventStore with one deliberate bug) runs a workload in real worker processes, and
the checker must report the bug from the recorded history and the final log alone.

The workloads are built so that the bug must show: reads follow each worker's own batches of
two (so a read's result is never empty and its head ends a multi-record batch), and the
conditional appends all read before any of them appends.
"""

from __future__ import annotations

import os

import pytest

from kroniko_ops.harness.race import run_race
from kroniko_ops.harness.verify import check_store
from kroniko_ops.harness.worker import create_store, run_workload
from kroniko_ops.harness.workload import EventPlan, OpPlan, Workload

PAIR = OpPlan("append", (EventPlan("A", ("s:0",)), EventPlan("B", ("s:1",))))
READ_ALL = OpPlan("read", query=())
READ_A = OpPlan("read", query=((("A",), ()),))
READS = (PAIR, READ_ALL, PAIR, READ_A, PAIR, READ_ALL)


def racing(tag: str) -> OpPlan:
    """Read "any A tagged ``tag``", think for 0.1 s (every worker has read by then), append one."""
    return OpPlan("conditional", (EventPlan("A", (tag,)),), ((("A",), (tag,)),), think_us=100_000)


CONDITIONS = (racing("s:2"), racing("s:3"))


def run_mutant(tmp_path, ctx, mutant: str | None, ops: tuple[OpPlan, ...], workers: int,
               segment_bytes: int | None = None) -> set[str]:
    """Run ``workers`` copies of ``ops`` on the mutant; the codes of the violations found."""
    workload = Workload(tuple(ops for _ in range(workers)), run=f"m{mutant}", segment_bytes=segment_bytes)
    path = os.path.join(tmp_path, "store")
    create_store(path, workload)
    result = run_workload(path, workload, ctx=ctx, workdir=str(tmp_path), mutant=mutant, timeout=60)
    return {v.code for v in check_store(path, result.history)}


@pytest.mark.parametrize(("mutant", "ops", "expected"), [
    ("peek-past-head", READS, {"read-wrong-result", "read-mid-batch"}),
    ("mid-batch-head", READS, {"read-mid-batch"}),
    ("drop-event", READS, {"read-wrong-result"}),
    ("ignore-condition", CONDITIONS, {"condition-violated"}),
])
def test_the_checker_catches_a_broken_engine(tmp_path, mp_context, mutant, ops, expected) -> None:
    found = run_mutant(tmp_path, mp_context, mutant, ops, workers=3)
    assert found & expected, f"{mutant} went unnoticed: {sorted(found)}"


@pytest.mark.parametrize("ops", [READS, CONDITIONS], ids=["reads", "conditions"])
def test_the_same_workloads_pass_on_the_real_engine(tmp_path, mp_context, ops) -> None:
    """The control: the workloads above find nothing on the real engine, with small segments."""
    assert run_mutant(tmp_path, mp_context, None, ops, workers=3, segment_bytes=4096) == set()


def test_the_race_catches_an_engine_that_ignores_conditions(tmp_path, mp_context) -> None:
    """The seed's race on the broken engine: in its first round every racer reads before any
    appends, so several win the same cart and the checker names the violated condition."""
    path = os.path.join(tmp_path, "store")
    create_store(path, Workload(()))
    result = run_race(path, mp_context, processes=4, rounds=2, mutant="ignore-condition")
    assert len(result.winners[0]) > 1
    assert "condition-violated" in {v.code for v in check_store(path, result.history)}
