"""I/O failures during an append (injected through ``fileio``): the handle stops writing, a new
handle sees a consistent store, and retrying the same batch (same ids) commits it exactly once."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_helpers import actual_index, all_events, expected_index

from kroniko_ops import DurabilityError, Event, EventStore, InvalidEvent, fileio
from kroniko_ops.codec import encode_event


def _failing(op: str, where: Callable[[str], bool]) -> Callable[[str, str], None]:
    def injector(call_op: str, path: str) -> None:
        if call_op == op and where(path):
            raise OSError(errno.EIO, "injected I/O error", path)
    return injector


FAULTS = {
    "link of the event file": ("link", lambda p: os.sep + "events" + os.sep in p),
    "write of the log": ("write", lambda p: p.endswith("append.log")),
    "fsync of the log": ("fsync", lambda p: p.endswith("append.log")),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_failed_append_then_retry_commits_exactly_once(store: EventStore, fault: str) -> None:
    if fault == "fsync of the log" and not store.durable:
        pytest.skip("a store with durable=False never fsyncs")
    store.append([Event("Seed", 0, ["s"])])
    batch = [Event("Pay", {"n": i}, ["order:1"], None, f"pay-{i}") for i in range(3)]
    previous = fileio.set_fault_injector(_failing(*FAULTS[fault]))
    try:
        with pytest.raises(DurabilityError):
            store.append(batch)
    finally:
        fileio.set_fault_injector(previous)
    # This handle refuses further writes: its view of the disk is no longer certain.
    with pytest.raises(DurabilityError):
        store.append(Event("After", 1))
    with EventStore(store.path, durable=store.durable) as fresh:
        head = fresh.head()
        assert head in (1, 4), "all of the batch or none of it"
        seen = [e.event for e in fresh.read()]
        assert seen[0].type == "Seed" and seen[1:] in ([], batch)
        # The caller does not know whether it committed: it retries with the same ids.
        assert fresh.append(batch) == 4
        assert [e.event for e in fresh.read(start=2)] == batch
        assert fresh.head() == 4
        assert actual_index(fresh.path) == expected_index(all_events(fresh))


def test_dangling_event_from_a_dead_writer_does_not_block_its_retry(store: EventStore) -> None:
    # A writer published its event file (step 2) and died before the commit.
    event = Event("Pay", {"n": 1}, ["order:2"], None, "pay-dangling")
    _eid, raw = encode_event(event)
    Path(store.layout.event_file("pay-dangling")).write_bytes(raw)
    assert store.head() == 0 and list(store.read()) == []
    assert store.append(event) == 1
    assert [e.event for e in store.read()] == [event]


def test_dangling_file_with_other_content_keeps_its_id_taken(store: EventStore) -> None:
    other = Event("Pay", {"n": 999}, [], None, "pay-taken")
    Path(store.layout.event_file("pay-taken")).write_bytes(encode_event(other)[1])
    with pytest.raises(InvalidEvent):
        store.append(Event("Pay", {"n": 1}, [], None, "pay-taken"))
    assert store.head() == 0
    # The file is never overwritten.
    assert Path(store.layout.event_file("pay-taken")).read_bytes() == encode_event(other)[1]
