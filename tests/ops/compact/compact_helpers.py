"""Helpers of the compaction tests: stores with many segments, what a store answers to the reads a
user relies on, and the checks that a store is sound."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

import pytest

from kroniko_ops import Event, EventStore, Query, QueryItem, fileio
from kroniko_ops.format import pack as packfmt
from kroniko_ops.format import record as recfmt
from kroniko_ops.format import segment as segfmt
from kroniko_ops.ops.compact import compact

SMALL = 4096  # segment bytes: a segment every dozen events or so


def fill(path: str, n: int, start: int = 0, batch: int = 7, tags: int = 3) -> list[Event]:
    """Append events ``start..start + n - 1`` (in batches) to a store with small segments."""
    out = []
    with EventStore(path, durable=False, segment_bytes=SMALL) as s:
        for a in range(start, start + n, batch):
            events = [Event("T" if i % 2 else "U", {"i": i, "s": "x" * (i % 13)}, [f"k:{i % tags}", f"e:{i}"],
                            {"m": i} if i % 5 == 0 else None, f"ev-{i}")
                      for i in range(a, min(start + n, a + batch))]
            s.append(events)
            out += events
    return out


def contents(path: str) -> list[tuple[int, Event]]:
    """Every event of the store, through a fresh handle."""
    with EventStore(path, create=False) as s:
        return [(e.position, e.event) for e in s.read()]


def reads(path: str) -> dict[str, Any]:
    """The answers of the reads a user relies on: all, backwards, limits, starts, by tag, by type."""
    with EventStore(path, create=False) as s:
        head = s.head()
        q_tag = Query([QueryItem(tags=["k:1"])])
        q_type = Query([QueryItem(types=["U"], tags=["k:2"])])

        def run(*args: Any, **kw: Any) -> list[tuple[int, Event]]:
            return [(e.position, e.event) for e in s.read(*args, **kw)]

        return {
            "head": head, "all": run(), "back": run(backwards=True), "limit": run(limit=3),
            "back-limit": run(backwards=True, limit=4), "start": run(start=max(1, head // 2)),
            "back-start": run(start=max(1, head // 3), backwards=True), "tag": run(q_tag),
            "tag-back": run(q_tag, backwards=True, limit=2), "type": run(q_type),
            "tag-start": run(q_tag, start=max(1, head // 2)),
        }


def files(path: str, folder: str) -> list[str]:
    """The names in a folder of the store, sorted."""
    return sorted(os.listdir(os.path.join(path, folder)))


def soundness(path: str) -> list[str]:
    """What is wrong with the store's log, checked without fsck: every pack and sealed segment
    verifies, together they cover 1..head once, the chain runs unbroken from genesis through
    every record, and no temp file is left."""
    wrong: list[str] = []
    packs = sorted((*r, n) for n in os.listdir(os.path.join(path, "packs")) if (r := packfmt.parse_name(n)))
    for _a, _b, name in packs:
        wrong += [f"{name}: {p}" for p in packfmt.verify_file(os.path.join(path, "packs", name))]
    log = os.path.join(path, "log")
    firsts = sorted(p[0] for n in os.listdir(log) if (p := segfmt.parse_name(n)) and p[1] == "seg")
    for first in firsts[:-1]:
        seg = segfmt.SealedSegment(log, first)
        wrong += seg.verify()
        seg.close()
    ranges = sorted([(a, b) for a, b, _ in packs] + [(f, segfmt.read_idx(os.path.join(log, segfmt.idx_name(f)), f).last)
                                                      for f in firsts[:-1]])
    expect = 1
    for a, b in ranges:
        if a != expect:
            wrong.append(f"containers do not follow each other: {a}..{b} where {expect} belongs")
        expect = b + 1
    with EventStore(path, create=False) as s:
        chain, pos = recfmt.GENESIS, 0
        for rec in s.records(1, s.head()):
            if rec.position != pos + 1 or recfmt.chain_of(chain, rec.event_hash) != rec.chain:
                wrong.append(f"record {rec.position} breaks the chain")
                break
            chain, pos = rec.chain, rec.position
        if pos != s.head():
            wrong.append(f"records end at {pos}, the head is {s.head()}")
    kinds = [p for n in os.listdir(log) if (p := segfmt.parse_name(n))]
    wrong += [f"offset index without its segment: {f}" for f, k in kinds if k == "idx" and (f, "seg") not in kinds]
    wrong += [f"temp file {n}" for d, _s, names in os.walk(path) for n in names if n.startswith(".tmp-")]
    return wrong


def fsck_problems(path: str) -> list[str]:
    """What ``kroniko_ops.fsck`` (full) calls wrong."""
    from kroniko_ops import fsck

    report = fsck(path)
    return [f"{f.code}@{f.position} {f.path}: {f.message}" for f in report.problems]


def compact_dying_at(path: str, when: Callable[[str, str], bool], run: Callable[[str], object] = compact) -> None:
    """A compaction of ``path`` (``run``) that stops (an EIO) at the first file operation
    ``when(op, path)`` names, as a run killed there would; it must raise."""
    def injector(op: str, target: str) -> None:
        if when(op, target):
            raise OSError(errno.EIO, "injected", target)

    previous = fileio.set_fault_injector(injector)
    try:
        with pytest.raises(OSError):
            run(path)
    finally:
        fileio.set_fault_injector(previous)


def removing_packs(op: str, path: str) -> bool:
    """The removal of a merge's input packs (not of a temp pack)."""
    return op == "unlink" and path.endswith(".pack") and ".tmp-" not in path
