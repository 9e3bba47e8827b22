"""An interrupted migration never looks complete; a finished one is a durable format-3 store that
the engine opens, reads and appends to as any other."""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from legacy_helpers import committed_lines, tree_digest
from migrate_helpers import assert_fsck_clean, temp_leftovers

from kroniko_ops import Event, EventStore
from kroniko_ops.cli import cli
from kroniko_ops.errors import DurabilityError, KronikoError, StoreCorrupted, StoreNotFound
from kroniko_ops.fileio import set_fault_injector
from kroniko_ops.layout import Layout
from kroniko_ops.legacy.convert import PLACEHOLDER_TYPE
from kroniko_ops.legacy.migrate import migrate
from kroniko_ops.legacy.synth import shop_events, write_shop_store
from kroniko_ops.legacy.target import Target
from kroniko_ops.model import property_tag

REAP_SECONDS = 60.0


def _reap(pid: int) -> int:
    """Wait for the child ``pid`` (at most ``REAP_SECONDS``); return its raw wait status."""
    deadline = time.monotonic() + REAP_SECONDS
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _kill_at(legacy: str, target: str, op: str, where: str, nth: int) -> None:
    """Run a migration in a forked child, stop it inside the ``nth`` file operation ``op`` on a
    path ending in ``where`` (the child signals, then waits), and SIGKILL it there."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: migrate, parking at the chosen operation until killed
        code = 1
        try:
            os.close(read_fd)
            calls = [0]

            def park(o: str, path: str) -> None:
                if o == op and path.endswith(where):
                    calls[0] += 1
                    if calls[0] == nth:
                        os.write(write_fd, b"x")
                        time.sleep(3600)

            set_fault_injector(park)
            migrate(legacy, target, batch_events=100, segment_bytes=8192)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], REAP_SECONDS)
        reached = bool(ready) and os.read(read_fd, 1) == b"x"
    finally:
        os.close(read_fd)
        os.kill(pid, signal.SIGKILL)
        status = _reap(pid)
    assert reached, f"the migration finished or failed before its {nth}th {op} on {where} (status {status})"
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _refused_everywhere(target: str) -> None:
    """Nothing under ``target`` is taken for a store: the engine, fsck and the reading commands
    all refuse it."""
    with pytest.raises((StoreNotFound, StoreCorrupted)):
        EventStore(target, create=False)
    runner = CliRunner()
    for argv in (["fsck", target], ["head", target], ["read", target]):
        res = runner.invoke(cli, argv)
        assert res.exit_code != 0, (argv, res.output)


@pytest.mark.parametrize("op, where, nth", [
    ("write", "active segment", 5),  # mid-way through the appends
    ("rename", ".idx", 2),  # while sealing a segment
    ("fsync", ".seg", 1),  # while making the new store durable
    ("rename", f"{os.sep}new", 1),  # just before the new store takes the target's name
])
def test_a_killed_migration_leaves_nothing_under_the_target(tmp_path: Path, op: str, where: str, nth: int) -> None:
    legacy = str(tmp_path / "legacy")
    write_shop_store(legacy, 600, seed=11)
    before = tree_digest(legacy)
    target = str(tmp_path / "new")
    _kill_at(legacy, target, op, where, nth)
    assert not os.path.lexists(target)
    assert len(temp_leftovers(str(tmp_path))) == 1  # the partial copy, under a temporary name
    _refused_everywhere(target)
    assert tree_digest(legacy) == before
    # Migrating again works, and names what the killed run left behind.
    report = migrate(legacy, target, durable=False)
    assert report.exit_code == 0 and report.head == 600
    stale = [f for f in report.findings if f.code == "stale-temp-file"]
    assert [os.path.basename(f.path) for f in stale] == temp_leftovers(str(tmp_path))
    assert stale[0].severity == "info"
    with EventStore(target, create=False) as s:
        assert [e.id for e in s.read()] == committed_lines(legacy)


def test_a_killed_migration_into_an_empty_folder_leaves_it_empty(tmp_path: Path) -> None:
    legacy = str(tmp_path / "legacy")
    write_shop_store(legacy, 300, seed=12)
    target = tmp_path / "new"
    target.mkdir()
    _kill_at(legacy, str(target), "fsync", ".seg", 1)
    assert os.listdir(target) == []
    _refused_everywhere(str(target))


def test_an_interrupted_move_into_a_mount_point_is_refused(tmp_path: Path) -> None:
    """A mount point is filled entry by entry, the log first and FORMAT last: stopped before
    FORMAT, the folder holds a log without FORMAT, which the engine refuses."""
    target = tmp_path / "mnt"
    target.mkdir()
    sink = Target(str(target), 1 << 20, inside=True)
    assert os.path.dirname(sink.path) == str(target)
    for i, (type_, data) in enumerate(shop_events(50, seed=3), 1):
        event = Event(type_, data, (), None, f"id-{i}")
        sink.add(event, ("", b""))

    def fail(op: str, path: str) -> None:
        if op == "rename" and path == str(target / "FORMAT"):
            raise OSError(errno.EIO, "injected", path)

    previous = set_fault_injector(fail)
    try:
        with pytest.raises(DurabilityError):
            sink.finish(50)
    finally:
        set_fault_injector(previous)
        sink.close()
    assert "log" in os.listdir(target) and "FORMAT" not in os.listdir(target)
    assert temp_leftovers(str(target)) == []
    for create in (False, True):
        with pytest.raises(StoreCorrupted):
            EventStore(str(target), create=create)


def test_a_mount_point_target_is_filled_in_place(tmp_path: Path, legacy_crashed: str) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    sink = Target(str(target), 1 << 20, inside=True)
    sink.add(Event("A", {"k": 1}, ("k:1",), None, "a-1"), ("", b""))
    sink.finish(1)
    sink.close()
    assert sorted(os.listdir(target)) == sorted(["FORMAT", "index", "locks", "log", "lost-found", "packs"])
    with EventStore(str(target), create=False) as s:
        assert [(e.position, e.id, list(e.tags)) for e in s.read()] == [(1, "a-1", ["k:1"])]


def test_the_migrated_store_is_durable_and_writable(tmp_path: Path) -> None:
    """Many sealed segments; a durable handle opened afterwards sees the whole head at once, reads
    every event back, and appends after it."""
    legacy = str(tmp_path / "legacy")
    write_shop_store(legacy, 1500, seed=13)
    target = str(tmp_path / "new")
    report = migrate(legacy, target, segment_bytes=16384, batch_events=64)
    assert report.exit_code == 0
    segments = [n for n in os.listdir(Layout(target).log_dir) if n.endswith(".seg")]
    assert len(segments) > 10
    assert temp_leftovers(str(tmp_path)) == []
    with EventStore(target, create=False) as s:
        assert s.head() == 1500
        events = list(s.read())
        assert [e.id for e in events] == committed_lines(legacy)
        assert all(sorted(e.tags) == sorted(property_tag(k, v) for k, v in e.data.items()
                                            if not isinstance(v, (list, dict))) for e in events)
        assert s.append(Event("After", {"cart_id": "cart-1"}, ("cart_id:cart-1",))) == 1501
    assert_fsck_clean(target)


def test_placeholders_and_lost_found_survive_in_many_segments(legacy_crashed: str, tmp_path: Path) -> None:
    target = str(tmp_path / "new")
    report = migrate(legacy_crashed, target, segment_bytes=4096, batch_events=7)
    assert report.exit_code == 1 and report.figures["placeholders"] == 1
    with EventStore(target, create=False) as s:
        assert s.head() == 121
        assert [e.type for e in s.read(limit=1)] == [PLACEHOLDER_TYPE]
    assert len(os.listdir(Layout(target).lost_found)) == 2
    assert_fsck_clean(target)


def test_refusals_write_nothing(legacy_clean: str, tmp_path: Path) -> None:
    before = tree_digest(str(tmp_path))
    with pytest.raises(KronikoError) as exc:
        migrate(legacy_clean, str(tmp_path / "new"), batch_events=0)
    assert exc.value.exit_code == 2
    (tmp_path / "store").mkdir()
    with EventStore(str(tmp_path / "store")) as s:  # a format-3 store is no migration target
        s.append(Event("A"))
    with pytest.raises(KronikoError, match="not empty") as exc:
        migrate(legacy_clean, str(tmp_path / "store"))
    assert exc.value.exit_code == 2
    with pytest.raises(KronikoError, match="already a kroniko-ops store"):
        migrate(str(tmp_path / "store"), str(tmp_path / "other"))
    assert {k for k in tree_digest(str(tmp_path)) if not k.startswith("store")} == set(before)


def test_a_target_filled_meanwhile_is_not_replaced(legacy_clean: str, tmp_path: Path) -> None:
    """Another process creating the target during the migration: the migration publishes nothing,
    removes its copy and leaves the other's files alone (exit 2)."""
    target = tmp_path / "new"

    def squat(op: str, path: str) -> None:
        if op == "rename" and path == str(target) and not target.exists():
            target.mkdir()
            (target / "theirs.txt").write_text("mine")

    previous = set_fault_injector(squat)
    try:
        with pytest.raises(KronikoError, match="no longer") as exc:
            migrate(legacy_clean, str(target), durable=False)
    finally:
        set_fault_injector(previous)
    assert exc.value.exit_code == 2
    assert os.listdir(target) == ["theirs.txt"] and temp_leftovers(str(tmp_path)) == []


def test_an_empty_legacy_store_becomes_an_empty_store(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy"
    for name in ("events", "index", "log"):
        (legacy / name).mkdir(parents=True)
    report = migrate(str(legacy), str(tmp_path / "new"))
    assert report.exit_code == 0 and report.head == 0
    with EventStore(str(tmp_path / "new"), create=False) as s:
        assert s.head() == 0 and s.append(Event("First")) == 1
    assert_fsck_clean(str(tmp_path / "new"))
