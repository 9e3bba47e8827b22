"""Workloads are plain data drawn up front: bounded, replayable from a seed, ids unique."""

from __future__ import annotations

import pickle

from hypothesis import given, settings

from kroniko_ops.codec import check_id
from kroniko_ops.harness.workload import Limits, Workload, generate, workloads

LIMITS = Limits(min_workers=2, max_workers=8, min_ops=1, max_ops=10, max_batch=20, kill_chance=0.2)


def test_the_same_seed_gives_the_same_workload() -> None:
    assert generate(42, LIMITS) == generate(42, LIMITS)
    assert generate(42, LIMITS) != generate(43, LIMITS)


@settings(max_examples=100, deadline=None)
@given(workloads(LIMITS))
def test_drawn_workloads_respect_their_limits(workload: Workload) -> None:
    assert LIMITS.min_workers <= len(workload.workers) <= LIMITS.max_workers
    ids: list[str] = []
    for w, ops in enumerate(workload.workers):
        assert LIMITS.min_ops <= len(ops) <= LIMITS.max_ops
        for i, op in enumerate(ops):
            if op.kind == "retry":
                target = ops[op.retry_of]
                assert op.retry_of < i and target.kind in ("append", "conditional")
                assert workload.event_ids(w, i) == workload.event_ids(w, op.retry_of)
            elif op.kind in ("append", "conditional"):
                assert 1 <= len(op.events) <= LIMITS.max_batch
                ids += workload.event_ids(w, i)
            if op.kind in ("conditional", "read"):
                assert op.query is not None
            if op.kind != "read":
                assert op.start is None and not op.backwards
            if op.kill_at is not None:
                assert 1 <= op.kill_at <= LIMITS.max_kill_at
    assert len(ids) == len(set(ids))  # every batch's events are told apart in the log
    assert all(check_id(i) for i in ids)
    assert workload.segment_bytes in (None, 4096)
    assert pickle.loads(pickle.dumps(workload)) == workload  # it travels to worker processes as is


def test_some_workloads_roll_small_segments_and_read_in_every_direction() -> None:
    drawn = [generate(seed, LIMITS) for seed in range(40)]
    assert {w.segment_bytes for w in drawn} == {None, 4096}
    reads = [op for w in drawn for ops in w.workers for op in ops if op.kind == "read"]
    assert any(op.backwards for op in reads) and any(op.start is not None for op in reads)
