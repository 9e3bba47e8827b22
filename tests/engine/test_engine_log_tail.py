"""A dead writer's leftovers at the end of the active segment (a torn record, whole records
without a commit mark): invisible to readers, cut into lost-found by the next writer with their
bytes kept, nothing acknowledged lost. Damage to committed records is never cut."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine_helpers import (
    NO_CHANGE,
    active_bytes,
    active_path,
    append_raw,
    events_of,
    hand_records,
    lost_found,
    snapshot,
    tree_diff,
)

from kroniko_ops import Event, EventStore, Query, QueryItem, StoreCorrupted
from kroniko_ops.format import record, segment

LOST = Query([QueryItem(tags=["lost"])])


@pytest.fixture
def seeded(store: EventStore) -> EventStore:
    """Five committed events in two batches."""
    store.append([Event("A", i, ["old"], None, f"a-{i}") for i in range(3)])
    store.append([Event("B", i, ["old"], None, f"b-{i}") for i in range(3, 5)])
    return store


def _lost(n: int) -> list[Event]:
    return [Event("Lost", i, ["lost"], None, f"lost-{i}") for i in range(n)]


def _leave(store: EventStore, kind: str) -> bytes:
    """Leave the tail a dying writer leaves; return its bytes."""
    if kind == "torn record":
        data = hand_records(store.path, _lost(1))[:150]
    elif kind == "torn in the body":
        data = hand_records(store.path, _lost(1))[:-5]
    elif kind == "torn second record":
        whole = hand_records(store.path, _lost(2))
        data = whole[: len(whole) - 20]
    elif kind == "uncommitted records":
        data = hand_records(store.path, _lost(3), commit=False)
    elif kind == "garbage":
        data = b"half a record, not even a header"
    else:  # pragma: no cover
        raise AssertionError(kind)
    append_raw(store.path, data)
    return data


KINDS = ["torn record", "torn in the body", "torn second record", "uncommitted records", "garbage"]


@pytest.mark.parametrize("kind", KINDS)
def test_readers_ignore_a_dead_writers_tail(seeded: EventStore, kind: str) -> None:
    before = events_of(seeded)
    _leave(seeded, kind)
    for s in (seeded, EventStore(seeded.path, durable=seeded.durable)):
        assert s.head() == 5
        assert events_of(s) == before
        assert list(s.read(LOST)) == [] and list(s.read(start=6)) == []
        assert [e.position for e in s.read(backwards=True, limit=2)] == [5, 4]
        if s is not seeded:
            s.close()


@pytest.mark.parametrize("kind", KINDS)
def test_next_append_cuts_the_tail_into_lost_found(seeded: EventStore, kind: str) -> None:
    before = events_of(seeded)
    size = len(active_bytes(seeded.path))
    cut = _leave(seeded, kind)
    assert lost_found(seeded.path, "log-tail") == []
    assert seeded.append(Event("New", 1, ["new"], None, "new-1")) == 6
    (folder,) = lost_found(seeded.path, "log-tail")
    assert (folder / f"{segment.seg_name(1)}.tail").read_bytes() == cut
    note = (folder / "NOTE.txt").read_text()
    assert segment.seg_name(1) in note and str(size) in note
    after = events_of(seeded)
    assert after[:5] == before
    assert after[5:] == [(6, Event("New", 1, ("new",), None, "new-1"))]
    assert list(seeded.read(LOST)) == []
    # The log is whole records again, chained on from the last committed one.
    recs = list(record.iter_records(active_bytes(seeded.path)))
    assert [r.position for r in recs] == list(range(1, 7))
    assert recs[5].chain == record.chain_of(recs[4].chain, recs[5].event_hash) and recs[5].commit
    # Nothing more to cut the next time.
    assert seeded.append(Event("New", 2, ["new"])) == 7
    assert len(lost_found(seeded.path, "log-tail")) == 1


def test_a_new_handle_cuts_a_tail_left_by_another(seeded: EventStore) -> None:
    cut = _leave(seeded, "uncommitted records")
    with EventStore(seeded.path, durable=seeded.durable) as other:
        assert other.append(Event("New", 1)) == 6
    (folder,) = lost_found(seeded.path, "log-tail")
    assert (folder / f"{segment.seg_name(1)}.tail").read_bytes() == cut
    # The first handle goes on from the new head.
    assert seeded.append(Event("New", 2)) == 7
    assert [e.data for e in seeded.read(start=6)] == [1, 2]


def _damaged_committed_then_more(store: EventStore, where: str) -> None:
    """Two committed batches past the synced position (their writer died before advancing it),
    the first one damaged afterwards."""
    first = hand_records(store.path, _lost(2))
    recs = list(record.iter_records(first))
    rest = hand_records(store.path, [Event("Later", 0, ["lost"], None, "later-0")],
                        after=(recs[-1].position, recs[-1].chain))
    damaged = bytearray(first)
    at = {"header": 20, "checksum": 222, "commit mark": recs[1].offset + 208}[where]
    damaged[at] ^= 0x01
    append_raw(store.path, bytes(damaged) + rest)


@pytest.mark.parametrize("where", ["header", "checksum", "commit mark"])
def test_damage_to_committed_records_is_never_cut(seeded: EventStore, tmp_path: Path, where: str) -> None:
    # A whole committed record after bytes that do not verify cannot be a dead writer's tail (a
    # torn write leaves a prefix): cutting would hand acknowledged positions to other events.
    _damaged_committed_then_more(seeded, where)
    before = snapshot(str(tmp_path))
    with pytest.raises(StoreCorrupted, match="damaged"):
        seeded.append(Event("New", 1, ["new"]))
    with pytest.raises(StoreCorrupted):
        with EventStore(seeded.path, durable=seeded.durable) as other:
            other.append(Event("New", 1, ["new"]))
    assert tree_diff(before, snapshot(str(tmp_path))) == NO_CHANGE
    assert lost_found(seeded.path, "log-tail") == []
    assert seeded.head() == 5  # readers still read what was acknowledged


def test_an_empty_store_with_only_garbage_starts_at_one(tmp_path: Path) -> None:
    with EventStore(str(tmp_path / "s"), durable=False) as store:
        append_raw(store.path, b"half a record")
        assert store.head() == 0 and list(store.read()) == []
        assert store.append(Event("A", 1)) == 1
        (folder,) = lost_found(store.path, "log-tail")
        assert (folder / f"{segment.seg_name(1)}.tail").read_bytes() == b"half a record"


def test_a_torn_tail_in_a_rolled_segment_is_cut_there(tmp_path: Path) -> None:
    with EventStore(str(tmp_path / "s"), durable=False, segment_bytes=4096) as store:
        for i in range(30):
            store.append(Event("A", {"i": i, "pad": "p" * 300}, ["t"], None, f"a-{i}"))
        active = segment.parse_name(os.path.basename(active_path(store.path)))
        assert active is not None and active[0] > 1
        cut = hand_records(store.path, _lost(2), commit=False)
        append_raw(store.path, cut)
        assert store.append(Event("B", 0, ["t"])) == 31
        (folder,) = lost_found(store.path, "log-tail")
        assert (folder / f"{segment.seg_name(active[0])}.tail").read_bytes() == cut
        assert [e.position for e in store.read(Query([QueryItem(tags=["t"])]))] == list(range(1, 32))


@pytest.mark.parametrize("read", [{"start": 9, "limit": 1}, {"start": 1, "limit": 2}, {"backwards": True}])
def test_zeros_inside_the_synced_records_are_damage_never_another_event(tmp_path: Path, read: dict) -> None:
    # A disk that lost a page in the middle of the active segment: the records after the hole
    # must not be shown under the positions of those before it.
    path = str(tmp_path / "s")
    with EventStore(path) as store:
        for i in range(10):
            store.append(Event("T", {"i": i, "pad": "x" * 100}, ["t"]))
    seg = os.path.join(path, "log", segment.seg_name(1))
    fd = os.open(seg, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(400), 600)
    finally:
        os.close(fd)
    with EventStore(path) as store:
        with pytest.raises(StoreCorrupted, match="acknowledged records are missing"):
            list(store.read(**read))
        with pytest.raises(StoreCorrupted, match="fsck"):
            store.append(Event("After", 1))


@pytest.mark.parametrize("cut", [False, True], ids=["zeroed", "cut-short"])
def test_a_handle_that_read_before_the_disk_lost_records_never_reads_fewer(tmp_path: Path, cut: bool) -> None:
    # The handle learned the records' offsets before the disk lost the last batch: reading them
    # again must say so, not return the events before the hole as if they were all.
    path = str(tmp_path / "s")
    with EventStore(path) as store:
        for b in range(6):
            store.append([Event("T", {"b": b, "k": k, "pad": "x" * 100}, ["t"]) for k in range(2)])
        assert len(list(store.read())) == 12
        seg = os.path.join(path, "log", segment.seg_name(1))
        data = Path(seg).read_bytes().rstrip(b"\0")
        last = data.rfind(b"\n", 0, len(data) - 1)
        last = data.rfind(b"\n", 0, last) + 1  # the start of the last batch (its two records)
        if cut:
            os.truncate(seg, last)
        else:
            fd = os.open(seg, os.O_WRONLY)
            try:
                os.pwrite(fd, bytes(len(data) - last), last)
            finally:
                os.close(fd)
        for read in ({}, {"backwards": True}, {"start": 11, "limit": 1}, {"start": 5}):
            with pytest.raises(StoreCorrupted, match="acknowledged records are missing"):
                list(store.read(**read))
