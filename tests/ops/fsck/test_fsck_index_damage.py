"""A damaged index database is a finding, never a crash (issue 16 item 3): every SQLite error on
the derived index becomes ``index-corrupt`` (exit 4), whatever page the damage hits and whichever
statement of the check meets it first; and no crash of the command line ever exits 0 or 1 (fsck's
"clean" and "all repaired")."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kroniko_ops import Event, EventStore, fsck, reindex

PAGE = 4096
CLI = [sys.executable, "-c", "from kroniko_ops.cli import main; main()"]  # the console script, in this venv


def _indexed_store(path: str) -> str:
    """A store of 2,000 events whose index was rebuilt by reindex (pages in a plain order);
    return the index database's path."""
    with EventStore(path, durable=False) as store:
        for b in range(50):
            store.append([Event("T", {"b": b, "k": k, "pad": "x" * 200}, [f"t:{b}-{k}", f"u:{k % 7}"],
                                {"causation_id": None}) for k in range(40)])
    reindex(path)
    [name] = [n for n in os.listdir(Path(path, "index")) if n.endswith(".sqlite3")]
    return str(Path(path, "index", name))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    path = str(tmp_path_factory.mktemp("index-damage") / "store")
    db = _indexed_store(path)
    return path, os.path.getsize(db) // PAGE


def _damaged_copy(template: tuple[str, int], dest: Path, page: int, seed: int) -> str:
    path = str(dest / f"p{page}-{seed}")
    shutil.copytree(template[0], path)
    [name] = [n for n in os.listdir(Path(path, "index")) if n.endswith(".sqlite3")]
    with open(Path(path, "index", name), "r+b") as f:
        f.seek(page * PAGE)
        f.write(random.Random(seed * 1000 + page).randbytes(PAGE))
    return path


def test_every_damaged_page_is_a_finding_never_a_crash(template: tuple[str, int], tmp_path: Path) -> None:
    # Before: a third of these raised sqlite3.DatabaseError out of fsck (and the CLI exited 1).
    pages = template[1]
    assert pages > 20
    for page in range(1, pages):
        path = _damaged_copy(template, tmp_path, page, 1)
        for kwargs in ({}, {"refs_only": True}, {"quick": True}, {"jobs": 2}):
            report = fsck(path, **kwargs)
            assert report.exit_code in (0, 4), (page, kwargs, report.findings)
            codes = {f.code for f in report.problems}
            if report.exit_code:
                assert codes <= {"index-corrupt", "index-missing-entry", "index-extra-entry",
                                 "index-checkpoint-mismatch", "index-checkpoint-ahead"}, (page, kwargs, codes)
            # The log's own checks still ran: a damaged index hides no event of the log.
            assert report.head == 2000
        shutil.rmtree(path)


def test_repair_rebuilds_any_damaged_index(template: tuple[str, int], tmp_path: Path) -> None:
    for page in range(1, template[1], 7):
        path = _damaged_copy(template, tmp_path, page, 2)
        repaired = fsck(path, repair=True)
        assert repaired.exit_code in (0, 1), (page, repaired.findings)
        assert fsck(path).exit_code == 0
        with EventStore(path) as store:
            assert len(list(store.read())) == 2000
        shutil.rmtree(path)


def test_the_command_line_says_index_corrupt_and_exits_4(template: tuple[str, int], tmp_path: Path) -> None:
    seen = set()
    for page in range(1, template[1], 3):
        path = _damaged_copy(template, tmp_path, page, 3)
        done = subprocess.run([*CLI, "fsck", path, "--json"], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode in (0, 4), (page, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        seen.add(done.returncode)
        shutil.rmtree(path)
    assert 4 in seen


_CRASH = """
import sys
def broken(*args, **kwargs):
    raise RuntimeError("a bug in a check")
import kroniko_ops.cli.maintenance_cmds as m
m.fsck_target = broken
from kroniko_ops.cli import main
sys.argv = ["kroniko-ops", "fsck", sys.argv[1]]
main()
"""


def test_an_unexpected_exception_exits_8_never_1(tmp_path: Path) -> None:
    # A bug injected into the check (the command's one library call raises): the CLI must not
    # let Python's default exit status 1 (fsck's "all repaired") stand for it.
    path = str(tmp_path / "store")
    EventStore(path).close()
    done = subprocess.run([sys.executable, "-c", _CRASH, path], capture_output=True, text=True, timeout=60)
    assert done.returncode == 8, done
    assert "internal error" in done.stderr and "a bug in a check" in done.stderr
