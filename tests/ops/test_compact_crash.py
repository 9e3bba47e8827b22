"""A compaction killed (or failing with EIO) at any file operation loses nothing: recovery then
fsck report a clean store, every event reads back as appended, and the bytes compaction was
setting aside (a dangling event, a stale temp file) are still in the store or in lost-found/."""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from backup_helpers import reap
from compact_helpers import contents, fill, recover_then_problems

from kroniko_ops import Event, EventStore, fileio
from kroniko_ops.ops.compact import compact

DANGLING = b'{"data":"never committed","id":"dangling-1","metadata":null,"tags":[],"type":"Z"}'
TEMP = b"half-written event"


def _template(root: Path) -> tuple[str, list[tuple[int, object]]]:
    """A store where one compaction does every step: packs loose events, merges three packs into
    one, removes a loose copy of a packed event, sets a dangling event aside and clears a stale
    temp file."""
    path = str(root / "template")
    fill(path, 8)
    assert compact(path).exit_code == 0
    for first, count in ((100, 5), (200, 14)):
        with EventStore(path, durable=False) as s:
            s.append([Event("T", {"i": first + i}, [f"k:{i % 3}"], id=f"more-{first + i}") for i in range(count)])
        if first == 100:
            assert compact(path).exit_code == 0
    with EventStore(path, durable=False) as s:
        raw = s.packs.get(3)
    assert raw is not None
    Path(path, "events", "ev-2.json").write_bytes(raw)  # what a compaction that died before removing it leaves
    old = time.time() - 30 * 86400
    dangling = Path(path, "events", "dangling-1.json")
    dangling.write_bytes(DANGLING)
    os.utime(dangling, (old, old))
    Path(path, "events", f".tmp-{_dead_pid()}-feed").write_bytes(TEMP)
    return path, contents(path)


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _compact(path: str) -> None:
    compact(path, max_packs=1, prune_after=86400)


def _count_ops(path: str) -> int:
    ops = [0]

    def count(op: str, p: str) -> None:
        ops[0] += 1

    previous = fileio.set_fault_injector(count)
    try:
        _compact(path)
    finally:
        fileio.set_fault_injector(previous)
    return ops[0]


def _run_child(fn: Callable[[], None], timeout: float = 60) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn()
        except BaseException:
            code = 3
        os._exit(code)
    return reap(pid, timeout, "the compaction child")


def _kill_at(path: str, n: int) -> Callable[[], None]:
    def run() -> None:
        seen = [0]

        def die(op: str, p: str) -> None:
            seen[0] += 1
            if seen[0] == n:
                os._exit(9)  # as abrupt as SIGKILL: no cleanup, no flush

        fileio.set_fault_injector(die)
        _compact(path)

    return run


def _all_bytes(path: str) -> list[bytes]:
    return [Path(d, f).read_bytes() for d, _s, files in os.walk(path) for f in files]


def _assert_nothing_lost(path: str, expected: list[tuple[int, object]], label: str) -> None:
    # The old dangling event was there before: fsck names it until a compaction sets it aside.
    left = [p for p in recover_then_problems(path) if not p.startswith("dangling-event@None events/dangling-1.json")]
    assert left == [], label
    assert contents(path) == expected, label
    everything = _all_bytes(path)
    assert DANGLING in everything and TEMP in everything, label
    # and compaction completes from there
    assert compact(path, max_packs=1, prune_after=86400).exit_code == 0, label
    assert contents(path) == expected and recover_then_problems(path) == [], label


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[tuple[int, object]], int]:
    root = tmp_path_factory.mktemp("crash")
    path, expected = _template(root)
    probe = str(root / "probe")
    shutil.copytree(path, probe)
    total = _count_ops(probe)
    assert contents(probe) == expected
    return path, expected, total


def test_a_kill_at_every_step_of_a_compaction_loses_nothing(template: tuple[str, list[tuple[int, object]], int],
                                                            tmp_path: Path) -> None:
    path, expected, total = template
    assert total > 30  # packs, a merge, removals, set-asides: many steps
    for n in range(1, total + 1):
        work = str(tmp_path / f"kill-{n}")
        shutil.copytree(path, work)
        code = _run_child(_kill_at(work, n))
        assert code == 9, f"op {n}: the child ended with {code} before being killed"
        _assert_nothing_lost(work, expected, f"killed at op {n} of {total}")
        shutil.rmtree(work)


def test_an_io_error_at_every_step_fails_the_compaction_cleanly(template: tuple[str, list[tuple[int, object]], int],
                                                                tmp_path: Path) -> None:
    path, expected, total = template
    for n in range(1, total + 1, 3):
        work = str(tmp_path / f"eio-{n}")
        shutil.copytree(path, work)
        def fail(op: str, p: str, n: int = n, seen: list[int] = [0]) -> None:  # noqa: B006 - a fresh counter each n
            seen[0] += 1
            if seen[0] == n:
                raise OSError(errno.EIO, "injected I/O error", p)

        previous = fileio.set_fault_injector(fail)
        try:
            with pytest.raises(OSError):
                _compact(work)
        finally:
            fileio.set_fault_injector(previous)
        _assert_nothing_lost(work, expected, f"EIO at op {n} of {total}")
        shutil.rmtree(work)
