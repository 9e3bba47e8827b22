"""Reads load only what they return: a tag or type read touches only the segments holding its
matches, ``start``/``backwards``/``limit`` are applied before records are read, and ``head()``
reads no segment at all. Counted in segment files and bytes read, not seconds."""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Iterator
from typing import Any

import pytest
from engine_helpers import segments

from kroniko_ops import Event, EventStore, Query, QueryItem
from kroniko_ops.format import segment

N = 300
RARE_TAG = (10, 150, 290)
RARE_TYPE = (5, 6, 200, 201)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """300 events in 4 KiB segments; tag ``rare`` on 3, type ``Rare`` on 4, ``common`` on all."""
    path = str(tmp_path_factory.mktemp("cost") / "store")
    with EventStore(path, durable=False, segment_bytes=4096) as store:
        for chunk in range(0, N, 10):
            store.append([Event("Rare" if n in RARE_TYPE else "Common", n,
                                ["common"] + (["rare"] if n in RARE_TAG else []), None, f"e-{n}")
                          for n in range(chunk, chunk + 10)])
        with store.locked():
            store.flush_index()
    assert len(segments(path)) > 20
    return path


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch, big: str) -> Iterator[tuple[EventStore, dict[int, int]]]:
    """A fresh handle on the store and, filled while the test runs, the bytes read from each
    sealed segment (by its first position)."""
    active = segments(big)[-1]
    seen: dict[int, int] = {}
    with EventStore(big, durable=False) as store:
        real_pread = os.pread

        def counting(fd: int, n: int, offset: int) -> bytes:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            parsed = segment.parse_name(name)
            if parsed is not None and parsed[1] == "seg" and parsed[0] != active:
                seen[parsed[0]] = seen.get(parsed[0], 0) + n
            return real_pread(fd, n, offset)

        monkeypatch.setattr(os, "pread", counting)
        yield store, seen
        monkeypatch.undo()


def _holder(path: str, position: int) -> int:
    return max(f for f in segments(path) if f <= position)


def _read(store: EventStore, query: Query | None = None, **kw: Any) -> list[int]:
    return [e.data for e in store.read(query, **kw)]


pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names descriptors through /proc")


def test_tag_read_touches_only_the_segments_of_its_matches(big: str, reads: tuple[EventStore, dict]) -> None:
    store, seen = reads
    assert _read(store, Query([QueryItem(tags=["rare"])])) == list(RARE_TAG)
    assert set(seen) <= {_holder(big, n + 1) for n in RARE_TAG}
    assert sum(seen.values()) < 3 * 1024  # three records, not three segments


def test_type_read_touches_only_the_segments_of_its_matches(big: str, reads: tuple[EventStore, dict]) -> None:
    store, seen = reads
    assert _read(store, Query([QueryItem(types=["Rare"], tags=["common"])])) == list(RARE_TYPE)
    assert set(seen) <= {_holder(big, n + 1) for n in RARE_TYPE}


def test_limit_start_and_backwards_read_only_what_is_returned(big: str, reads: tuple[EventStore, dict]) -> None:
    store, seen = reads
    assert _read(store, limit=2) == [0, 1]
    assert set(seen) == {1}
    seen.clear()
    assert _read(store, backwards=True, limit=2) == [299, 298]
    assert set(seen) <= {_holder(big, 299)}
    seen.clear()
    assert _read(store, start=151, limit=3) == [150, 151, 152]
    assert set(seen) <= {_holder(big, 151), _holder(big, 153)}
    seen.clear()
    assert _read(store, Query([QueryItem(tags=["rare"])]), backwards=True, limit=1) == [290]
    assert set(seen) <= {_holder(big, 291)}


def test_head_and_an_empty_match_read_no_segment(reads: tuple[EventStore, dict]) -> None:
    store, seen = reads
    assert store.head() == N
    assert _read(store, Query([QueryItem(tags=["absent"])])) == []
    assert _read(store, Query([QueryItem(types=["Rare"], tags=["rare"])])) == []
    assert seen == {}


def test_a_read_splits_only_the_unindexed_records_that_may_match(tmp_path: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Records past the index checkpoint are searched as raw bytes first: a run holding none of
    the query's tags is never split into records (an entity read after 200 unindexed appends
    took twice as long when every run was split and each record tested)."""
    from kroniko_ops.format import record

    path = str(tmp_path / "store")
    with EventStore(path, durable=False) as store:
        store.append([Event("A", n, [f"order:{n % 7}"]) for n in range(20)])
        with store.locked():
            store.flush_index()
        store.append([Event("Noted", n, [f"note:{n}"]) for n in range(150)])
        store.append(Event("A", "late", ["order:late"]))
        assert store.index.checkpoint()[0] == 20  # the rest is the unindexed tail
        split: list[int] = []
        plain = record.bodies_commits
        monkeypatch.setattr(record, "bodies_commits", lambda raw: split.append(raw.count(b"\n")) or plain(raw))
        assert [e.data for e in store.read(Query([QueryItem(tags=["order:3"])]))] == [3, 10, 17]
        assert split == [1, 1, 1]  # the three indexed matches only: no run of the tail holds "order:3"
        split.clear()
        assert [e.data for e in store.read(Query([QueryItem(tags=["order:late"])]))] == ["late"]
        assert 0 < sum(split) < 151  # of the 151 unindexed records, only the run holding it was split


def test_events_kept_from_a_read_are_two_objects_for_the_collector_each(big: str) -> None:
    """A reader that keeps what it read (a projection, ``list(store.read())``) pays the cyclic
    garbage collector per object it tracks, at every collection while the events age: a read
    event and its event are one object each, with no attribute dict beside them."""
    with EventStore(big, durable=False) as store:
        list(store.read())  # the handle's own caches, warmed before counting
        gc.collect()
        before = len(gc.get_objects())
        events = list(store.read())
        gc.collect()
        grown = len(gc.get_objects()) - before
    assert len(events) == N
    assert grown <= 2 * N + 50, f"{grown} objects tracked for {N} events"
    with pytest.raises(dataclasses.FrozenInstanceError):
        events[0].event.type = "Changed"  # type: ignore[misc]
    assert events[7].event == Event("Common", 7, ["common"], None, "e-7")


def test_a_streamed_read_runs_no_collection_over_its_events(tmp_path: Any) -> None:
    """Events a caller streams are freed as it moves on; the collector has no reason to scan
    them, and a read that started one per group of events spent a sixth of its time there."""
    n = 12_000
    with EventStore(str(tmp_path / "store"), durable=False) as store:
        for a in range(0, n, 1000):
            store.append([Event("E", {"n": k, "note": "x" * 40}, [f"t:{k % 50}"]) for k in range(a, a + 1000)])
        list(store.read(limit=10))  # the handle's own first allocations, before counting
        collections: list[int] = []

        def count(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                collections.append(info["generation"])

        gc.collect()
        gc.callbacks.append(count)
        try:
            seen = sum(1 for e in store.read() if e.data is not None)
        finally:
            gc.callbacks.remove(count)
    assert seen == n
    assert len(collections) <= 4, f"{len(collections)} collections while streaming {n} events"  # 2 here, 8 before
