"""Reads never take the writer lock and never show an uncommitted batch; a held lock makes
appends raise StoreLocked after ``lock_timeout``, having written nothing."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import NO_CHANGE, append_raw, hand_records, snapshot, tree_diff

from kroniko_ops import Event, EventStore, Query, QueryItem, StoreLocked
from kroniko_ops.format import record

GUARD = 30.0  # seconds before a blocked call counts as a hang; not a speed assertion


@pytest.fixture
def seeded(store: EventStore) -> EventStore:
    store.append([Event("A", i, ["t"]) for i in range(3)])
    return store


@pytest.fixture
def held_lock(seeded: EventStore) -> Iterator[int]:
    """The writer lock held by someone else (an flock on its own open file description)."""
    fd = os.open(seeded.layout.append_lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _finishes(call: Callable[[], Any]) -> Any:
    """Run ``call`` in a thread; fail if it blocks (on the lock) instead of returning."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # handed back to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive(), "the call blocked while the writer lock was held"
    if errors:
        raise errors[0]
    return out[0]


def test_reads_do_not_take_the_writer_lock(seeded: EventStore, held_lock: int) -> None:
    assert _finishes(seeded.head) == 3
    assert _finishes(lambda: [e.position for e in seeded.read()]) == [1, 2, 3]
    assert _finishes(lambda: [e.position for e in seeded.read(Query([QueryItem(tags=["t"])]), backwards=True)]) \
        == [3, 2, 1]

    def first_of_subscription() -> int:
        sub = seeded.subscribe(after=2)
        try:
            return next(sub).position
        finally:
            sub.close()

    assert _finishes(first_of_subscription) == 3

    def open_and_read() -> int:
        with EventStore(seeded.path, durable=seeded.durable) as other:
            return len(list(other.read()))

    assert _finishes(open_and_read) == 3


def test_append_raises_store_locked_after_the_timeout(seeded: EventStore, held_lock: int, tmp_path: Path) -> None:
    seeded.lock_timeout = 0.2
    before = snapshot(str(tmp_path))
    with pytest.raises(StoreLocked) as info:
        _finishes(lambda: seeded.append([Event("B", 1, ["new"]), Event("B", 2)]))
    assert "append.lock" in str(info.value)
    assert tree_diff(before, snapshot(str(tmp_path))) == NO_CHANGE
    assert seeded.head() == 3


def test_append_works_once_the_lock_is_released(seeded: EventStore) -> None:
    fd = os.open(seeded.layout.append_lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    seeded.lock_timeout = 0.1
    try:
        with pytest.raises(StoreLocked):
            seeded.append(Event("B", 1, [], None, "explicit-1"))
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    # The same event, retried with the same id, now commits once.
    assert seeded.append(Event("B", 1, [], None, "explicit-1")) == 4
    assert [e.id for e in seeded.read(start=4)] == ["explicit-1"]
    assert os.path.exists(seeded.layout.append_lock), "the lock file is never deleted"


def test_a_read_never_shows_an_uncommitted_batch(seeded: EventStore) -> None:
    # A writer is in the middle of its write(): two of its three records are on disk, the commit
    # mark not yet; then the whole batch, but not yet fsynced and advanced.
    batch = [Event("New", i, ["new"], None, f"new-{i}") for i in range(3)]
    data = hand_records(seeded.path, batch)
    sizes = [r.size for r in record.iter_records(data)]
    query = Query([QueryItem(tags=["new"])])

    def nothing_new() -> None:
        assert seeded.head() == 3 and seeded.read().head == 3
        assert [e.position for e in seeded.read()] == [1, 2, 3]
        assert list(seeded.read(query)) == [] and list(seeded.read(start=4)) == []
        assert [e.position for e in seeded.read(backwards=True, limit=1)] == [3]

    append_raw(seeded.path, data[: sizes[0] + sizes[1]])
    nothing_new()
    append_raw(seeded.path, data[sizes[0] + sizes[1]: -100])  # half of the commit record
    nothing_new()
    append_raw(seeded.path, data[-100:])
    nothing_new()  # whole, but its writer has not synced it: still invisible
    assert seeded.sync_idle() == 6  # the writer is gone: an idle reader makes it durable and visible
    assert [(e.position, e.data) for e in seeded.read(query)] == [(4, 0), (5, 1), (6, 2)]


def test_a_read_started_before_a_commit_does_not_see_it(seeded: EventStore) -> None:
    result = seeded.read()
    seeded.append(Event("New", 1, ["t"]))
    assert result.head == 3
    assert [e.position for e in result] == [1, 2, 3]
    assert [e.position for e in seeded.read()] == [1, 2, 3, 4]


def test_a_subscription_sees_appends_made_through_another_handle(seeded: EventStore) -> None:
    got: list[int] = []
    started = threading.Event()

    def subscriber() -> None:
        sub = seeded.subscribe(Query([QueryItem(tags=["elsewhere"])]), after=0)
        started.set()
        try:
            for event in sub:
                got.append(event.position)
                if len(got) == 2:
                    break
        finally:
            sub.close()

    thread = threading.Thread(target=subscriber, daemon=True)
    thread.start()
    assert started.wait(GUARD)
    with EventStore(seeded.path, durable=seeded.durable) as other:
        other.append(Event("X", 1, ["elsewhere"]))
        other.append([Event("X", 2), Event("X", 3, ["elsewhere"])])
    thread.join(GUARD)
    assert not thread.is_alive(), "the subscriber did not see the other handle's appends"
    assert got == [4, 6]
