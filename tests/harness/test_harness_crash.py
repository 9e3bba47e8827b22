"""Kill a writer (and a compaction, a backup, a recovery) before each of its file operations.

Each crash point copies a prepared store, forks a child that installs
``kroniko_ops.fileio.set_fault_injector`` to SIGKILL itself at the Nth mutating file operation,
and makes the call. Then: ``recover`` + ``fsck`` must report the store clean; the client's retry
of the same call (same ids) must land exactly once; one more append must work; and the checker
proves properties 1-5 and 7 over the whole store (every acknowledged event present once,
nothing of an unacknowledged batch half-visible, conditions honoured). The shapes include a
segment roll (seal, offset index, next segment) and an index catch-up inside the append.
"""

from __future__ import annotations

import pytest
from harness_helpers import rendered

from kroniko_ops.harness import scenarios
from kroniko_ops.harness.crash import crash_sweep

CI_SHAPES = scenarios.default_shapes()
# Where a kill must land for the sweep to mean anything: the log write, the group-commit fsync,
# advancing the synced position, sealing (offset index, rename, next segment) and cutting a
# dead writer's tail.
MUST_REACH = ("store.py", "(_write)", "(fsync_log)", "synced.py", "(publish_idx)", "(create_next)",
              "(seal_and_roll)", "(_cut)", "(set_aside)")


def test_every_file_operation_of_an_append_is_a_safe_place_to_die(sweep_dir) -> None:
    report = crash_sweep(CI_SHAPES, sweep_dir, recover=True)
    assert report.points >= 100, report.summary()
    assert report.killed == report.points, "every crash point must really kill the writer"
    assert set(report.per_shape) == {s.name for s in CI_SHAPES}
    missed = [m for m in MUST_REACH if not any(m in site for site in report.sites)]
    assert not missed, f"no kill landed in {missed}: {sorted(report.sites)}"
    assert not report.violations, f"{report.summary()}\n{rendered(report.violations)}"


@pytest.mark.parametrize("shape", scenarios.maintenance_shapes(), ids=lambda s: s.name)
def test_maintenance_can_be_killed_at_any_step(shape, sweep_dir) -> None:
    """Compaction, backup and recovery killed before every other one of their file operations
    (every one in the soak); recover + fsck are then clean, the operation reruns fine, and no
    event changed."""
    report = crash_sweep([shape], sweep_dir, stride=2)
    assert report.points >= 5 and report.killed == report.points, report.summary()
    assert not report.violations, f"{report.summary()}\n{rendered(report.violations)}"
