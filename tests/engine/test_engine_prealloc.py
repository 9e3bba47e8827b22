"""Preallocated segments: a store's segments are written as zeros at their full size before any
record goes there, records end where the zeros begin (never at the file's size), a sealed
segment is trimmed to its records, the next segment is made ahead of time, and a full disk at
`init` or at a roll changes nothing (exit 8)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from engine_helpers import active_bytes, active_path, append_raw, as_other_boot, hand_records, lost_found, segments

from kroniko_ops import Event, EventStore, fileio, fsck
from kroniko_ops.errors import NothingWritten
from kroniko_ops.format import record, segment

SEG = 8192


def _fill(store: EventStore, until: int) -> None:
    """Append events until the active segment's records reach ``until`` bytes."""
    n = 0
    while len(active_bytes(store.path)) < until:
        store.append(Event("A", {"n": n, "pad": "x" * 300}, [f"t:{n % 3}"]))
        n += 1


def test_a_new_store_has_one_segment_of_zeros_at_its_full_size(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    EventStore(path, segment_bytes=SEG).close()
    data = Path(active_path(path)).read_bytes()
    assert len(data) == SEG and data == bytes(SEG)
    with EventStore(path) as s:
        assert s.head() == 0
        assert s.append(Event("A", 1)) == 1
    data = Path(active_path(path)).read_bytes()
    assert len(data) == SEG  # written over, not appended to
    recs = list(record.iter_records(data.rstrip(b"\0")))
    assert [r.position for r in recs] == [1] and data[recs[0].end:] == bytes(SEG - recs[0].end)


def test_sealed_segments_are_trimmed_and_the_next_one_is_made_ahead(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    with EventStore(path, segment_bytes=SEG) as s:
        _fill(s, SEG // 2 + 1)
        s.append(Event("A", "one more"))  # past half full: the next segment is made now
        spare = Path(path, "log", segment.SPARE_NAME)
        assert spare.read_bytes() == bytes(SEG)
        while len(segments(path)) < 3:
            s.append(Event("A", {"pad": "y" * 300}))
        head = s.head()
    firsts = segments(path)
    for first in firsts[:-1]:
        seal = segment.read_idx(os.path.join(path, "log", segment.idx_name(first)), first)
        assert os.path.getsize(os.path.join(path, "log", segment.seg_name(first))) == seal.size
        assert Path(path, "log", segment.seg_name(first)).read_bytes()[-1:] == b"\n"
    assert os.path.getsize(active_path(path)) == SEG
    with EventStore(path) as s:
        assert [e.position for e in s.read()] == list(range(1, head + 1))
    assert fsck(path).exit_code == 0


def test_bytes_past_a_zero_gap_are_found_after_a_reboot_and_set_aside(tmp_path: Path) -> None:
    """After a power cut, never-synced bytes may stick past zeros (pages written out of order):
    they are no records of the log, and the next writer sets them aside."""
    path = str(tmp_path / "s")
    with EventStore(path, segment_bytes=SEG) as s:
        s.append([Event("A", i) for i in range(3)])
    stray = hand_records(path, [Event("Lost", 1)])
    fd = os.open(active_path(path), os.O_WRONLY)
    try:
        os.pwrite(fd, stray, len(active_bytes(path)) + 1000)  # a gap of zeros, then a whole record
    finally:
        os.close(fd)
    as_other_boot(path)
    with EventStore(path) as s:
        assert s.append(Event("B", 1)) == 4
        assert [e.event.type for e in s.read()] == ["A", "A", "A", "B"]
    (folder,) = lost_found(path, "log-tail")
    assert stray in (folder / f"{segment.seg_name(1)}.tail").read_bytes()
    assert fsck(path).exit_code == 0


def test_the_end_of_the_records_is_not_the_file_size(tmp_path: Path) -> None:
    """A dead writer's bytes right after the records are cut and zeroed: the file keeps its size."""
    path = str(tmp_path / "s")
    with EventStore(path, segment_bytes=SEG) as s:
        s.append(Event("A", 1))
    append_raw(path, hand_records(path, [Event("Dead", 1)])[:-30])
    with EventStore(path) as s:
        assert s.append(Event("B", 2)) == 2
    assert os.path.getsize(active_path(path)) == SEG
    assert [r.position for r in record.iter_records(active_bytes(path))] == [1, 2]


def _enospc_on(match: str):  # type: ignore[no-untyped-def]
    def injector(op: str, where: str) -> None:
        if op == "write" and match in where:
            raise OSError(errno.ENOSPC, "No space left on device (injected)", where)
    return injector


def test_init_on_a_full_disk_exits_8_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    previous = fileio.set_fault_injector(_enospc_on(".seg"))
    try:
        with pytest.raises(NothingWritten) as info:
            EventStore(path, segment_bytes=SEG)
    finally:
        fileio.set_fault_injector(previous)
    assert info.value.exit_code == 8
    assert not os.path.exists(os.path.join(path, "FORMAT"))
    assert not os.path.exists(os.path.join(path, "log"))
    with EventStore(path, segment_bytes=SEG) as s:  # space again: init works
        assert s.append(Event("A", 1)) == 1


def test_a_roll_on_a_full_disk_changes_nothing_and_the_handle_goes_on(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    with EventStore(path, segment_bytes=SEG) as s:
        previous = fileio.set_fault_injector(_enospc_on("next.prealloc"))
        try:
            _fill(s, SEG - 600)  # the spare could not be made ahead: the appends went on
            head = s.head()
            before = sorted(os.listdir(os.path.join(path, "log")))
            with pytest.raises(NothingWritten) as info:
                s.append(Event("Big", {"pad": "z" * 1000}))
        finally:
            fileio.set_fault_injector(previous)
        assert info.value.exit_code == 8
        assert sorted(os.listdir(os.path.join(path, "log"))) == before  # no seal, no temp file left
        assert s.head() == head
        assert s.append(Event("Big", {"pad": "z" * 1000})) == head + 1  # space again: it rolls
        assert len(segments(path)) == 2
    assert fsck(path).exit_code == 0
