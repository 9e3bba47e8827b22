"""A compaction killed (or failing with EIO) at any file operation loses nothing: every read
answers as before, and the next compaction finishes cleanly and leaves a sound store."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from compact_crash_helpers import count_ops, die_at, fork, reap
from compact_helpers import compact_dying_at, fill, fsck_problems, reads, soundness

from kroniko_ops.ops.compact import compact


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _compact(path: str) -> None:
    compact(path, block_bytes=4096)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, list[tuple[str, str]]]:
    """A store where one compaction does every step: clears a stale temp pack, packs sealed
    segments, merges the new pack with an older one, vacuums the index, prunes lost-found/."""
    root = tmp_path_factory.mktemp("crash")
    path = str(root / "template")
    fill(path, 120)
    compact(path)
    fill(path, 160, start=120)
    Path(path, "packs", f".tmp-{dead_pid()}-feed.pack").write_bytes(b"half a pack")
    old = Path(path, "lost-found", "20000101T000000Z-1-abcdef-torn-tail")
    old.mkdir()
    (old / "NOTE.txt").write_text("an old torn tail\n")
    (old / "tail.bin").write_bytes(b"t" * 100)
    [db] = [n for n in os.listdir(os.path.join(path, "index")) if n.endswith(".sqlite3")]
    con = sqlite3.connect(os.path.join(path, "index", db))
    con.execute("CREATE TABLE junk(x)")
    con.executemany("INSERT INTO junk VALUES (?)", [(b"z" * 1000,) for _ in range(1000)])
    con.commit()
    con.execute("DROP TABLE junk")
    con.commit()
    con.close()
    expected = reads(path)
    probe = str(root / "probe")
    shutil.copytree(path, probe)
    ops = count_ops(lambda: _compact(probe))
    assert reads(probe) == expected and soundness(probe) == []
    assert {op for op, _ in ops} >= {"open", "write", "fsync", "link", "unlink"}
    return path, expected, ops


def check_after(work: str, expected: dict, label: str) -> None:
    """Reads as before; the next compaction finishes cleanly and leaves a sound store."""
    assert reads(work) == expected, label
    report = compact(work)
    assert report.exit_code == 0, (label, report.findings)
    assert reads(work) == expected, label
    assert soundness(work) == [], label
    assert fsck_problems(work) == [], label
    assert not os.path.exists(os.path.join(work, "lost-found", "20000101T000000Z-1-abcdef-torn-tail")), label
    assert compact(work).figures.get("packs_written") is None, label  # nothing left to do


def test_a_kill_at_every_file_operation_of_a_compaction_loses_nothing(template: tuple[str, dict, list],
                                                                      tmp_path: Path) -> None:
    path, expected, ops = template
    assert len(ops) > 40
    for n in range(1, len(ops) + 1):
        work = str(tmp_path / f"kill-{n}")
        shutil.copytree(path, work)
        code = reap(fork(die_at(n, lambda work=work: _compact(work))), 60, "the compaction child")
        label = f"killed at op {n} of {len(ops)}: {ops[n - 1]}"
        assert code == 9, f"{label}: the child ended with {code} before being killed"
        # fsck accepts what a killed compaction leaves (inputs beside their pack are info), but
        # for an offset index left without its segment and temp files (the template has one)
        left = {p.split("@")[0] for p in fsck_problems(work)}
        assert left <= {"segment-orphan-index", "stale-temp-file"}, (label, left)
        check_after(work, expected, label)
        shutil.rmtree(work)


def test_an_io_error_at_any_file_operation_fails_the_compaction_cleanly(template: tuple[str, dict, list],
                                                                       tmp_path: Path) -> None:
    path, expected, ops = template
    for n in range(1, len(ops) + 1, 3):
        work = str(tmp_path / f"eio-{n}")
        shutil.copytree(path, work)
        seen = [0]

        def nth(op: str, p: str, n: int = n, seen: list[int] = seen) -> bool:
            seen[0] += 1
            return seen[0] == n

        compact_dying_at(work, nth, run=_compact)
        check_after(work, expected, f"EIO at op {n} of {len(ops)}: {ops[n - 1]}")
        shutil.rmtree(work)


def test_sigkill_at_random_moments_loses_nothing(template: tuple[str, dict, list], tmp_path: Path) -> None:
    path, expected, _ops = template
    rnd = random.Random(7)
    for k in range(12):
        work = str(tmp_path / f"sigkill-{k}")
        shutil.copytree(path, work)
        pid = fork(lambda work=work: _compact(work))
        time.sleep(rnd.uniform(0, 0.05))
        os.kill(pid, signal.SIGKILL)
        code = reap(pid, 60, "the compaction child")
        assert code in (0, -signal.SIGKILL), code
        check_after(work, expected, f"SIGKILL round {k}")
        shutil.rmtree(work)
