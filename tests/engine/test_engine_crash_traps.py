"""The crash traps an independent review listed, one test (or more) each:

1. an index ahead of the log after a power cut is cut back before a condition or an idempotent
   retry relies on it;
2. the synced position never goes backwards;
3. an interrupted seal (torn, missing or valid offset index, next segment not created) is
   finished by the next writer;
4. readers never see records past the synced position;
5. an fsync error seen by one process poisons the store for every process until recover;
6. after a reboot, the unsynced part of the log is verified record by record.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import queue
import threading
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import (
    NO_CHANGE,
    append_raw,
    as_other_boot,
    hand_records,
    last_record,
    lost_found,
    sealed,
    segments,
    snapshot,
    synced_state,
    tail_of,
    tree_diff,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import kroniko_ops
from kroniko_ops import (
    AppendCondition,
    DurabilityError,
    Event,
    EventStore,
    Query,
    QueryItem,
    StoreCorrupted,
    fileio,
)
from kroniko_ops.format import record, segment
from kroniko_ops.synced import SyncedFile, SyncedState

JOIN_TIMEOUT = 60.0  # a guard against a hang, not a speed assertion
PAID = Query([QueryItem(tags=["order:9"])])


# -- 1. an index ahead of the log -----------------------------------------------------------


def _power_cut_after_indexing(path: str) -> None:
    """Three events survive; a fourth (id ``pay-1``, tag ``order:9``) was written and indexed
    but the power cut took it back out of the log. The synced file is of the earlier boot."""
    with EventStore(path) as store:
        store.append([Event("Seed", i, ["cart:1"], None, f"seed-{i}") for i in range(3)])
        keep = len(Path(path, "log", segment.seg_name(1)).read_bytes().rstrip(b"\0"))
        store.append(Event("Paid", {"amount": 10}, ["order:9"], None, "pay-1"))
        with store.locked():
            store.flush_index()
        assert store.index.checkpoint()[0] == 4
    os.truncate(os.path.join(path, "log", segment.seg_name(1)), keep)
    rec = last_record(path)
    assert rec is not None and rec.position == 3
    as_other_boot(path, position=3, end=keep, chain=rec.chain)


def test_index_ahead_of_the_log_does_not_fail_a_condition(store_path: str) -> None:
    _power_cut_after_indexing(store_path)
    with EventStore(store_path) as store:
        # The vanished event would make this condition fail; it must succeed.
        assert store.append(Event("Paid", {"amount": 20}, ["order:9"], None, "pay-2"),
                            AppendCondition(PAID, after=3)) == 4
        assert [(e.position, e.id) for e in store.read(PAID)] == [(4, "pay-2")]
        assert store.index.checkpoint()[0] <= 4


def test_index_ahead_of_the_log_does_not_fake_an_idempotent_retry(store_path: str) -> None:
    _power_cut_after_indexing(store_path)
    with EventStore(store_path) as store:
        # The vanished id is not "already committed": the retry writes it anew.
        again = Event("Paid", {"amount": 10}, ["order:9"], None, "pay-1")
        assert store.append(again) == 4
        assert store.head() == 4
        assert [(e.position, e.event) for e in store.read(PAID)] == [(4, again)]
        assert store.append(again) == 4 and store.head() == 4  # and now it is


def test_index_ahead_of_the_log_is_invisible_to_readers(store_path: str) -> None:
    _power_cut_after_indexing(store_path)
    with EventStore(store_path) as store:
        assert list(store.read(PAID)) == []
        assert store.head() == 3
        assert [e.position for e in store.read(Query([QueryItem(tags=["cart:1"])]))] == [1, 2, 3]
        assert store.index.checkpoint()[0] == 3  # the reader's re-verification dropped the rows
        assert store.append(Event("Other", 1, ["order:8"])) == 4
        assert list(store.read(PAID)) == []


# -- 2. the synced position never goes backwards ----------------------------------------------


def test_a_late_lower_advance_is_a_no_op(tmp_path: Path) -> None:
    path = str(tmp_path / "synced")
    a, b = SyncedFile(path), SyncedFile(path)
    try:
        assert b.advance(10, 1, 1000, b"b" * 32)
        assert a.advance(7, 1, 700, b"a" * 32)  # A's fsync finished after B's: no step back
        state = a.read()
        assert state is not None and (state.position, state.end, state.chain) == (10, 1000, b"b" * 32)
        assert a.advance(10, 1, 1000, b"b" * 32) and b.read() == state
    finally:
        a.close()
        b.close()


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**6)), min_size=1, max_size=30))
def test_synced_position_is_the_highest_advance(tmp_path_factory: pytest.TempPathFactory,
                                               steps: list[tuple[int, int]]) -> None:
    path = str(tmp_path_factory.mktemp("synced") / "synced")
    handles = [SyncedFile(path) for _ in range(3)]
    try:
        top = None
        for who, pos in steps:
            assert handles[who].advance(pos, 1, pos * 3, pos.to_bytes(32, "big"))
            top = pos if top is None else max(top, pos)
            state = handles[(who + 1) % 3].read()
            assert state is not None and state.position == top
            assert state.end == top * 3 and state.chain == top.to_bytes(32, "big")  # one value, never mixed
    finally:
        for h in handles:
            h.close()


def test_a_poisoned_position_does_not_advance(tmp_path: Path) -> None:
    path = str(tmp_path / "synced")
    a = SyncedFile(path)
    try:
        a.advance(5, 1, 50, bytes(32))
        a.poison()
        assert not a.advance(9, 1, 90, bytes(32))
        state = a.read()
        assert state is not None and state.poisoned and state.position == 5
        a.reset(SyncedState(9, 1, 90, bytes(32)))
        state = a.read()
        assert state is not None and not state.poisoned and state.position == 9 and a.current(state)
    finally:
        a.close()


def test_a_writer_behind_an_fsync_in_progress_waits_for_it_instead_of_its_own(tmp_path: Path) -> None:
    """Group commit: while one writer's fsync runs, a writer whose batch that fsync covers (its
    ``logend`` was read before the fsync began) waits for it and returns without an fsync of its
    own. Parallel fsyncs of an overwritten file each flush the disk: with eight writers nearly
    every append paid its own."""
    path = str(tmp_path / "synced")
    a, b = SyncedFile(path), SyncedFile(path)
    chain = b"c" * 32
    syncing, go = threading.Event(), threading.Event()
    b_syncs: list[int] = []

    def slow_sync() -> None:
        syncing.set()
        assert go.wait(10)

    try:
        a.advance(2, 1, 200, chain)
        b.publish_end(5, 1, 500, chain)  # B's batch (positions 4..5) is written; A's (3) before it
        leader = threading.Thread(target=lambda: a.commit(3, 1, 300, chain, slow_sync, True))
        leader.start()
        assert syncing.wait(10)
        follower_done: list[bool] = []
        follower = threading.Thread(
            target=lambda: follower_done.append(b.commit(5, 1, 500, chain, lambda: b_syncs.append(1), True)))
        follower.start()
        follower.join(0.2)
        assert follower.is_alive()  # it waits for the fsync in progress...
        go.set()
        leader.join(10)
        follower.join(10)
        assert follower_done == [True] and b_syncs == []  # ...which covered its batch: no fsync of its own
        state = b.read()
        assert state is not None and state.position == 5
    finally:
        go.set()
        a.close()
        b.close()


# -- 3. an interrupted seal -------------------------------------------------------------------


def _seal_interrupted(path: str) -> tuple[int, list[Event]]:
    """Fill 4096-byte segments, then crash an append right after it published the full
    segment's offset index, before the next segment exists. Returns that segment's first
    position and every committed event."""
    events: list[Event] = []
    with EventStore(path, segment_bytes=4096) as store:
        while len(segments(path)) < 3 or len(Path(path, "log", segment.seg_name(
                segments(path)[-1])).read_bytes().rstrip(b"\0")) < 3000:
            batch = [Event("A", {"n": len(events) + i, "pad": "x" * 300}, [f"n:{len(events) + i}"], None,
                           f"a-{len(events) + i}") for i in range(2)]
            store.append(batch)
            events.extend(batch)
        full = segments(path)[-1]
        nxt = store.head() + 1

        def crash(op: str, where: str) -> None:
            # The preallocated next segment takes its name last: crash there.
            if op == "rename" and where.endswith(segment.seg_name(nxt)):
                raise OSError(errno.EIO, "injected: power cut while sealing", where)

        previous = fileio.set_fault_injector(crash)
        try:
            with pytest.raises(DurabilityError, match=r"[Nn]othing new was committed"):
                store.append(Event("A", {"pad": "y" * 3000}, ["lost"]))
        finally:
            fileio.set_fault_injector(previous)
    assert segment.idx_name(full) in os.listdir(os.path.join(path, "log"))
    assert segments(path)[-1] == full
    return full, events


@pytest.mark.parametrize("idx", ["valid", "torn", "deleted"])
def test_the_next_append_finishes_an_interrupted_seal(store_path: str, idx: str) -> None:
    full, events = _seal_interrupted(store_path)
    idx_path = Path(store_path, "log", segment.idx_name(full))
    original = idx_path.read_bytes()
    if idx == "torn":
        idx_path.write_bytes(original[: len(original) // 2])
    elif idx == "deleted":
        idx_path.unlink()
    with EventStore(store_path) as store:
        # Readers are not disturbed by the half-done seal.
        assert [e.event for e in store.read()] == events
        head = store.head()
        # Too big for what is left of the full segment: whichever state the seal is in, it rolls.
        assert store.append(Event("B", {"after": "seal", "pad": "z" * 1500}, ["after"])) == head + 1
        assert [e.event for e in store.read()][:-1] == events
        assert [e.position for e in store.read(Query([QueryItem(tags=["after"])]))] == [head + 1]
        assert full in sealed(store_path)
    seg = segment.SealedSegment(os.path.join(store_path, "log"), full)
    try:
        assert seg.verify() == []
        assert seg.last == full + (head - full + 1) - 1 == head
    finally:
        seg.close()
    assert idx_path.read_bytes() == original  # rebuilt exactly as the writer had written it
    torn = lost_found(store_path, "torn-seal")
    if idx == "torn":
        (folder,) = torn
        assert (folder / segment.idx_name(full)).read_bytes() == original[: len(original) // 2]
        assert "torn" in (folder / "NOTE.txt").read_text()
    else:
        assert torn == []
    with EventStore(store_path) as again:
        assert [e.event for e in again.read()][:-1] == events


# -- 4. half-visible writes -----------------------------------------------------------------


@pytest.fixture
def unsynced(store: EventStore) -> tuple[EventStore, list[Event]]:
    """Three acknowledged events, then a whole committed batch of two written straight into the
    segment by a writer that died before its fsync (the synced position was not advanced)."""
    store.append([Event("A", i, ["old"], None, f"a-{i}") for i in range(3)])
    late = [Event("Late", i, ["late"], None, f"late-{i}") for i in range(2)]
    append_raw(store.path, hand_records(store.path, late))
    return store, late


def test_readers_never_see_past_the_synced_position(unsynced: tuple[EventStore, list[Event]]) -> None:
    store, _late = unsynced
    late_q = Query([QueryItem(tags=["late"])])
    for s in (store, EventStore(store.path, durable=store.durable)):
        assert s.head() == 3
        result = s.read()
        assert result.head == 3 and [e.position for e in result] == [1, 2, 3]
        assert list(s.read(late_q)) == [] and list(s.read(start=4)) == []
        assert [e.position for e in s.read(backwards=True, limit=1)] == [3]
        if s is not store:
            s.close()


def test_sync_idle_makes_a_dead_writers_batch_visible(unsynced: tuple[EventStore, list[Event]]) -> None:
    store, late = unsynced
    with EventStore(store.path, durable=store.durable) as other:
        assert other.sync_idle() == 5
    assert store.head() == 5
    assert [e.event for e in store.read(Query([QueryItem(tags=["late"])]))] == late


def test_the_next_append_makes_a_dead_writers_batch_visible(unsynced: tuple[EventStore, list[Event]]) -> None:
    store, late = unsynced
    assert store.append(Event("New", 0, ["late"])) == 6
    assert [e.position for e in store.read(Query([QueryItem(tags=["late"])]))] == [4, 5, 6]
    assert [e.event for e in store.read(start=4, limit=2)] == late


# -- 5. an fsync error seen by one process only -----------------------------------------------


def _try_append(path: str, out: Any) -> None:
    """In another process: read the head, then try to append; report what happened."""
    try:
        with EventStore(path) as store:
            head = store.head()
            try:
                store.append(Event("FromB", 1))
                out.put((head, "appended", ""))
            except DurabilityError as exc:
                out.put((head, "refused", str(exc)))
    except BaseException as exc:
        out.put((None, "crashed", repr(exc)))


def _in_other_process(path: str) -> tuple[Any, str, str]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_try_append, args=(path, out), daemon=True)
    proc.start()
    try:
        return out.get(timeout=JOIN_TIMEOUT)
    except queue.Empty:
        pytest.fail("the other process did not report")
    finally:
        proc.join(JOIN_TIMEOUT)
        if proc.is_alive():
            proc.kill()
            proc.join(10)


def _recover(path: str) -> None:
    """``kroniko-ops recover``: re-read what is past the synced position from the disk, cut
    what does not verify, fsync, clear the poison."""
    before = synced_state(path)
    assert before is not None and before.poisoned
    report = kroniko_ops.recover(path)
    assert "store-poisoned" in {f.code for f in report.findings}
    after = synced_state(path)
    assert after is not None and not after.poisoned


def test_an_fsync_error_poisons_the_store_for_every_process(store_path: str) -> None:
    store = EventStore(store_path)
    store.append(Event("Seed", 0))
    batch = [Event("Pay", i, ["order:1"], None, f"pay-{i}") for i in range(2)]

    def eio(op: str, where: str) -> None:
        if op == "fsync" and where == "active segment":
            raise OSError(errno.EIO, "injected fsync failure", where)

    previous = fileio.set_fault_injector(eio)
    try:
        with pytest.raises(DurabilityError, match="may or may not be committed"):
            store.append(batch)
    finally:
        fileio.set_fault_injector(previous)
    state = synced_state(store_path)
    assert state is not None and state.poisoned and state.position == 1
    with pytest.raises(DurabilityError, match="recover"):
        store.append(Event("Again", 1))
    # Another process, whose own fsyncs would succeed, is refused too; it still reads.
    head, outcome, message = _in_other_process(store_path)
    assert (head, outcome) == (1, "refused") and "recover" in message
    store.close()
    _recover(store_path)
    head, outcome, message = _in_other_process(store_path)
    assert outcome == "appended", message
    with EventStore(store_path) as fresh:
        # Whether the failed batch survived is unknown to its caller: it retries with the same ids.
        got = [e.event for e in fresh.read() if e.type == "Pay"]
        assert got in ([], batch)
        last = fresh.append(batch)
        assert [e.event for e in fresh.read() if e.type == "Pay"] == batch
        assert last in (3, fresh.head())


def test_a_poisoned_store_still_reads_after_a_reboot(store_path: str) -> None:
    # The poisoned position was fsynced before the failure: readers go on reading up to it.
    with EventStore(store_path) as store:
        store.append(Event("Seed", 0, ["t"]))
        previous = fileio.set_fault_injector(
            lambda op, where: _raise_eio() if (op, where) == ("fsync", "active segment") else None)
        try:
            with pytest.raises(DurabilityError):
                store.append(Event("Unsure", 1, ["t"]))
        finally:
            fileio.set_fault_injector(previous)
    as_other_boot(store_path)
    with EventStore(store_path) as fresh:
        assert fresh.head() == 1
        assert [e.type for e in fresh.read(Query([QueryItem(tags=["t"])]))] == ["Seed"]
        with pytest.raises(DurabilityError, match="recover"):
            fresh.append(Event("After", 2))
    _recover(store_path)
    with EventStore(store_path) as fresh:
        assert [e.type for e in fresh.read()] in (["Seed"], ["Seed", "Unsure"])
        assert fresh.append(Event("After", 2)) == fresh.head()


def test_a_subscription_outlives_a_poisoned_store(store_path: str) -> None:
    # A subscriber only reads: a failed fsync elsewhere must not end it; it sees the events
    # appended once recover has run.
    with EventStore(store_path) as store:
        store.append(Event("Seed", 0, ["t"]))
        previous = fileio.set_fault_injector(
            lambda op, where: _raise_eio() if (op, where) == ("fsync", "active segment") else None)
        try:
            with pytest.raises(DurabilityError):
                store.append(Event("Unsure", 1, ["x"]))
        finally:
            fileio.set_fault_injector(previous)
    got: list[Any] = []
    polled = threading.Event()
    with EventStore(store_path) as reader:
        def follow() -> None:
            sub = reader.subscribe(Query([QueryItem(tags=["t"])]), after=1, poll_interval=0.001, max_interval=0.01)
            try:
                polled.set()
                got.append(next(sub).event.data)
            except BaseException as exc:  # handed back to the test
                got.append(exc)
            finally:
                sub.close()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        assert polled.wait(JOIN_TIMEOUT)
        thread.join(0.3)  # many idle polls, each of which tried to sync before the fix
        assert got == [], got
        _recover(store_path)
        with EventStore(store_path) as writer:
            writer.append(Event("After", "seen", ["t"]))
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive()
    assert got == ["seen"]


def _raise_eio() -> None:
    raise OSError(errno.EIO, "injected fsync failure")


# -- 6. the unsynced part after a reboot ------------------------------------------------------


@pytest.mark.parametrize("junk", [bytes(700), b"\xff" * 50 + b"not a record\n" * 10], ids=["zeros", "garbage"])
def test_after_a_reboot_the_unsynced_part_is_verified_record_by_record(store: EventStore, junk: bytes) -> None:
    store.append([Event("A", i, ["kept"]) for i in range(2)])
    synced = synced_state(store.path)
    kept = [Event("B", i, ["kept"], None, f"b-{i}") for i in range(2)]
    first_batch = hand_records(store.path, kept)
    append_raw(store.path, first_batch)
    # A later batch that a power cut left behind a hole (never fsynced: nothing acknowledged it).
    after_hole = hand_records(store.path, [Event("C", 0, ["lost"], None, "c-0")])
    append_raw(store.path, junk + after_hole)
    store.close()
    as_other_boot(store.path)
    with EventStore(store.path, durable=store.durable) as fresh:
        assert fresh.head() == 4  # the whole batch before the hole is kept
        assert [e.event for e in fresh.read(start=3)] == kept
        assert list(fresh.read(Query([QueryItem(tags=["lost"])]))) == []
        (folder,) = lost_found(store.path, "log-tail")
        assert (folder / f"{segment.seg_name(1)}.tail").read_bytes() == junk + after_hole
        state = synced_state(store.path)
        assert state is not None and state.position == 4 and state.boot != "an-earlier-boot"
        assert fresh.append(Event("D", 0, ["kept"])) == 5
        assert [e.position for e in fresh.read(Query([QueryItem(tags=["kept"])]))] == [1, 2, 3, 4, 5]
    assert synced is not None and synced.position == 2


def test_after_a_reboot_a_clean_log_is_kept_whole(store: EventStore) -> None:
    store.append([Event("A", i, ["t"]) for i in range(3)])
    append_raw(store.path, hand_records(store.path, [Event("B", 0, ["t"])]))
    store.close()
    as_other_boot(store.path, position=0, end=0, chain=record.GENESIS)  # re-verify from the start
    with EventStore(store.path, durable=store.durable) as fresh:
        assert fresh.head() == 4
        assert lost_found(store.path, "log-tail") == []
        assert tail_of(store.path)[0] == 4


def _acknowledged(store_path: str) -> bytes:
    """Five batches of two, all acknowledged (synced); returns the segment's bytes."""
    with EventStore(store_path) as store:
        for i in range(5):
            store.append([Event("A", {"i": i, "k": k}, ["t"], None, f"e{i}-{k}") for k in range(2)])
    return Path(store_path, "log", segment.seg_name(1)).read_bytes().rstrip(b"\0")


