"""Segments roll when full, a batch never spans two, and what a reader gets does not depend on
where the segment boundaries fall. Looking up one event touches only the segment holding it."""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engine_mp_workers as workers
import pytest
from engine_helpers import run_child, sealed, segments

from kroniko_ops import Event, EventStore, Query, QueryItem, logview
from kroniko_ops.format import record, segment

SEG = 4096


def _batches(seed: int, n: int) -> list[list[Event]]:
    """``n`` batches of 1-12 events of varied sizes, types and tags (a few bigger than a segment)."""
    rnd = random.Random(seed)
    out = []
    for b in range(n):
        size = rnd.choice([1, 1, 2, 3, 5, 12])
        pad = rnd.choice([0, 10, 200, 900])
        out.append([Event(rnd.choice("ABC"), {"b": b, "i": i, "pad": "p" * pad},
                          [f"b:{b}", f"mod:{(b + i) % 7}"] + (["rare"] if rnd.random() < 0.03 else []), None,
                          f"e-{b}-{i}")
                    for i in range(size)])
    out[n // 3] = [Event("Huge", {"i": i, "pad": "h" * 3000}, ["huge"], None, f"huge-{i}")
                   for i in range(4)]  # together more than SEG bytes
    return out


def _segment_records(path: str) -> dict[int, list[record.Record]]:
    """Every segment's records, parsed from its file."""
    out = {}
    for first in segments(path):
        data = Path(path, "log", segment.seg_name(first)).read_bytes().rstrip(b"\0")
        out[first] = list(record.iter_records(data))
    return out


@pytest.fixture(scope="module")
def rolled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EventStore, list[list[Event]], list[int]]]:
    """A store of 4096-byte segments filled with :func:`_batches`, and each batch's last position."""
    path = str(tmp_path_factory.mktemp("rolled") / "store")
    batches = _batches(1, 150)
    with EventStore(path, durable=False, segment_bytes=SEG) as store:
        lasts = [store.append(b) for b in batches]
        yield store, batches, lasts


def test_segments_roll_and_batches_never_span_two(rolled: tuple[EventStore, list[list[Event]], list[int]]) -> None:
    store, _batches, lasts = rolled
    recs = _segment_records(store.path)
    firsts = sorted(recs)
    assert len(firsts) > 20, "4096-byte segments roll"
    assert sealed(store.path) == firsts[:-1], "every segment but the last is sealed"
    batch_ends = set(lasts)
    expect = 1
    for first in firsts:
        rs = recs[first]
        assert rs, f"segment {first} is empty"
        assert [r.position for r in rs] == list(range(first, first + len(rs)))
        assert first == expect
        expect = first + len(rs)
        # A segment starts right after a batch's end and ends with a whole batch.
        assert first == 1 or first - 1 in batch_ends
        assert rs[-1].commit and rs[-1].position in batch_ends
        size = os.path.getsize(os.path.join(store.path, "log", segment.seg_name(first)))
        if size > SEG:
            # Only a single batch bigger than a segment overflows one, and it is alone there.
            assert all(not r.commit for r in rs[:-1]), f"segment {first} holds an oversized batch and more"
    assert expect == store.head() + 1


def test_a_batch_bigger_than_a_segment_gets_one_of_its_own(
        rolled: tuple[EventStore, list[list[Event]], list[int]]) -> None:
    store, batches, lasts = rolled
    k = len(batches) // 3
    first, last = lasts[k] - 3, lasts[k]
    assert first in segments(store.path) and last + 1 in segments(store.path)
    assert [e.position for e in store.read(Query([QueryItem(tags=["huge"])]))] == list(range(first, last + 1))


