"""Helpers for the recover / reindex tests, and child-process bodies (importable by spawn)."""

from __future__ import annotations

import os
from pathlib import Path

from kroniko_ops import Event, EventStore
from kroniko_ops.format import segment as segfmt


def build(path: str, batches: int = 10, size: int = 3) -> int:
    """A small store over several segments; returns the head."""
    with EventStore(path, durable=False, segment_bytes=4096) as store:
        for b in range(batches):
            store.append([Event(f"T{k}", {"b": b, "pad": "y" * 150}, [f"cart:{b % 3}"]) for k in range(size)])
        return store.head()


def active_segment(path: str) -> Path:
    """The active (last) segment file."""
    firsts = [p[0] for n in os.listdir(Path(path, "log")) if (p := segfmt.parse_name(n)) and p[1] == "seg"]
    return Path(path, "log", segfmt.seg_name(max(firsts)))


def append_batches(path: str, batches: int) -> None:
    """Append ``batches`` small batches (run in a child process)."""
    with EventStore(path, durable=False, segment_bytes=4096) as store:
        for b in range(batches):
            store.append([Event("Online", {"b": b, "k": k}, [f"online:{b % 5}"]) for k in range(3)])


def write_after_records(segment: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` where the segment's next batch would go: right after its last non-zero byte,
    over the preallocated zeros (what a writer killed mid-write leaves)."""
    end = len(Path(segment).read_bytes().rstrip(b"\0"))
    fd = os.open(segment, os.O_WRONLY)
    try:
        os.pwrite(fd, data, end)
    finally:
        os.close(fd)
