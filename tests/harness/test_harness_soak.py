"""Full-size sweeps, deselected by default (run with ``-m soak``): every shape including the
large ones, every file operation, EIO and ENOSPC, once and from then on."""

from __future__ import annotations

import pytest
from harness_helpers import rendered

from kroniko_ops.harness import scenarios
from kroniko_ops.harness.crash import crash_sweep
from kroniko_ops.harness.faults import fault_sweep
from kroniko_ops.harness.torture import torture

pytestmark = pytest.mark.soak


def _shapes() -> list[scenarios.Shape]:
    return scenarios.default_shapes(full=True) + scenarios.maintenance_shapes()


def test_full_crash_sweep(sweep_dir) -> None:
    report = crash_sweep(_shapes(), sweep_dir)
    assert report.killed == report.points
    assert not report.violations, f"{report.summary()}\n{rendered(report.violations)}"


def test_full_fault_sweep(sweep_dir) -> None:
    report = fault_sweep(_shapes(), sweep_dir)
    assert not report.violations, f"{report.summary()}\n{rendered(report.violations)}"


def test_long_torture_with_small_segments(tmp_path) -> None:
    """Five minutes of torture on a store whose segments roll every dozen events."""
    report = torture(str(tmp_path / "t"), workers=4, duration=300, kill_rate=0.5, durable=False,
                     segment_bytes=4096)
    assert report.figures["violations"] == 0, "\n".join(f.message for f in report.findings)
