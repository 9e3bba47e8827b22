"""The index is derived: a reader never misses a committed event because the index is behind,
and the next writer catches it up to exactly what the log implies (no line lost, none twice)."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest
from engine_helpers import actual_index, all_events, expected_index, snapshot

from kroniko_ops import Event, EventStore, Query, QueryItem, StoreCorrupted
from kroniko_ops.index import BOOT_ID, Checkpoint

TYPES = ("A", "B", "C")
TAGS = ("t1", "t2", "cart:1", "../x")


@pytest.fixture
def filled(store: EventStore) -> EventStore:
    """Twelve events in five batches, with types and tags spread over them."""
    n = 0
    for size in (3, 1, 4, 2, 2):
        batch = []
        for _ in range(size):
            tags = [t for k, t in enumerate(TAGS) if (n >> k) & 1]
            batch.append(Event(TYPES[n % 3], {"n": n}, tags))
            n += 1
        store.append(batch)
    assert store.head() == 12
    return store


def _queries() -> list[Query]:
    out = [Query.all()]
    out += [Query([QueryItem(types=[t])]) for t in TYPES]
    out += [Query([QueryItem(tags=[t])]) for t in TAGS]
    out += [Query([QueryItem(types=[ty], tags=[t])]) for ty, t in itertools.product(TYPES, TAGS)]
    out += [Query([QueryItem(tags=["t1", "t2"])]), Query([QueryItem(tags=["t1"]), QueryItem(types=["C"])])]
    return out


def _check_reads(store: EventStore) -> None:
    """Every query returns exactly what a scan of all events gives."""
    everything = all_events(store)
    assert [p for p, _ in everything] == list(range(1, store.head() + 1))
    for query in _queries():
        want = [p for p, e in everything if query.matches(e.type, e.tags)]
        assert [e.position for e in store.read(query)] == want, query
        assert [e.position for e in store.read(query, backwards=True)] == want[::-1], query


def _cut_index(store: EventStore, keep: int) -> None:
    """Drop every index line for a position past ``keep`` (a crash after commit, before step 6)."""
    root = store.layout.index
    for rel, data in actual_index(store.path).items():
        lines = [ln for ln in data.splitlines(keepends=True) if int(ln[:12]) <= keep]
        Path(root, rel).write_bytes(b"".join(lines))


def _set_checkpoint(store: EventStore, written: int, durable: int, boot: str = BOOT_ID) -> None:
    store.index.write_checkpoint(Checkpoint(written, durable, boot), durable=False)


def _caught_up(store: EventStore) -> None:
    """After one more append, the index is exactly what the log implies."""
    head = store.append(Event("A", {"n": "late"}, ["t1", "late"]))
    assert store.index.read_checkpoint().written == head
    _check_reads(store)
    assert actual_index(store.path) == expected_index(all_events(store))


def test_index_lines_deleted_past_the_checkpoint(filled: EventStore) -> None:
    _cut_index(filled, 5)
    _set_checkpoint(filled, 5, 0)
    _check_reads(filled)
    _caught_up(filled)


def test_index_lines_present_past_the_checkpoint_are_not_doubled(filled: EventStore) -> None:
    # A crash after the index lines were appended but before the checkpoint moved.
    _set_checkpoint(filled, 5, 0)
    _check_reads(filled)
    _caught_up(filled)


def test_readers_do_not_trust_lines_past_the_checkpoint(filled: EventStore) -> None:
    # A wrong line past the checkpoint (position 12 does not carry this tag) must not be used.
    _set_checkpoint(filled, 11, 0)
    path = Path(filled.index.path("tags", "cart:1"))
    listed = {int(x) for x in path.read_bytes().split()}
    assert 12 not in listed
    with path.open("ab") as f:
        f.write(b"%012d\n" % 12)
    assert 12 not in [e.position for e in filled.read(Query([QueryItem(tags=["cart:1"])]))]
    # The writer's catch-up cuts stray lines only in the files that the events past the checkpoint
    # write to: a dead writer can leave lines nowhere else. A line anywhere else is damage, not a
    # crash; fsck reports it (index-extra-entry) and reindex repairs it.


def test_only_the_durable_checkpoint_is_trusted_after_a_reboot(filled: EventStore) -> None:
    # Another boot wrote through 12 but fsynced only through 4; a power loss then dropped some
    # unsynced lines and left a torn one.
    _cut_index(filled, 8)
    with open(filled.index.path("types", "A"), "ab") as f:
        f.write(b"0000000")
    _set_checkpoint(filled, 12, 4, boot="a-previous-boot")
    _check_reads(filled)
    _caught_up(filled)


def test_index_folder_deleted_is_rebuilt(filled: EventStore) -> None:
    shutil.rmtree(filled.layout.index)
    _check_reads(filled)
    _caught_up(filled)


def test_damaged_index_file_falls_back_to_the_log(filled: EventStore) -> None:
    Path(filled.index.path("tags", "t1")).write_bytes(b"this is not an index file at all\n")
    _check_reads(filled)


def test_checkpoint_ahead_of_the_log_stops_writers(filled: EventStore, tmp_path: Path) -> None:
    _set_checkpoint(filled, 40, 40)
    _check_reads(filled)  # readers cap the checkpoint at their head
    before = snapshot(str(tmp_path))
    with pytest.raises(StoreCorrupted) as info:
        filled.append(Event("A", 1))
    assert "reindex" in str(info.value)
    after = snapshot(str(tmp_path))
    assert {p: v for p, v in after.items() if "events" not in p} == {
        p: v for p, v in before.items() if "events" not in p}
    assert filled.head() == 12


def test_fast_store_reopened_durably_reads_the_same(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    with EventStore(path, durable=False) as fast:
        fast.append([Event("A", i, ["t1"] if i % 2 else []) for i in range(20)])
        want = all_events(fast)
    with EventStore(path) as durable:
        assert all_events(durable) == want
        assert [e.position for e in durable.read(Query([QueryItem(tags=["t1"])]))] == list(range(2, 21, 2))
        durable.append(Event("B", 0))
        assert actual_index(path) == expected_index(all_events(durable))


def test_durable_store_fsyncs_the_log_and_fast_store_never_fsyncs(tmp_path: Path) -> None:
    from kroniko_ops import fileio

    calls: list[tuple[str, str]] = []
    previous = fileio.set_fault_injector(lambda op, path: calls.append((op, path)))
    try:
        fast = EventStore(str(tmp_path / "fast"), durable=False)
        calls.clear()
        for i in range(3):
            fast.append([Event("A", i), Event("B", i)])
        list(fast.read())
        assert [c for c in calls if c[0] == "fsync"] == []
        durable = EventStore(str(tmp_path / "durable"))
        calls.clear()
        durable.append(Event("A", 1))
        synced = [path for op, path in calls if op == "fsync"]
        assert durable.layout.log in synced
        assert os.path.join(durable.path, "events") in synced
        calls.clear()
        list(durable.read())
        assert calls == []  # reads never write
        fast.close()
        durable.close()
    finally:
        fileio.set_fault_injector(previous)


def test_index_write_failing_after_commit_is_caught_up_exactly(filled: EventStore) -> None:
    # The append is committed when its log line is fsynced; an index write failing afterwards
    # (ENOSPC on one tag file) must neither fail the append nor leave the index wrong later.
    import errno

    from kroniko_ops import fileio

    failed: list[str] = []

    def full_disk(op: str, path: str) -> None:
        if op == "write" and os.sep + "tags" + os.sep in path and not failed:
            failed.append(path)
            raise OSError(errno.ENOSPC, "No space left on device", path)

    previous = fileio.set_fault_injector(full_disk)
    try:
        assert filled.append(Event("A", {"n": "committed"}, ["t1"])) == 13
    finally:
        fileio.set_fault_injector(previous)
    assert failed, "the injected failure did not happen"
    _check_reads(filled)
    _caught_up(filled)
