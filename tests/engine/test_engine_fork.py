"""A handle opened before ``fork()`` and used in the child (the pre-fork pattern of Python servers:
gunicorn, multiprocessing's fork context) takes the writer lock as its own: every acknowledged
append lands at its own position, none is lost, and ``fsck`` finds the store clean. A closed
handle says so clearly, whatever is called on it."""

from __future__ import annotations

import multiprocessing
import os
import queue
import subprocess
import sys
import threading
from typing import Any

import pytest

import kroniko_ops
from kroniko_ops import AppendCondition, Event, EventStore, Query, QueryItem
from kroniko_ops.errors import KronikoError, StoreClosed

WORKERS = 4
APPENDS = 40
JOIN_TIMEOUT = 120.0  # a guard against a hang, not a speed assertion


def _worker(store: EventStore, worker: int, results: Any) -> None:
    """Append with the handle inherited from the parent; report every acknowledged (position, id)."""
    try:
        acked = []
        for i in range(APPENDS):
            eid = f"w{worker}-{i}"
            batch = [Event("Forked", {"w": worker, "i": i, "k": k}, [f"w:{worker}"], None, f"{eid}-{k}")
                     for k in range(1 + i % 3)]
            last = store.append(batch)
            acked.extend(zip(range(last - len(batch) + 1, last + 1), [e.id for e in batch], strict=True))
        store.close()
        results.put((worker, acked))
    except BaseException as exc:  # reported, so that the parent fails with the cause
        results.put((worker, f"{type(exc).__name__}: {exc}"))


def test_a_handle_used_after_fork_loses_nothing(tmp_path) -> None:
    path = str(tmp_path / "store")
    store = EventStore(path)
    acked = []
    last = store.append(Event("Started", {}, ["boot"], None, "start-0"))  # at start-up, before the fork
    acked.append((last, "start-0"))
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(store, w, results)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    reports: dict[int, Any] = {}
    try:
        for i in range(APPENDS):  # the parent appends meanwhile, with the same handle
            last = store.append(Event("Parent", {"i": i}, ["parent"], None, f"p-{i}"),
                                AppendCondition(Query([QueryItem(tags=["nobody"])]), after=None))
            acked.append((last, f"p-{i}"))
        for _ in procs:
            worker, report = results.get(timeout=JOIN_TIMEOUT)
            reports[worker] = report
    except queue.Empty:
        pytest.fail(f"forked workers did not report within {JOIN_TIMEOUT}s: got {sorted(reports)}")
    finally:
        for p in procs:
            p.join(JOIN_TIMEOUT)
            if p.is_alive():
                p.kill()
                p.join(10)
    store.close()
    for w, report in reports.items():
        assert not isinstance(report, str), f"worker {w} failed: {report}"
        acked.extend(report)
    positions = [pos for pos, _ in acked]
    assert len(set(positions)) == len(positions), "two acknowledged appends got the same position"
    with EventStore(path, create=False) as fresh:
        found = {e.position: e.id for e in fresh.read()}
        assert fresh.head() == len(acked)
    missing = [(pos, eid) for pos, eid in acked if found.get(pos) != eid]
    assert not missing, f"acknowledged events missing or moved: {missing[:5]}"
    report = kroniko_ops.fsck(path)
    assert report.exit_code == 0, [(f.code, f.message) for f in report.findings]


def test_a_fork_while_another_thread_holds_the_lock_does_not_share_it(tmp_path) -> None:
    """The child of a fork taken while a parent thread is inside an append cannot inherit that
    lock, nor release it under the parent's feet."""
    path = str(tmp_path / "store")
    store = EventStore(path, durable=False)
    store.append(Event("A", {}))
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            store.append(Event("T", {}))

    t = threading.Thread(target=busy)
    t.start()
    try:
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(store, w, results)) for w in range(2)]
        for p in procs:
            p.start()
        got = [results.get(timeout=JOIN_TIMEOUT) for _ in procs]
        for p in procs:
            p.join(JOIN_TIMEOUT)
    finally:
        stop.set()
        t.join(JOIN_TIMEOUT)
    store.close()
    for w, report in got:
        assert not isinstance(report, str), f"worker {w} failed: {report}"
    with EventStore(path, create=False) as fresh:
        events = list(fresh.read())
        assert [e.position for e in events] == list(range(1, fresh.head() + 1))
        ids = {e.id for e in events}
    assert all(eid in ids for _, report in got for _, eid in report)
    assert kroniko_ops.fsck(path).exit_code == 0