@pytest.mark.parametrize("where", ["body", "header"])
def test_after_a_reboot_damage_below_the_synced_position_is_never_cut(store_path: str, tmp_path: Path,
                                                                      where: str) -> None:
    # Position 3 was acknowledged, then a byte of it changed on the disk: cutting from there
    # would hand positions 3..10 (all acknowledged) to new events.
    data = bytearray(_acknowledged(store_path))
    third = list(record.iter_records(bytes(data)))[2]
    data[third.offset + (record.HEADER + 5 if where == "body" else 20)] ^= 0x01
    Path(store_path, "log", segment.seg_name(1)).write_bytes(bytes(data))
    as_other_boot(store_path)
    before = snapshot(str(tmp_path))
    with EventStore(store_path) as fresh:
        with pytest.raises(StoreCorrupted, match="damaged"):
            fresh.append(Event("New", 0))
    assert tree_diff(before, snapshot(str(tmp_path))) == NO_CHANGE
    assert lost_found(store_path, "log-tail") == []


def test_after_a_reboot_a_log_shorter_than_acknowledged_keeps_what_is_left(store_path: str) -> None:
    # A disk that acknowledged an fsync it did not do lost the end of the segment: nothing
    # damaged is left to protect, so the store goes on from its last whole batch.
    data = _acknowledged(store_path)
    recs = list(record.iter_records(data))
    Path(store_path, "log", segment.seg_name(1)).write_bytes(data[: recs[6].offset + 100])
    as_other_boot(store_path)
    with EventStore(store_path) as fresh:
        assert fresh.head() == 6
        assert fresh.append(Event("New", 0)) == 7
    (folder,) = lost_found(store_path, "log-tail")
    assert (folder / f"{segment.seg_name(1)}.tail").read_bytes() == data[recs[6].offset: recs[6].offset + 100]


@pytest.mark.parametrize("damage", ["deleted", "garbage", "torn"])
def test_a_lost_or_damaged_synced_file_is_recomputed_from_the_log(store_path: str, damage: str) -> None:
    with EventStore(store_path, segment_bytes=4096) as store:
        for i in range(30):
            store.append(Event("A", {"i": i, "pad": "p" * 300}, ["t"], None, f"a-{i}"))
    synced = Path(store_path, "locks", "synced")
    if damage == "deleted":
        synced.unlink()
    elif damage == "garbage":
        synced.write_bytes(b"not a synced value\n" * 9)
    else:
        synced.write_bytes(synced.read_bytes()[:80])
    with EventStore(store_path) as fresh:
        assert fresh.head() == 30
        assert [e.id for e in fresh.read()] == [f"a-{i}" for i in range(30)]
        assert fresh.append(Event("B", 0)) == 31
    state = synced_state(store_path)
    assert state is not None and state.position == 31