def test_reads_do_not_depend_on_segment_boundaries(
        tmp_path: Path, rolled: tuple[EventStore, list[list[Event]], list[int]]) -> None:
    store, batches, lasts = rolled
    with EventStore(str(tmp_path / "one-segment"), durable=False) as flat:
        assert [flat.append(b) for b in batches] == lasts
        assert len(segments(flat.path)) == 1

        def same(*args: Any, **kw: Any) -> None:
            got = [(e.position, e.event) for e in store.read(*args, **kw)]
            assert got == [(e.position, e.event) for e in flat.read(*args, **kw)], (args, kw)

        every = [e for b in batches for e in b]
        assert [e.event for e in store.read()] == [e.event for e in flat.read()]
        assert len(every) == store.head() and [e.type for e in every] == [e.type for e in store.read()]
        same(backwards=True)
        head = store.head()
        for start in (1, 2, 57, head // 2, head - 1, head, head + 5):
            same(start=start, limit=37)
            same(start=start, backwards=True, limit=41)
        for q in (Query([QueryItem(tags=["rare"])]), Query([QueryItem(types=["B"], tags=["mod:3"])]),
                  Query([QueryItem(tags=["mod:1"]), QueryItem(types=["Huge"])]), Query([QueryItem(types=["C"])])):
            same(q)
            same(q, backwards=True)
            same(q, start=head // 3, limit=5)
        # A fresh handle sees the same, and so does every record fetched one by one.
        with EventStore(store.path, durable=False) as again:
            assert [(e.position, e.event) for e in again.read()] == [(e.position, e.event) for e in flat.read()]
            for pos in range(1, head + 1, 17):
                assert again.view.record(pos).position == pos


def test_sealed_segments_verify(rolled: tuple[EventStore, list[list[Event]], list[int]]) -> None:
    store, _batches, _lasts = rolled
    for first in sealed(store.path):
        seg = segment.SealedSegment(os.path.join(store.path, "log"), first)
        try:
            assert seg.verify() == []
        finally:
            seg.close()


def _log_fds(path: str) -> Counter[str]:
    """The store's segment files this process holds open (with how many descriptors each)."""
    out: Counter[str] = Counter()
    log = os.path.realpath(os.path.join(path, "log"))
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if os.path.dirname(target) == log:
            out[os.path.basename(target)] += 1
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc")
def test_reading_one_event_touches_only_its_segment(
        monkeypatch: pytest.MonkeyPatch, rolled: tuple[EventStore, list[list[Event]], list[int]]) -> None:
    store, batches, lasts = rolled
    outside = _log_fds(store.path)  # the fixture's own handle
    with EventStore(store.path, durable=False) as fresh:
        before = _log_fds(store.path)
        assert before - outside == Counter([segment.seg_name(segments(store.path)[-1])]), \
            "opening a store opens only the active segment"
        reads: list[tuple[str, int]] = []
        real_pread = os.pread

        def counting(fd: int, n: int, offset: int) -> bytes:
            reads.append((os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), n))
            return real_pread(fd, n, offset)

        monkeypatch.setattr(os, "pread", counting)
        b = 40
        (got,) = list(fresh.read(Query([QueryItem(tags=[f"b:{b}"])]), limit=1))
        assert got.position == lasts[b] - len(batches[b]) + 1
        holder = max(f for f in segments(store.path) if f <= got.position)
        monkeypatch.undo()
        opened = _log_fds(store.path) - before
        assert opened == Counter([segment.seg_name(holder)])
        active = segment.seg_name(segments(store.path)[-1])
        seg_reads = [(name, n) for name, n in reads if name.endswith(".seg") and name != active]
        assert {name for name, _ in seg_reads} == {segment.seg_name(holder)}
        assert sum(n for _, n in seg_reads) < SEG, "one record's bytes, not the segment's"


def test_a_read_across_many_segments_keeps_few_open(rolled: tuple[EventStore, list[list[Event]], list[int]]) -> None:
    store, _batches, _lasts = rolled
    outside = _log_fds(store.path)
    with EventStore(store.path, durable=False) as fresh:
        assert len(list(fresh.read())) == store.head()
        assert len(list(fresh.read(backwards=True))) == store.head()
        if os.path.isdir("/proc/self/fd"):
            # Kept open for the next reads, but never more than a quarter of the open-files limit.
            assert (_log_fds(store.path) - outside).total() <= logview.open_limit() + 8


def test_reading_many_segments_under_a_low_descriptor_limit(
        rolled: tuple[EventStore, list[list[Event]], list[int]]) -> None:
    # A whole-store read must not hold one descriptor per segment: run it with 64 descriptors.
    store = rolled[0]
    assert len(segments(store.path)) > 64
    assert run_child(workers.count_under_low_limits, store.path) == (store.head(),) * 3
