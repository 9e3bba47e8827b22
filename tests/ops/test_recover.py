"""recover: cut a dead writer's tail into lost-found/, catch the index up, set aside temp files of
dead processes; idempotent, interrupt-safe, and never touching damage to committed lines."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest
from fsck_helpers import assert_readable, build, dead_pid, flip, log_path, make_old
from fsck_workers import append_forever

from kroniko_ops import DurabilityError, Event, EventStore, LegacyStore, StoreNotFound, fsck, recover
from kroniko_ops.fileio import set_fault_injector
from kroniko_ops.index import Checkpoint, Index
from kroniko_ops.log import LINE_LEN


def _lost_found(store: str) -> list[Path]:
    return sorted(Path(store, "lost-found").iterdir())


def test_recover_cuts_a_torn_tail_into_lost_found_and_is_idempotent(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    expected = build(store)
    with open(log_path(store), "ab") as f:
        f.write(b"000000000013 half-written")
    report = recover(store)
    assert report.exit_code == 1
    assert [f.code for f in report.findings if f.repaired] == ["log-torn-tail"]
    assert log_path(store).stat().st_size == 12 * LINE_LEN
    [folder] = _lost_found(store)
    assert (folder / "append.log.tail").read_bytes() == b"000000000013 half-written"
    assert "torn or uncommitted tail" in (folder / "NOTE.txt").read_text()
    again = recover(store)
    assert again.exit_code == 0 and not [f for f in again.findings if f.severity != "info"]
    assert len(_lost_found(store)) == 1
    assert fsck(store).exit_code == 0
    assert_readable(store, expected)


def test_recover_sets_aside_temp_files_of_dead_processes_only(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    dead = Path(store, "events", f".tmp-{dead_pid()}-dead")
    live = Path(store, "events", f".tmp-{os.getpid()}-live")
    dead_index = Path(store, "index", f".tmp-{dead_pid()}-cp")
    for p in (dead, live, dead_index):
        p.write_bytes(b"partial")
    report = recover(store)
    assert report.exit_code == 1
    assert sorted(f.path for f in report.findings if f.code == "stale-temp-file") == sorted(
        [os.path.relpath(dead, store), os.path.relpath(dead_index, store)])
    assert live.exists() and not dead.exists() and not dead_index.exists()
    kept = [p.name for folder in _lost_found(store) for p in folder.iterdir()]
    assert dead.name in kept and dead_index.name in kept
    live.unlink()
    assert fsck(store).exit_code == 0


def test_recover_never_cuts_damage_to_committed_lines(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    expected = build(store)
    flip(log_path(store), 11 * LINE_LEN + 100)  # the last committed line: looks like a torn tail
    before = log_path(store).read_bytes()
    report = recover(store)
    assert report.exit_code == 4
    assert "log-bad-line" in report.counts()
    assert "restore" in report.findings[0].message
    assert log_path(store).read_bytes() == before
    assert_readable(store, expected, destroyed=(11, 12))


def test_recover_reports_damage_in_the_middle_of_the_log(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    flip(log_path(store), 3 * LINE_LEN + 20)
    before = log_path(store).read_bytes()
    report = recover(store)
    assert report.exit_code == 4 and "log-bad-line" in report.counts()
    assert log_path(store).read_bytes() == before


def test_recover_catches_the_index_up_without_listing_a_position_twice(tmp_path: Path) -> None:
    """A writer that died after appending index lines but before advancing the checkpoint."""
    store = str(tmp_path / "s")
    expected = build(store)
    index = Index(str(Path(store, "index")))
    cp = index.read_checkpoint()
    index.write_checkpoint(Checkpoint(10, min(cp.durable, 10), cp.boot), durable=False)
    report = recover(store)
    assert report.exit_code == 0
    assert "index-behind" in report.counts()
    assert index.read_checkpoint().written == 12
    assert fsck(store).exit_code == 0
    assert_readable(store, expected)


def test_recover_is_safe_to_interrupt_and_rerun(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    expected = build(store)
    with open(log_path(store), "ab") as f:
        f.write(b"x" * 300)

    def fail_truncate(op: str, path: str) -> None:
        if op == "truncate":
            raise OSError(5, "injected I/O error", path)

    previous = set_fault_injector(fail_truncate)
    try:
        with pytest.raises(DurabilityError):
            recover(store)
    finally:
        set_fault_injector(previous)
    assert fsck(store).exit_code == 4
    assert recover(store).exit_code == 1
    assert recover(store).exit_code == 0
    assert fsck(store).exit_code == 0
    assert_readable(store, expected)


def test_recover_after_writers_are_killed_leaves_a_clean_store(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store, durable=True)
    ctx = mp.get_context("spawn")
    for round_ in range(3):
        writer = ctx.Process(target=append_forever, args=(store, round_ % 2 == 0))
        writer.start()
        try:
            deadline = time.monotonic() + 30
            with EventStore(store, create=False) as reader:
                start = reader.head()
                while reader.head() < start + 20 and time.monotonic() < deadline:
                    time.sleep(0.01)
            time.sleep(0.01 * round_)
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.join(timeout=30)
        assert recover(store).exit_code in (0, 1)
        report = fsck(store)
        assert report.exit_code == 0, [f.as_json() for f in report.findings]
    with EventStore(store, create=False) as s:
        assert len(list(s.read())) == s.head()
        s.append(Event("After", {}))
    assert fsck(store).exit_code == 0


def test_recover_refuses_what_it_cannot_touch(tmp_path: Path, legacy_clean: str) -> None:
    with pytest.raises(StoreNotFound):
        recover(str(tmp_path / "absent"))
    with pytest.raises(LegacyStore):
        recover(legacy_clean)


def test_an_old_dangling_event_is_not_recovery_business(tmp_path: Path) -> None:
    """recover is light: an old dangling event stays for --repair or compaction."""
    store = str(tmp_path / "s")
    build(store)
    path = Path(store, "events", "ev-9999.json")
    path.write_bytes(b'{"data":1,"id":"ev-9999","metadata":null,"tags":[],"type":"T"}')
    make_old(path)
    assert recover(store).exit_code == 0
    assert path.exists()


@pytest.mark.soak
def test_soak_kill_two_writers_at_random_then_recover(tmp_path: Path) -> None:
    import random

    store = str(tmp_path / "s")
    build(store, durable=True)
    ctx = mp.get_context("spawn")
    rng = random.Random(7)
    for round_ in range(15):
        writers = [ctx.Process(target=append_forever, args=(store, k == 0)) for k in range(2)]
        for w in writers:
            w.start()
        try:
            time.sleep(0.3 + rng.random() * 0.7)
        finally:
            for w in writers:
                os.kill(w.pid, signal.SIGKILL)
            for w in writers:
                w.join(timeout=30)
        assert recover(store).exit_code in (0, 1), round_
        report = fsck(store)
        assert report.exit_code == 0, (round_, [f.as_json() for f in report.problems])
    with EventStore(store, create=False) as s:
        assert len(list(s.read())) == s.head()
