"""Threads sharing one store handle: appends from several threads are serialised, and reads
running meanwhile (while segments roll under them) are whole, gap-free and end at their head."""

from __future__ import annotations

import gc
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest

from kroniko_ops import Event, EventStore, Query, QueryItem, reading

GUARD = 120.0  # seconds before a thread counts as hung; not a speed assertion


def test_threads_share_one_handle(tmp_path: Path) -> None:
    store = EventStore(str(tmp_path / "store"), durable=False, segment_bytes=4096)
    errors: list[str] = []
    writers_done = threading.Event()
    rounds = 300

    def writer(w: int) -> None:
        try:
            for i in range(rounds):
                store.append([Event("W", {"w": w, "i": i, "pad": "x" * 60}, [f"w:{w}"], None, f"w{w}-{i}-{k}")
                              for k in range(2)])
        except BaseException:
            errors.append(traceback.format_exc())

    def reader(r: int) -> None:
        try:
            while not writers_done.is_set():
                result = store.read(start=max(1, store.head() - 40))
                got = [e.position for e in result]
                if got and (got != list(range(got[0], got[-1] + 1)) or got[-1] != result.head):
                    errors.append(f"reader {r}: {got[:3]}..{got[-3:]} for head {result.head}")
                    return
                mine = [e.data["i"] for e in store.read(Query([QueryItem(tags=[f"w:{r % 2}"])]), backwards=True,
                                                        limit=4)]
                if mine != sorted(mine, reverse=True):
                    errors.append(f"reader {r}: tag read out of order {mine}")
                    return
        except BaseException:
            errors.append(traceback.format_exc())

    writers = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(2)]
    readers = [threading.Thread(target=reader, args=(r,), daemon=True) for r in range(3)]
    try:
        for t in writers + readers:
            t.start()
        for t in writers:
            t.join(GUARD)
        writers_done.set()
        for t in readers:
            t.join(GUARD)
        assert not any(t.is_alive() for t in writers + readers), "a thread hung"
        assert errors == []
        events = list(store.read())
        assert [e.position for e in events] == list(range(1, 4 * rounds + 1))
        for w in range(2):
            assert [e.data["i"] for e in store.read(Query([QueryItem(tags=[f"w:{w}"])]))] == [
                i for i in range(rounds) for _ in range(2)]
    finally:
        writers_done.set()
        store.close()


def test_reads_in_two_threads_never_leave_the_collector_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read pauses Python's cyclic collector while it decodes. A second thread that starts its
    read inside that pause (and so finds the collector off) must not be the one that leaves it
    off: the process would never collect a cycle again. The switch between the threads is
    forced where it did harm: B looks while A's pause is on, A ends its pause, B goes on."""
    path = str(tmp_path / "store")
    with EventStore(path, durable=False) as store:
        store.append([Event("E", k) for k in range(100)])
    b_looked, a_resumed = threading.Event(), threading.Event()
    errors: list[str] = []

    class Steered:
        """The gc module, with thread A and B's steps put in the harmful order."""

        def __getattr__(self, name: str) -> Any:
            return getattr(gc, name)

        def isenabled(self) -> bool:
            on = gc.isenabled()
            if threading.current_thread().name == "B":
                b_looked.set()
                a_resumed.wait(GUARD)
            return on

        def disable(self) -> None:
            gc.disable()
            if threading.current_thread().name == "A" and not b_looked.is_set():
                threading.Thread(target=read, name="B").start()
                b_looked.wait(GUARD)

        def enable(self) -> None:
            gc.enable()
            if threading.current_thread().name == "A":
                a_resumed.set()

    def read() -> None:
        try:
            with EventStore(path, durable=False) as handle:
                assert len(list(handle.read())) == 100
        except BaseException:
            errors.append(traceback.format_exc())

    monkeypatch.setattr(reading, "gc", Steered())
    assert gc.isenabled()
    a = threading.Thread(target=read, name="A")
    a.start()
    a.join(GUARD)
    for t in threading.enumerate():
        if t.name == "B":
            t.join(GUARD)
    on = gc.isenabled()
    gc.enable()
    assert not errors, errors[0]
    assert b_looked.is_set(), "the reads did not pause the collector"
    assert on, "the collector was left off"
