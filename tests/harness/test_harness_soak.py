"""Full-size sweeps, deselected by default (run with ``-m soak``): every shape including the
large ones, every file operation, EIO and ENOSPC, once and from then on."""

from __future__ import annotations

import pytest
from harness_helpers import rendered

from kroniko_ops.harness import maint, scenarios
from kroniko_ops.harness.crash import crash_sweep
from kroniko_ops.harness.faults import fault_sweep

pytestmark = pytest.mark.soak


def _shapes() -> list[scenarios.Shape]:
    return scenarios.default_shapes(full=True) + [s for s in scenarios.maintenance_shapes()
                                                  if maint.available(s.action)]


def test_full_crash_sweep(sweep_dir) -> None:
    report = crash_sweep(_shapes(), sweep_dir)
    assert report.killed == report.points
    assert not report.violations, f"{report.summary()}\n{rendered(report.violations)}"


def test_full_fault_sweep(sweep_dir) -> None:
    report = fault_sweep(_shapes(), sweep_dir)
    assert not report.violations, f"{report.summary()}\n{rendered(report.violations)}"
