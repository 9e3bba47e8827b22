"""Backups taken while another process appends (and another compacts) hold one consistent head:
a batch boundary, with every event up to it, byte for byte what the store holds there."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest
from backup_helpers import SEGMENT, contents, fill, reap

from kroniko_ops import DurabilityError, Event, EventStore, compact
from kroniko_ops.ops.backup import backup, restore, snapshot, verify_backup


def _appender(src: str, stop: str) -> None:  # pragma: no cover - runs in a child
    b = 0
    while not os.path.exists(stop) and b < 5000:
        # A handle whose append failed says "nothing was committed, open a new EventStore and
        # retry": an application does exactly that (the engine can lose a race with compaction
        # while sealing; reported to the engine's owner).
        try:
            with EventStore(src, durable=False, segment_bytes=SEGMENT) as s:
                while not os.path.exists(stop) and b < 5000:
                    size = 1 + b % 4
                    s.append([Event("E", {"b": b, "k": k, "n": size}, [f"b:{b % 5}"]) for k in range(size)])
                    b += 1
        except DurabilityError:
            continue


def _compactor(src: str, stop: str) -> None:  # pragma: no cover - runs in a child
    while not os.path.exists(stop):
        compact(src, durable=False)


def _fork(fn, *args: str) -> int:  # type: ignore[no-untyped-def]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn(*args)
        except BaseException:
            code = 1
            with open(args[-1] + f".{fn.__name__}.err", "w") as f:
                f.write(traceback.format_exc())
        os._exit(code)
    return pid


def _errors(stop: str) -> str:
    folder = os.path.dirname(stop)
    return "".join(open(os.path.join(folder, n)).read() for n in os.listdir(folder) if n.endswith(".err"))


def test_backups_during_appends_and_compaction_are_consistent(tmp_path: Path) -> None:
    src, stop = str(tmp_path / "src"), str(tmp_path / "stop")
    with EventStore(src, durable=False, segment_bytes=SEGMENT) as s:
        s.append(Event("Start"))
    pids = [_fork(_appender, src, stop), _fork(_compactor, src, stop)]
    backups = []
    try:
        previous = None
        i = 0
        while i < 12 or (i < 300 and backups[-1][1] < 1500):  # until the log spans many segments and packs
            dest = str(tmp_path / (f"b{i}.tar" if i % 2 else f"b{i}"))
            report = backup(src, dest, archive=bool(i % 2), durable=False, incremental_from=previous)
            assert report.exit_code == 0
            backups.append((dest, report.head))
            previous = dest if i % 3 else None
            i += 1
    finally:
        open(stop, "w").close()
        statuses = [reap(pid, 120, "a writer or compactor") for pid in pids]
    assert statuses == [0, 0], _errors(stop)
    everything = contents(src)
    assert backups[-1][1] > backups[0][1]  # the appender made progress while backups ran
    assert os.listdir(os.path.join(src, "packs"))
    for dest, head in dict(backups[:: max(1, len(backups) // 10)] + backups[-1:]).items():
        assert verify_backup(dest).exit_code == 0, dest
        target = str(tmp_path / ("r-" + os.path.basename(dest)))
        assert restore(dest, target, durable=False).exit_code == 0
        got = contents(target)
        assert got == everything[:head]
        last = got[-1][2]
        if head > 1:
            assert last["k"] == last["n"] - 1, f"{dest}: head {head} is inside a batch"


def test_segments_compacted_away_between_listing_and_opening_are_found_in_the_pack(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compaction removes the listed sealed segments right after backup lists them: backup lists
    again and copies the pack instead, at the same head."""
    src = str(tmp_path / "src")
    fill(src, 60)
    real = snapshot._listing
    calls = []

    def listing_then_compact(lay):  # type: ignore[no-untyped-def]
        got = real(lay)
        if not calls:
            assert compact(src, durable=False).exit_code == 0
        calls.append(got)
        return got

    monkeypatch.setattr(snapshot, "_listing", listing_then_compact)
    report = backup(src, str(tmp_path / "b"), durable=False)
    assert len(calls) == 2 and not calls[0][1] and calls[1][1]  # no pack at first, a pack then
    assert report.head == contents(src)[-1][0]
    assert os.listdir(tmp_path / "b" / "packs")
    assert verify_backup(str(tmp_path / "b")).exit_code == 0
    assert restore(str(tmp_path / "b"), str(tmp_path / "r"), durable=False).exit_code == 0
    assert contents(str(tmp_path / "r")) == contents(src)


def test_a_file_compacted_away_before_it_is_copied_makes_the_backup_start_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a few files stay open from planning to copying: a sealed segment compaction removes
    in between is found gone when it is opened again, and the backup starts again from a new
    snapshot (which copies the pack), at the same head."""
    src = str(tmp_path / "src")
    fill(src, 60)
    monkeypatch.setattr(snapshot, "PINNED", 0)
    real = snapshot.take
    taken = []

    def take_then_compact(root, lock_timeout=30.0):  # type: ignore[no-untyped-def]
        snap = real(root, lock_timeout)
        if not taken:
            assert compact(src, durable=False).exit_code == 0
        taken.append([p.kind for p in snap.parts])
        return snap

    monkeypatch.setattr(snapshot, "take", take_then_compact)
    report = backup(src, str(tmp_path / "b"), durable=False)
    assert len(taken) == 2 and "pack" not in taken[0] and "pack" in taken[1]
    assert report.head == contents(src)[-1][0]
    assert os.listdir(tmp_path / "b" / "packs")
    assert [x for x in os.listdir(tmp_path) if x.startswith(".tmp-")] == []
    assert verify_backup(str(tmp_path / "b")).exit_code == 0
    assert restore(str(tmp_path / "b"), str(tmp_path / "r"), durable=False).exit_code == 0
    assert contents(str(tmp_path / "r")) == contents(src)
