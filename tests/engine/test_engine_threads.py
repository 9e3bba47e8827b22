"""Threads sharing one store handle: appends from several threads are serialised, and reads
running meanwhile (while segments roll under them) are whole, gap-free and end at their head."""

from __future__ import annotations

import threading
import traceback
from pathlib import Path

from kroniko_ops import Event, EventStore, Query, QueryItem

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
