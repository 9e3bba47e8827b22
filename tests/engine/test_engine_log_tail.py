"""A torn or uncommitted log tail: invisible to readers, cut into lost-found by the next writer,
its bytes preserved there; committed events survive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine_helpers import append_raw, hand_lines

from kroniko_ops import Event, EventStore, Query, QueryItem, StoreCorrupted
from kroniko_ops.log import LINE_LEN, next_chain, read_line


@pytest.fixture
def seeded(store: EventStore) -> EventStore:
    """Five committed events in two batches."""
    store.append([Event("A", i, ["old"]) for i in range(3)])
    store.append([Event("B", i, ["old"]) for i in range(3, 5)])
    return store


def _tails(store: EventStore) -> list[Path]:
    """The log tails set aside in lost-found, oldest first."""
    root = Path(store.layout.lost_found)
    return sorted(p for p in root.iterdir() if p.name.endswith("-log-tail"))


def _damage(store: EventStore, kind: str) -> bytes:
    """Leave the kind of tail a dying writer leaves; return its bytes."""
    if kind == "garbage":
        data = b"\x00garbage that is no log line\n" * 3
    elif kind == "torn line":
        data = hand_lines(store, [Event("Lost", 1, ["lost"])])[:100]
    elif kind == "torn second line":
        data = hand_lines(store, [Event("Lost", 1, ["lost"]), Event("Lost", 2, ["lost"])])[: LINE_LEN + 150]
    elif kind == "uncommitted lines":
        data = hand_lines(store, [Event("Lost", i, ["lost"]) for i in range(3)], commit_last=False)
    elif kind == "bad CRC on the commit line":
        data = bytearray(hand_lines(store, [Event("Lost", 1, ["lost"]), Event("Lost", 2, ["lost"])]))
        data[-5] = ord("g")  # not hex: the commit line fails its CRC
        data = bytes(data)
    else:  # pragma: no cover
        raise AssertionError(kind)
    append_raw(store, data)
    return data


KINDS = ["garbage", "torn line", "torn second line", "uncommitted lines", "bad CRC on the commit line"]


@pytest.mark.parametrize("kind", KINDS)
def test_readers_ignore_a_torn_or_uncommitted_tail(seeded: EventStore, kind: str) -> None:
    before = [(e.position, e.event) for e in seeded.read()]
    _damage(seeded, kind)
    assert seeded.head() == 5
    result = seeded.read()
    assert result.head == 5
    assert [(e.position, e.event) for e in result] == before
    assert list(seeded.read(Query([QueryItem(tags=["lost"])]))) == []
    assert list(seeded.read(start=6)) == []
    assert [e.position for e in seeded.read(backwards=True, limit=2)] == [5, 4]
    # A new handle (a new process) sees the same.
    with EventStore(seeded.path, durable=seeded.durable) as other:
        assert other.head() == 5 and len(list(other.read())) == 5


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "bad CRC on the commit line"])
def test_next_append_cuts_the_tail_into_lost_found(seeded: EventStore, kind: str) -> None:
    before = [(e.position, e.event) for e in seeded.read()]
    cut = _damage(seeded, kind)
    assert _tails(seeded) == []
    assert seeded.append(Event("New", 1, ["new"])) == 6
    (folder,) = _tails(seeded)
    assert (folder / "append.log.tail").read_bytes() == cut
    note = (folder / "NOTE.txt").read_text()
    assert "append.log" in note and str(5 * LINE_LEN) in note
    assert os.path.getsize(seeded.layout.log) == 6 * LINE_LEN
    after = [(e.position, e.event) for e in seeded.read()]
    assert after[:5] == before
    assert [(p, e.type) for p, e in after[5:]] == [(6, "New")]
    assert list(seeded.read(Query([QueryItem(tags=["lost"])]))) == []
    # Nothing more to cut the next time.
    assert seeded.append(Event("New", 2, ["new"])) == 7
    assert len(_tails(seeded)) == 1


def test_a_damaged_commit_line_is_never_cut(seeded: EventStore) -> None:
    # A whole line with its commit mark that fails its CRC was committed and then damaged (a torn
    # write cannot leave intact framing): cutting it could drop an acknowledged batch and hand its
    # positions to other events, so appends are refused until a person repairs the store.
    _damage(seeded, "bad CRC on the commit line")
    log = open(seeded.layout.log, "rb").read()
    with pytest.raises(StoreCorrupted, match="damaged"):
        seeded.append(Event("New", 1, ["new"]))
    assert open(seeded.layout.log, "rb").read() == log
    assert _tails(seeded) == []


def test_a_new_handle_cuts_a_tail_left_by_another(seeded: EventStore) -> None:
    cut = _damage(seeded, "uncommitted lines")
    with EventStore(seeded.path, durable=seeded.durable) as other:
        assert other.append(Event("New", 1)) == 6
    (folder,) = _tails(seeded)
    assert (folder / "append.log.tail").read_bytes() == cut
    # The first handle goes on from the new head.
    assert seeded.append(Event("New", 2)) == 7
    assert [e.data for e in seeded.read(start=6)] == [1, 2]


def test_chain_continues_from_the_last_committed_line(seeded: EventStore) -> None:
    _damage(seeded, "uncommitted lines")
    seeded.append(Event("New", 1))
    fd = os.open(seeded.layout.log, os.O_RDONLY)
    try:
        five, six = read_line(fd, 5), read_line(fd, 6)
    finally:
        os.close(fd)
    assert six.chain == next_chain(five.chain, six.event_hash)
    assert six.commit


def test_an_empty_store_with_only_garbage_starts_at_one(tmp_path: Path) -> None:
    with EventStore(str(tmp_path / "s"), durable=False) as store:
        append_raw(store, b"half a line")
        assert store.head() == 0 and list(store.read()) == []
        assert store.append(Event("A", 1)) == 1
        assert (_tails(store)[0] / "append.log.tail").read_bytes() == b"half a line"
