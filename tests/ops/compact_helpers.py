"""Helpers of the compaction tests: stores to compact, what a store holds, and a clean bill."""

from __future__ import annotations

import importlib
import os
from typing import Any

from kroniko_ops import Event, EventStore, Query, QueryItem
from kroniko_ops.packs import check_packs
from kroniko_ops.report import Report


def fill(path: str, n: int, batch: int = 7, tags: int = 3, durable: bool = False) -> list[Event]:
    """Append ``n`` events (in batches) and return them with their ids."""
    out = []
    with EventStore(path, durable=durable) as s:
        for start in range(0, n, batch):
            events = [Event("T" if i % 2 else "U", {"i": i, "s": "x" * (i % 13)}, [f"k:{i % tags}", f"e:{i}"],
                            {"m": i} if i % 5 == 0 else None, f"ev-{i}")
                      for i in range(start, min(n, start + batch))]
            s.append(events)
            out += events
    return out


def contents(path: str) -> list[tuple[int, Event]]:
    """Every event of the store, through a fresh handle."""
    with EventStore(path, create=False) as s:
        return [(e.position, e.event) for e in s.read()]


def reads(path: str) -> dict[str, Any]:
    """The answers of a set of reads a user relies on (all, by tag, by type, backwards, limits)."""
    with EventStore(path, create=False) as s:
        head = s.head()
        q_tag = Query([QueryItem(tags=["k:1"])])
        q_type = Query([QueryItem(types=["U"], tags=["k:2"])])

        def run(*args: Any, **kw: Any) -> list[tuple[int, Event]]:
            return [(e.position, e.event) for e in s.read(*args, **kw)]

        return {
            "all": run(), "back": run(backwards=True), "limit": run(limit=3),
            "back-limit": run(backwards=True, limit=4),
            "start": run(start=max(1, head // 2)), "back-start": run(start=max(1, head // 3), backwards=True),
            "tag": run(q_tag), "tag-back": run(q_tag, backwards=True, limit=2), "type": run(q_type),
            "tag-start": run(q_tag, start=max(1, head // 2)),
        }


def maintenance() -> tuple[Any, Any]:
    """``(recover, fsck)`` of the maintenance helpers, each None when not installed."""
    found = []
    for module, name in (("kroniko_ops.ops.recover", "recover"), ("kroniko_ops.ops.fsck", "fsck")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            found.append(None)
    return found[0], found[1]


def problems(path: str) -> list[str]:
    """What a full fsck (or, without it, the pack check and a full read) calls wrong."""
    _recover, fsck = maintenance()
    if fsck is not None:
        report = fsck(path, level="full")
        return [f"{f.code}@{f.position} {f.path}: {f.message}" for f in report.problems]
    report = Report("fsck", path)
    check_packs(path, report, True)
    contents(path)  # every event readable and matching its hash
    tmps = [n for d, _s, files in os.walk(path) for n in files if n.startswith(".tmp-")]
    return [f"{f.code}@{f.position}: {f.message}" for f in report.problems] + [f"temp {t}" for t in tmps]


def recover_then_problems(path: str) -> list[str]:
    """Recovery (when installed) and then :func:`problems`."""
    recover, fsck = maintenance()
    if recover is not None:
        recover(path)
    elif fsck is not None:
        fsck(path, level="full", repair=True)
    return problems(path)
