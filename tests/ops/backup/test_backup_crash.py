"""A backup or restore killed, or failing, at any file operation leaves the source untouched and
the destination absent or whole: never something that looks complete but is not."""

from __future__ import annotations

import errno
import itertools
import os
import shutil
from pathlib import Path

import pytest
from backup_helpers import KILLED, contents, count_ops, fill, killed_at, tree_digest

from kroniko_ops import compact, fileio
from kroniko_ops.errors import NothingWritten
from kroniko_ops.ops.backup import backup, restore, verify_backup


@pytest.fixture
def src(tmp_path: Path) -> str:
    path = str(tmp_path / "src")
    fill(path, 12)
    assert compact(path, durable=False).exit_code == 0
    fill(path, 6, start=12)
    return path


def _clear(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "archive"])
def test_a_kill_at_every_step_of_a_backup_leaves_dest_absent_or_whole(tmp_path: Path, src: str,
                                                                      archive: bool) -> None:
    base = str(tmp_path / "base")
    backup(src, base, durable=False)
    fill(src, 4, start=18)
    before = tree_digest(src)
    dest = str(tmp_path / ("b.tar" if archive else "b"))

    def run(where: str) -> None:
        backup(src, where, archive=archive)
        backup(src, where + "-inc", incremental_from=base, archive=archive)

    total = count_ops(lambda: run(str(tmp_path / "probe")))
    assert total > 10
    for n in itertools.count(1):
        assert n < 3 * total, "the runs never completed"
        status = killed_at(lambda: run(dest), n)
        assert status in (KILLED, 0), f"backup failed (not killed) at op {n}: exit {status}"
        assert tree_digest(src) == before, f"the source changed (kill at op {n})"
        for path in (dest, dest + "-inc"):
            if os.path.exists(path):
                assert verify_backup(path).exit_code == 0, f"{path} published but not whole (kill at op {n})"
                _clear(path)
        if status == 0:
            break
    # the leftovers of a killed run are swept by the next backup to the same destination
    assert killed_at(lambda: run(dest), total // 3) == KILLED
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-backup-")]
    report = backup(src, dest, archive=archive, durable=False)
    assert "backup-stale-temp" in report.counts()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(f".tmp-backup-{os.path.basename(dest)}-")]


def test_a_kill_at_every_step_of_a_restore_leaves_target_absent_or_whole(tmp_path: Path, src: str) -> None:
    b = str(tmp_path / "b.tar")
    backup(src, b, archive=True, durable=False)
    want = contents(src)
    target = str(tmp_path / "t")
    total = count_ops(lambda: restore(b, str(tmp_path / "probe")))
    for n in itertools.count(1):
        assert n < 3 * total, "the runs never completed"
        status = killed_at(lambda: restore(b, target), n)
        assert status in (KILLED, 0), f"restore failed (not killed) at op {n}: exit {status}"
        if os.path.exists(target):
            assert contents(target) == want, f"kill at op {n}"
            shutil.rmtree(target)
        if status == 0:
            break
    assert killed_at(lambda: restore(b, target), total // 2) == KILLED
    leftovers = [x for x in os.listdir(tmp_path) if x.startswith(".tmp-restore-t-")]
    assert len(leftovers) == 1 and not os.path.exists(target)  # a temp name: never taken for the store
    report = restore(b, target, durable=False)
    assert report.counts().get("restore-stale-temp") == 1, report.findings
    assert contents(target) == want


@pytest.mark.parametrize("op", ["restore", "backup-folder", "backup-archive"])
def test_an_io_error_at_any_step_fails_cleanly(tmp_path: Path, src: str, op: str) -> None:
    """Each mutating call fails once, in turn (EIO): the operation raises, leaves no temp name and
    no destination behind, and the next attempt succeeds."""
    b = str(tmp_path / "b")
    backup(src, b, durable=False)

    def run(where: str) -> object:
        if op == "restore":
            return restore(b, where)
        return backup(src, where, archive=op == "backup-archive")

    total = count_ops(lambda: run(str(tmp_path / "probe")))
    dest = str(tmp_path / "d")
    for n in range(1, total + 1):
        count = 0

        def fail(what: str, path: str, n: int = n) -> None:
            nonlocal count
            count += 1
            if count == n:
                raise OSError(errno.EIO, "injected", path)

        previous = fileio.set_fault_injector(fail)
        try:
            # An open that fails before anything is written is reported as NothingWritten.
            with pytest.raises((OSError, NothingWritten)):
                run(dest)
        finally:
            fileio.set_fault_injector(previous)
        if os.path.exists(dest):  # failed after publishing (the final folder fsync): it is whole
            assert count == total
            _clear(dest)
        assert [x for x in os.listdir(tmp_path) if x.startswith(".tmp-")] == [], f"leftover at op {n}"
    run(dest)
    assert os.path.exists(dest)
