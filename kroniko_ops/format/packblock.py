"""The inside of one pack block once decompressed (:mod:`.pack` frames, compresses and checks
blocks; this module lays out and cuts what is inside them).

A version 4 (dense) block holds only what cannot be recomputed: the events' canonical JSON (the
id is in it) and their batches' commit marks and times. Integers unsigned big-endian::

    groups   u32 g, then g entries of 13 bytes: event count u32, commit time u64 (microseconds
             since the epoch, 0 when unknown), flags u8 (1: its last event ends its batch)
    lengths  u32 per event: the byte length of its canonical JSON
    array    "[" JSON_1 "," JSON_2 "," ... "]": every event's stored bytes, as one JSON array

so that a block is read with one decompression and one JSON parse; each event's bytes are the
array sliced by the lengths, never re-encoded, so hashes verify byte for byte. Every group but
the last ends its batch (a group is the events of one batch within the block).

A version 3 block holds whole raw records (:mod:`.record`), back to back.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from itertools import accumulate
from operator import add

from . import record

_GROUP = struct.Struct(">IQB")
_COUNT = struct.Struct(">I")
Commits = list[tuple[int, int, bool]]  # as record.commits: (index of a group's last event, time, ends its batch)


class BlockError(ValueError):
    """A decompressed block whose contents do not hold together."""


class Bodies(Sequence[bytes]):
    """The events' stored bytes of a block, sliced from it on demand. Built from the offsets of
    each body (``starts``, ``ends``), or from a dense block's lengths: a point read adds up the
    lengths before its body, and every offset is worked out only when all bodies are iterated
    (a read of the whole block parses its array and never needs them)."""

    __slots__ = ("_at", "_data", "_ends", "_lengths", "_starts")

    def __init__(self, data: bytes, starts: Sequence[int] | None, ends: Sequence[int] | None,
                 lengths: Sequence[int] = (), at: int = 0) -> None:
        self._data, self._starts, self._ends, self._lengths, self._at = data, starts, ends, lengths, at

    def _offsets(self) -> tuple[Sequence[int], Sequence[int]]:
        if self._starts is None:
            # Body i starts after "[" or a comma: at + 1 + (the lengths before it) + i.
            prefix = accumulate(self._lengths, initial=0)
            self._starts = list(map(add, prefix, range(self._at + 1, self._at + 1 + len(self._lengths))))
            self._ends = list(map(add, self._starts, self._lengths))
        return self._starts, self._ends  # type: ignore[return-value]

    def _start(self, i: int) -> int:
        """Where body ``i`` starts: the lengths before it added up (in C, well under a
        microsecond), unless every offset is known already. Working them all out for a point
        read cost 20 us a block, paid on the second read of each block an entity touches."""
        if self._starts is not None:
            return self._starts[i]
        return self._at + 1 + sum(self._lengths[:i]) + i

    def __len__(self) -> int:
        return len(self._lengths) if self._starts is None else len(self._starts)

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        if self._starts is None and self._lengths:
            lengths = self._lengths
            if isinstance(i, slice):
                a, b, _step = i.indices(len(lengths))
                if a >= b:
                    return []
                start = self._start(a)
                out = []
                for n in lengths[a:b]:
                    out.append(self._data[start:start + n])
                    start += n + 1
                return out
            if i < 0:
                i += len(lengths)
            start = self._start(i)
            return self._data[start:start + lengths[i]]
        starts, ends = self._offsets()
        if isinstance(i, slice):
            return [self._data[a:b] for a, b in zip(starts[i], ends[i], strict=True)]
        return self._data[starts[i]:ends[i]]

    def __iter__(self) -> Iterator[bytes]:
        data = self._data
        starts, ends = self._offsets()
        return (data[a:b] for a, b in zip(starts, ends, strict=True))


class Decoded:
    """One decompressed block: ``first`` and ``count`` (positions), ``commits`` (its batches, as
    :func:`record.commits` gives them), ``bodies`` (each event's stored bytes) and, for version 4,
    ``array``: the bytes of one JSON array of every event, ready for one parse. ``size`` is
    about what it holds in memory."""

    __slots__ = ("array", "bodies", "commits", "count", "first", "ids", "size")

    def __init__(self, first: int, bodies: Bodies, commits: Commits, array: bytes | None,
                 ids: list[str] | None, size: int) -> None:
        self.first, self.count, self.bodies, self.commits = first, len(bodies), bodies, commits
        self.array, self.ids, self.size = array, ids, size

    def span(self, lo: int, hi: int) -> tuple[int, Sequence[bytes], Commits, bytes | None]:
        """``(first, bodies, commits, array)`` of positions ``lo..hi`` of this block (``array``
        only when they are the whole block)."""
        a, b = lo - self.first, hi - self.first
        if a == 0 and b == self.count - 1:
            return lo, self.bodies, self.commits, self.array
        return lo, self.bodies[a:b + 1], clip(self.commits, a, b), None


def clip(commits: Commits, a: int, b: int) -> Commits:
    """The groups of events ``a..b`` (indexes into the run ``commits`` describes), re-indexed
    from ``a``; a group cut at ``b`` no longer ends its batch."""
    out: Commits = []
    for last, stamp, ends in commits:
        if last < a:
            continue
        if last >= b:
            out.append((b - a, stamp, ends and last == b))
            break
        out.append((last - a, stamp, ends))
    return out


def encode(bodies: Sequence[bytes], commits: Commits) -> bytes:
    """The payload of a version 4 block (before compression)."""
    groups = [_COUNT.pack(len(commits))]
    prev = -1
    for last, stamp, ends in commits:
        groups.append(_GROUP.pack(last - prev, stamp, 1 if ends else 0))
        prev = last
    lengths = struct.pack(f">{len(bodies)}I", *map(len, bodies))
    return b"".join(groups) + lengths + b"[" + b",".join(bodies) + b"]"


def decode(data: bytes, first: int, count: int) -> Decoded:
    """A version 4 payload of ``count`` events from ``first``; raises :class:`BlockError` when
    its parts do not add up (the CRC of the compressed bytes was checked before)."""
    try:
        (ngroups,) = _COUNT.unpack_from(data, 0)
        at = 4 + ngroups * _GROUP.size
        commits: Commits = []
        last = -1
        for n, stamp, flags in _GROUP.iter_unpack(data[4:at]):
            last += n
            if n < 1 or flags > 1:
                raise BlockError("a batch group of the block is malformed")
            commits.append((last, stamp, flags == 1))
        lengths = struct.unpack_from(f">{count}I", data, at)
    except struct.error:
        raise BlockError("the block is shorter than its tables") from None
    at += 4 * count
    if last != count - 1 or any(not c[2] for c in commits[:-1]):
        raise BlockError(f"the block's batch groups cover {last + 1} events, the table says {count}")
    if count < 1 or at + sum(lengths) + count + 1 != len(data):
        raise BlockError("the block's lengths do not add up to its JSON")
    return Decoded(first, Bodies(data, None, None, lengths, at), commits, memoryview(data)[at:], None,
                   len(data) + 16 * count)


def decode_records(data: bytes, first: int, count: int) -> Decoded:
    """A version 3 block (whole raw records); raises :class:`BlockError` when it does not hold
    ``count`` records from ``first``."""
    lines = data.split(b"\n")
    if lines.pop() or len(lines) != count:
        raise BlockError(f"the block holds {len(lines)} records, the table says {count}")
    starts: list[int] = []
    ends: list[int] = []
    at = 0
    for line in lines:
        starts.append(at + record.header_size(line))
        at += len(line) + 1
        ends.append(at - 1)
    if data[:12] != b"%012d" % first:
        raise BlockError(f"the block's first record is not position {first}")
    return Decoded(first, Bodies(data, starts, ends), record.commits(data), None, None, len(data) + 80 * count)


def chains(before: bytes, bodies: Iterator[bytes] | Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Each body's SHA-256 and the chain hash after it, from the chain ``before``."""
    sha = hashlib.sha256
    hashes = [sha(b).digest() for b in bodies]
    out: list[bytes] = []
    chain = before
    for h in hashes:
        chain = sha(chain + h).digest()
        out.append(chain)
    return hashes, out