@pytest.mark.parametrize("call", [
    lambda s: s.append(Event("A", {})),
    lambda s: s.read(),
    lambda s: list(s.read()),
    lambda s: s.head(),
    lambda s: next(s.subscribe()),
    lambda s: list(s.records(1, 1)),
    lambda s: s.sync_idle(),
    lambda s: s.synced_state(),
], ids=["append", "read", "iterate", "head", "subscribe", "records", "sync_idle", "synced_state"])
def test_a_closed_handle_says_it_is_closed(tmp_path, call) -> None:
    path = str(tmp_path / "store")
    store = EventStore(path)
    store.append(Event("A", {}))
    store.close()
    with pytest.raises(StoreClosed) as info:
        call(store)
    assert isinstance(info.value, KronikoError)
    assert path in str(info.value) and "closed" in str(info.value)
    store.close()  # closing twice is harmless


def test_a_read_result_of_a_closed_handle_says_it_is_closed(tmp_path) -> None:
    path = str(tmp_path / "store")
    store = EventStore(path)
    store.append([Event("A", {"i": i}) for i in range(3)])
    result = store.read()
    store.close()
    with pytest.raises(StoreClosed):
        list(result)


def _index_after_parent_closes(store: EventStore, ready: Any, parent_closed: Any, results: Any) -> None:
    """In the child: index with the inherited handle, wait for the parent to close its own,
    index more; report the index files seen then."""
    try:
        store.append([Event("Child", {"i": i}, ["child"]) for i in range(300)])
        store.flush_index()
        ready.set()
        if not parent_closed.wait(JOIN_TIMEOUT):
            raise TimeoutError("the parent did not close its handle")
        store.append([Event("Later", {"i": i}, ["child"]) for i in range(300)])
        store.flush_index()
        results.put(sorted(os.listdir(os.path.join(store.path, "index"))))
        store.close()
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def test_the_parent_closing_its_handle_keeps_the_childs_index_writes(tmp_path) -> None:
    # SQLite's per-process lock state crosses fork(): a connection the child opened beside the
    # inherited one took no real locks, so the parent's close deleted the WAL the child was
    # writing, and the child's index rows were lost.
    path = str(tmp_path / "store")
    store = EventStore(path)
    store.append([Event("Parent", {"i": i}, ["parent"]) for i in range(300)])
    store.flush_index()
    ctx = multiprocessing.get_context("fork")
    ready, parent_closed, results = ctx.Event(), ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_index_after_parent_closes, args=(store, ready, parent_closed, results))
    child.start()
    try:
        assert ready.wait(JOIN_TIMEOUT), "the child did not index"
        store.close()
        parent_closed.set()
        seen = results.get(timeout=JOIN_TIMEOUT)
    finally:
        child.join(JOIN_TIMEOUT)
        if child.is_alive():
            child.kill()
            child.join(10)
    assert not isinstance(seen, str), seen
    assert any(name.endswith("-wal") for name in seen), f"the child's WAL was deleted under it: {seen}"
    with EventStore(path, create=False) as fresh:
        assert fresh.head() == 900
        assert fresh.index.checkpoint()[0] == 900, "the child's index writes were lost"
    report = kroniko_ops.fsck(path)
    assert report.exit_code == 0 and "index-behind" not in {f.code for f in report.findings}, report.findings


_FORK_WHILE_READING = """
import os, sys, threading, time
from kroniko_ops import EventStore, Event, Query, QueryItem
store = EventStore(sys.argv[1])
for b in range(5):
    store.append([Event("T", {"i": i}, ["t"]) for i in range(1000)])
store.flush_index()
errors, stop = [], False
def reader():
    while not stop:
        try:
            assert len(list(store.read(Query([QueryItem(tags=["t"])])))) == 5000
        except BaseException as exc:
            errors.append(repr(exc))
            return
t = threading.Thread(target=reader)
t.start()
t0, forks = time.time(), 0
while time.time() - t0 < 3 and not errors:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    forks += 1
stop = True
t.join()
print("forks", forks, "errors", errors)
"""


def test_forking_while_another_thread_reads_neither_crashes_nor_fails_the_read(tmp_path) -> None:
    # The connection closed before a fork must never be closed under another thread's query
    # (that crashed the whole process with a segmentation fault).
    done = subprocess.run([sys.executable, "-c", _FORK_WHILE_READING, str(tmp_path / "s")], capture_output=True,
                          text=True, timeout=JOIN_TIMEOUT)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "errors []" in done.stdout and "forks 0 " not in done.stdout, done.stdout
