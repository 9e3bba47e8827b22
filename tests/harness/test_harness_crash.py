"""Kill a writer (and a compaction, a backup, a recovery) before each of its file operations.

Each crash point copies a prepared store, forks a child that installs
``kroniko_ops.fileio.set_fault_injector`` to SIGKILL itself at the Nth mutating file operation,
and makes the call. Then: ``recover`` + ``fsck`` must report the store clean; the client's retry
of the same call (same ids) must land exactly once; one more append must work; and the checker
proves properties 1-5 over the whole store (every acknowledged event present once, nothing of
an unacknowledged batch half-visible, conditions honoured).
"""

from __future__ import annotations

import pytest
from harness_helpers import rendered

from kroniko_ops.harness import maint, scenarios
from kroniko_ops.harness.crash import crash_sweep

CI_SHAPES = scenarios.default_shapes()


def test_every_file_operation_of_an_append_is_a_safe_place_to_die(sweep_dir, has_recover) -> None:
    report = crash_sweep(CI_SHAPES, sweep_dir)
    assert report.points >= 1000, report.summary()
    assert report.killed == report.points, "every crash point must really kill the writer"
    assert set(report.per_shape) == {s.name for s in CI_SHAPES}
    assert not report.violations, f"{report.summary()}\n{rendered(report.violations)}"
    if not has_recover:
        pytest.skip(f"{report.summary()}: properties 1-5 hold; property 6 needs recover/fsck")


@pytest.mark.parametrize("shape", scenarios.maintenance_shapes(), ids=lambda s: s.name)
def test_maintenance_can_be_killed_at_any_step(shape, sweep_dir, has_recover) -> None:
    """Compaction, backup and recovery killed before each of their file operations; recover +
    fsck are then clean, the operation reruns fine, and no event changed."""
    if not maint.available(shape.action) or not has_recover:
        pytest.skip(f"{shape.action} or recover/fsck not installed")
    report = crash_sweep([shape], sweep_dir, stride=1)
    assert report.points >= 10 and report.killed == report.points, report.summary()
    assert not report.violations, f"{report.summary()}\n{rendered(report.violations)}"
