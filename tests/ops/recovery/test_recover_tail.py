"""recover: after a writer died mid-write (simulated by writing half a record straight into the
active segment), after a failed fsync (the poison flag), with stale temp files; idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from recovery_helpers import active_segment, build, write_after_records

from kroniko_ops import DurabilityError, Event, EventStore, InvalidArgument, fsck, recover
from kroniko_ops.synced import SyncedFile


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recover_cuts_a_dead_writers_half_record(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    head = build(path)
    seg = active_segment(path)
    before = seg.read_bytes().rstrip(b"\0")
    write_after_records(seg, before[: len(before) // 3 or 100])  # a crash in the middle of a write()
    report = recover(path)
    assert report.exit_code == 1, report.findings
    assert [(f.code, f.repaired) for f in report.problems + [f for f in report.findings if f.repaired]] == [
        ("log-torn-tail", True)]
    assert report.head == head
    assert seg.read_bytes().rstrip(b"\0") == before
    tails = list(Path(path, "lost-found").glob("*-log-tail/*.tail"))
    assert len(tails) == 1
    assert recover(path).exit_code == 0  # idempotent
    assert fsck(path).exit_code == 0
    with EventStore(path) as store:
        assert store.append(Event("After", {}, [])) == head + 1


def test_recover_clears_the_poison_flag(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    head = build(path)
    synced = SyncedFile(os.path.join(path, "locks", "synced"))
    synced.poison()
    synced.close()
    with EventStore(path) as store, pytest.raises(DurabilityError):
        store.append(Event("Refused", {}, []))
    report = recover(path)
    assert report.exit_code == 1
    assert any(f.code == "store-poisoned" and f.repaired for f in report.findings)
    with EventStore(path) as store:
        assert store.append(Event("Accepted", {}, [])) == head + 1


def test_recover_sets_aside_dead_processes_temp_files(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    temp = Path(path, "packs", f".tmp-{_dead_pid()}-000000000001-000000000009.pack")
    temp.write_bytes(b"partial")
    live = Path(path, "packs", f".tmp-{os.getpid()}-in-progress")
    live.write_bytes(b"mine")
    report = recover(path)
    assert report.exit_code == 1
    assert [f.code for f in report.findings if f.repaired] == ["stale-temp-file"]
    assert not temp.exists() and live.exists()


def test_recover_refuses_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    other = tmp_path / "o"
    other.mkdir()
    (other / "x").write_text("x")
    with pytest.raises(InvalidArgument):
        recover(str(other))
    assert sorted(os.listdir(other)) == ["x"]
