"""The I/O-error sweep of the maintenance operations: every file operation of compaction,
backup, restore, reindex, recover and migration fails in turn (EIO and ENOSPC, once and from
then on), and no store is left damaged: its events are all there, what the operation made under
its final name is sound, and the operation then runs to the end."""

from __future__ import annotations

import logging

from kroniko_ops.harness.powerloss.iofaults import io_sweep
from kroniko_ops.harness.powerloss.simulate import OPERATIONS

MAINTENANCE = {"compact", "backup", "restore", "reindex", "recover", "migrate"}


def test_no_failed_file_operation_of_a_maintenance_operation_damages_a_store(sweep_dir: str) -> None:
    logging.getLogger("kroniko_ops").setLevel(logging.CRITICAL)
    figures = io_sweep(OPERATIONS, stride=2, scratch=sweep_dir)  # every other one: CI size
    assert set(figures) == MAINTENANCE
    for name, f in figures.items():
        print(f"io-errors {name}: {f.as_dict()}")
        assert f.cases >= 16 and len(f.sites) >= 3, (name, f.as_dict())
        assert f.corrupted == 0, "\n".join(f.failures[:5])
