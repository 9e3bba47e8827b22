"""A backup killed at any file operation leaves the source untouched and DEST absent or whole."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest
from backup_helpers import KILLED, count_ops, fill, killed_at, problems, tree_digest

from kroniko_ops import backup, compact, verify_backup


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "archive"])
def test_a_kill_at_every_step_of_a_backup_damages_nothing(tmp_path: Path, archive: bool) -> None:
    src = str(tmp_path / "src")
    fill(src, 4)
    assert compact(src).exit_code == 0
    fill(src, 2, start=4)  # a pack and loose events: both copy paths
    base = str(tmp_path / "base")
    backup(src, base, durable=False)
    fill(src, 2, start=6)
    before = tree_digest(src)
    dest = str(tmp_path / ("b.tar" if archive else "b"))

    def run(where: str) -> None:
        backup(src, where, archive=archive, durable=True)
        backup(src, where + "-inc", incremental_from=base, archive=archive, durable=True)

    total = count_ops(lambda: run(str(tmp_path / "probe")))
    assert total > 5
    # op counts shift (each run sweeps the previous run's leftovers): go on until one run completes
    for n in itertools.count(1):
        assert n < 3 * total, "the runs never completed"
        status = killed_at(lambda: run(dest), n)
        assert status in (KILLED, 0), f"backup failed (not killed) at op {n}: exit {status}"
        assert tree_digest(src) == before, f"the source changed (kill at op {n})"
        for path in (dest, dest + "-inc"):
            if os.path.exists(path):
                assert verify_backup(path).exit_code == 0, f"{path} published but not whole (kill at op {n})"
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        if status == 0:
            break
    # the leftovers of a killed run are swept by the next backup to the same destination
    assert killed_at(lambda: run(dest), total // 3) == KILLED
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-backup-")]
    report = backup(src, dest, archive=archive, durable=False)
    assert verify_backup(dest).exit_code == 0
    assert "backup-stale-temp" in report.counts()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(f".tmp-backup-{os.path.basename(dest)}-")]
    assert problems(src) == []
