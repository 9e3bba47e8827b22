"""I/O failures during an append (injected through ``fileio``): the caller learns whether
anything may have been committed, a new handle sees a consistent store, and retrying the same
batch (same ids) commits it exactly once."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest
from engine_helpers import segments

import kroniko_ops
from kroniko_ops import DurabilityError, Event, EventStore, fileio
from kroniko_ops.format import record, segment


def _failing(op: str, where: Callable[[str], bool], err: int = errno.EIO) -> Callable[[str, str], None]:
    def injector(call_op: str, path: str) -> None:
        if call_op == op and where(path):
            raise OSError(err, "injected I/O error", path)
    return injector


def _batch() -> list[Event]:
    return [Event("Pay", {"n": i}, ["order:1"], None, f"pay-{i}") for i in range(3)]


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC], ids=["EIO", "ENOSPC"])
def test_a_failed_log_write_commits_nothing_and_the_retry_commits_once(store: EventStore, err: int) -> None:
    store.append(Event("Seed", 0, ["s"]))
    previous = fileio.set_fault_injector(_failing("write", lambda p: p == "active segment", err))
    try:
        with pytest.raises(DurabilityError, match="nothing was committed"):
            store.append(_batch())
    finally:
        fileio.set_fault_injector(previous)
    assert store.head() == 1
    with EventStore(store.path, durable=store.durable) as fresh:
        assert fresh.head() == 1
        assert fresh.append(_batch()) == 4
    assert store.append(_batch()) == 4  # the first handle's retry is idempotent
    assert [e.event for e in store.read(start=2)] == _batch()
    assert store.head() == 4


def test_a_failed_seal_commits_nothing_and_the_store_goes_on(tmp_path: str) -> None:
    path = os.path.join(tmp_path, "store")
    with EventStore(path, segment_bytes=4096) as store:
        for i in range(8):
            store.append(Event("Fill", {"i": i, "pad": "f" * 400}, [], None, f"fill-{i}"))
        full = segments(path)[-1]
        previous = fileio.set_fault_injector(_failing("rename", lambda p: p.endswith(segment.idx_name(full))))
        try:
            with pytest.raises(DurabilityError, match=r"[Nn]othing new was committed"):
                store.append([Event("Big", {"pad": "b" * 2000}, [], None, f"big-{i}") for i in range(2)])
        finally:
            fileio.set_fault_injector(previous)
        with pytest.raises(DurabilityError):  # this handle is closed for writing
            store.append(Event("After", 0))
        head = store.head()
    with EventStore(path) as fresh:
        assert fresh.head() == head == 8
        last = fresh.append([Event("Big", {"pad": "b" * 2000}, [], None, f"big-{i}") for i in range(2)])
        assert last == 10
        assert [e.id for e in fresh.read(start=9)] == ["big-0", "big-1"]
        assert full in [f for f in segments(path) if f < segments(path)[-1]]
    seg = segment.SealedSegment(os.path.join(path, "log"), full)
    try:
        assert seg.verify() == []
    finally:
        seg.close()


def test_the_failed_fsync_batch_is_neither_lost_silently_nor_doubled(store_path: str) -> None:
    # After an fsync failure the outcome is unknown; once recovered, retrying with the same ids
    # leaves the batch in the log exactly once.
    with EventStore(store_path) as store:
        store.append(Event("Seed", 0))
        previous = fileio.set_fault_injector(_failing("fsync", lambda p: p == "active segment"))
        try:
            with pytest.raises(DurabilityError, match="may or may not"):
                store.append(_batch())
        finally:
            fileio.set_fault_injector(previous)
    with EventStore(store_path) as rec, rec.locked():
        rec.recover_log()
    with EventStore(store_path) as fresh:
        fresh.append(_batch())
        fresh.append(_batch())
        ids = [r.event_id for r in record.iter_records(open(os.path.join(store_path, "log", segment.seg_name(1)),
                                                             "rb").read().rstrip(b"\0"))]
        assert sorted(ids[1:]) == sorted(e.id for e in _batch())  # type: ignore[type-var]


@pytest.mark.parametrize("where", ["seal", "log-folder"])
def test_a_failed_fsync_while_rolling_poisons_the_store_for_every_handle(tmp_path: str, where: str) -> None:
    # Not only the commit's fsync: a failed fsync of the sealed segment or of the log folder may
    # have dropped pages the next fsync would report clean, so no handle may append past it.
    path = os.path.join(tmp_path, "store")
    log_dir = os.path.join(path, "log")
    with EventStore(path, segment_bytes=4096) as store:
        for i in range(8):
            store.append(Event("Fill", {"i": i, "pad": "f" * 400}, [], None, f"fill-{i}"))
        full = segments(path)[-1]
        target = segment.seg_name(full) if where == "seal" else log_dir
        previous = fileio.set_fault_injector(_failing("fsync", lambda p: p == target))
        try:
            with pytest.raises(DurabilityError, match="kroniko-ops recover"):
                store.append([Event("Big", {"pad": "b" * 2000}, [], None, f"big-{i}") for i in range(2)])
        finally:
            fileio.set_fault_injector(previous)
        with pytest.raises(DurabilityError):
            store.append(Event("After", 0))
    with EventStore(path) as other:
        assert other.head() == 8  # readers go on
        with pytest.raises(DurabilityError, match="recover"):
            other.append(Event("Other", 0))
    report = kroniko_ops.recover(path)
    assert "store-poisoned" in {f.code for f in report.findings}
    with EventStore(path) as fresh:
        assert fresh.append([Event("Big", {"pad": "b" * 2000}, [], None, f"big-{i}") for i in range(2)]) == 10
    assert kroniko_ops.fsck(path).exit_code == 0


def test_a_failed_read_of_the_synced_position_before_the_fsync_is_not_called_durable(
        store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # With other writers about, the commit reads the synced position before its fsync; an I/O
    # error there leaves the batch written but not fsynced: the caller must not be told durable.
    with EventStore(store_path) as store, EventStore(store_path) as other:
        store.append(Event("Seed", 0))
        other.append(Event("Other", 0))  # seen by `store` at its next append: writers are about

        def eio() -> None:
            raise OSError(errno.EIO, "injected read failure", "locks/synced")

        monkeypatch.setattr(store.synced, "peek", eio)
        with pytest.raises(DurabilityError, match="not yet made durable") as err:
            store.append(_batch())
        assert "is durable" not in str(err.value)
    with EventStore(store_path) as fresh:
        assert fresh.append(_batch()) == 5  # the retry with the same ids: committed once
        assert fresh.append(_batch()) == 5
        assert fresh.head() == 5
