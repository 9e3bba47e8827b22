"""A restore killed at any file operation leaves the backups untouched and TARGET absent or a
complete, clean store."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

from backup_helpers import KILLED, count_ops, fill, killed_at, problems, same_prefix, tree_digest

from kroniko_ops import backup, restore


def test_a_kill_at_every_step_of_a_restore_damages_nothing(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 3)
    full = str(tmp_path / "full")
    backup(src, full, durable=False)
    head = fill(src, 3, start=3)
    inc = str(tmp_path / "inc.tar")
    backup(src, inc, incremental_from=full, archive=True, durable=False)
    before = (tree_digest(full), open(inc, "rb").read())
    target = str(tmp_path / "target")

    def run(where: str) -> None:
        restore(full, where, incrementals=[inc], durable=True)

    total = count_ops(lambda: run(str(tmp_path / "probe")))
    assert total > 40
    # op counts shift (each run sweeps the previous run's leftovers): go on until one run completes
    for n in itertools.count(1):
        assert n < 3 * total, "the runs never completed"
        status = killed_at(lambda: run(target), n)
        assert status in (KILLED, 0), f"restore failed (not killed) at op {n}: exit {status}"
        assert (tree_digest(full), open(inc, "rb").read()) == before, f"a backup changed (kill at op {n})"
        if os.path.exists(target):
            same_prefix(src, target, head)
            assert problems(target) == [], f"the restored store is not clean (kill at op {n})"
            shutil.rmtree(target)
        if status == 0:
            break
    assert killed_at(lambda: run(target), total // 2) == KILLED
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-restore-")]
    report = restore(full, target, incrementals=[inc], durable=False)
    assert report.exit_code == 0 and "restore-stale-temp" in report.counts()
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".tmp-")) == []
    same_prefix(src, target, head)
