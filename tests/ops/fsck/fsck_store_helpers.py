"""Helpers for the fsck tests: small format-3 stores with many segments, built through the public
API, and the ways the tests damage them (docs/FORMAT.md says where each byte is)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kroniko_ops import Event, EventStore
from kroniko_ops.format import pack as packfmt
from kroniko_ops.format import packwrite
from kroniko_ops.format import record as recfmt
from kroniko_ops.format import segment as segfmt
from kroniko_ops.report import Report

SEGMENT_BYTES = 4096  # a few records per segment: many sealed segments in a small store


def build(path: str, batches: int = 12, size: int = 3, durable: bool = False) -> int:
    """A store of ``batches`` batches of ``size`` events over several segments; returns the head."""
    with EventStore(path, durable=durable, segment_bytes=SEGMENT_BYTES) as store:
        for b in range(batches):
            store.append([Event(f"T{k % 3}", {"b": b, "k": k, "pad": "x" * 200}, [f"cart:{b % 4}", f"k:{k}"],
                                None, f"ev-{b:03d}-{k}") for k in range(size)])
        return store.head()


def segments(path: str) -> list[int]:
    """The first positions of the store's segments, ascending (the last is the active one)."""
    return sorted(p[0] for n in os.listdir(Path(path, "log")) if (p := segfmt.parse_name(n)) and p[1] == "seg")


def seg_path(path: str, first: int, kind: str = "seg") -> Path:
    """``log/<first>.seg`` or ``.idx``."""
    return Path(path, "log", segfmt.seg_name(first) if kind == "seg" else segfmt.idx_name(first))


def pack_first_segment(path: str) -> Path:
    """Move the first sealed segment's records into a pack, as compaction does."""
    first = segments(path)[0]
    seg = segfmt.SealedSegment(os.path.join(path, "log"), first)
    try:
        target = Path(path, "packs", packfmt.name_of(first, seg.last))
        assert first == 1, "the chain before a later segment is not at hand here"
        packwrite.write_pack(str(target), [(first, seg.read_run(first, seg.last))], seg.seal.last_chain,
                             block_bytes=1024, chain_before=recfmt.GENESIS)
    finally:
        seg.close()
    seg_path(path, first).unlink()
    seg_path(path, first, "idx").unlink()
    return target


def flip(path: str | Path, offset: int) -> None:
    """Change one byte of a file."""
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x01
    Path(path).write_bytes(bytes(data))


def problems(report: Report) -> set[str]:
    """The codes of a report's problems (errors and warnings not repaired)."""
    return {f.code for f in report.problems}


def dead_pid() -> int:
    """The id of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def lost_found(path: str) -> list[str]:
    """The folders of ``lost-found/``."""
    return sorted(os.listdir(Path(path, "lost-found")))


def write_after_records(segment: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` where the segment's next batch would go: right after its last non-zero byte,
    over the preallocated zeros (what a writer killed mid-write leaves)."""
    end = len(Path(segment).read_bytes().rstrip(b"\0"))
    fd = os.open(segment, os.O_WRONLY)
    try:
        os.pwrite(fd, data, end)
    finally:
        os.close(fd)


def lose_last_bytes(segment: str | os.PathLike[str], n: int) -> bytes:
    """What a disk that ignored fsync does to the last ``n`` bytes of a preallocated segment's
    records: the write never reached it, so they read as the zeros that were there before.
    Returns the records as they were."""
    records = Path(segment).read_bytes().rstrip(b"\0")
    fd = os.open(segment, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(n), len(records) - n)
    finally:
        os.close(fd)
    return records
