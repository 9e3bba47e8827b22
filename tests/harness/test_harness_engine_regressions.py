"""Engine bugs the harness found on format 3, each as a minimal reproduction.

1. An ``AppendCondition`` whose query matches everything (``Query.all()``, or an item with no
   types and no tags) ignored every *indexed* event: ``EventStore._check_condition`` asks
   ``Index.positions``, which (as documented) does not take such a query and yields nothing,
   so only the unindexed tail was checked and the append committed despite a conflict
   (checker: ``condition-violated``, ``wrong-conflict``). With a ``QueryItem()`` in a query the
   index even built empty SQL: ``sqlite3.OperationalError`` escaped ``append``. Fixed in the
   engine (a match-all condition conflicts with the first position after ``after``).
2. A handle whose own batch was the last one written, after another process moved the index
   checkpoint onto that batch (it synced the tail for an idempotent retry or a rejected
   condition, then flushed its pending entries on ``close``), failed its next append with
   ``StoreCorrupted: no segment or pack ... holds position N``: ``Writer.sync_tail`` returns
   early when the file ends at the handle's own tail, without extending the view's active
   segment to it, and ``EventStore._check_index`` then looks the checkpoint up in that view.
   Fixed in the engine ("the writer's view always reaches its tail").
3. Rolling to a new segment, ``Writer._open_active`` closes the old write descriptor and then
   opens the new segment; when that open fails (EIO, ENOSPC, EMFILE) ``Writer.fd`` still holds
   the closed descriptor's number. The append rightly raises DurabilityError, but
   ``EventStore.close()`` then raises ``OSError: [Errno 9] Bad file descriptor`` (or, had the
   number been reused meanwhile, closes another file's descriptor). Found by the I/O-fault
   sweep (shapes ``roll-1`` and ``roll-20-fast-pass``, EIO on ``open`` #5 at ``_open_active``).

Each test states the behaviour a user relies on.
"""

from __future__ import annotations

import errno
import os

import pytest

from kroniko_ops import (
    AppendCondition,
    AppendConditionFailed,
    DurabilityError,
    Event,
    EventStore,
    Query,
    QueryItem,
    fileio,
)


@pytest.mark.parametrize("query", [Query.all(), Query([QueryItem()]), Query([QueryItem(types=["X"]), QueryItem()])],
                         ids=["all", "empty-item", "with-empty-item"])
def test_a_match_all_condition_sees_indexed_events(tmp_path, query) -> None:
    path = os.path.join(tmp_path, "s")
    with EventStore(path, durable=False) as s:
        s.append(Event("A", 1))  # indexed when the handle closes
    with EventStore(path, durable=False) as s:
        assert s.index.checkpoint()[0] == 1
        with pytest.raises(AppendConditionFailed) as caught:
            s.append(Event("B", 2), AppendCondition(query, after=0))
        assert caught.value.position == 1
        assert s.head() == 1


def test_append_after_another_handle_indexed_this_handles_batch(tmp_path) -> None:
    path = os.path.join(tmp_path, "s")
    with EventStore(path, durable=False) as b:
        b.append(Event("A", 1, id="e1"))
        b.append(Event("A", 2, id="e2"))
        with EventStore(path, durable=False) as c:
            assert c.append(Event("A", 2, id="e2")) == 2  # an idempotent retry: nothing written
        assert b.index.checkpoint()[0] == 2  # c indexed b's batch when it closed
        assert b.append(Event("A", 3, id="e3")) == 3
    with EventStore(path, durable=False) as s:
        assert [e.id for e in s.read()] == ["e1", "e2", "e3"]


def test_a_failed_roll_leaves_a_handle_that_closes_cleanly(tmp_path) -> None:
    path = os.path.join(tmp_path, "s")
    with EventStore(path, durable=False, segment_bytes=4096) as s:
        while s.synced_state().end < 3500:
            s.append(Event("A", {"pad": "x" * 50}))
        head = s.head()
    new_segment = f"{head + 1:012d}.seg"
    opens = []

    def fail_second_open_of_the_new_segment(op: str, p: str) -> None:
        if op == "open" and p.endswith(new_segment):
            opens.append(p)
            if len(opens) == 1:  # renamed from the preallocated file, then opened by the writer
                raise OSError(errno.EIO, "injected", p)

    s = EventStore(path, durable=False)
    previous = fileio.set_fault_injector(fail_second_open_of_the_new_segment)
    try:
        with pytest.raises(DurabilityError):
            s.append(Event("A", {"pad": "x" * 500}))
    finally:
        fileio.set_fault_injector(previous)
    s.close()  # must not raise (nor close a descriptor it no longer owns)
    with EventStore(path, durable=False) as again:
        assert again.append(Event("A", 1)) == head + 1
