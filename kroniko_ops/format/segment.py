"""Log segments: ``log/<first>.seg`` holds records ``first..`` and is appended to while it is the
last one; sealing writes ``log/<first>.idx`` beside it (the offset index and the trailer) and
makes the segment immutable.

A segment is created at its full size with every byte written as zero (preallocated), so that an
append overwrites space already written; the records end where the zeros begin (a record never
holds a NUL byte: its header is ASCII and its JSON escapes control characters), never at the
file's size. Sealing trims the file to its records. The next segment is made ahead of time as
``log/next.prealloc`` (zeros, fsynced, no first position yet) and takes its name at the roll.
This is the only module that reads or writes ``.idx`` bytes and the only one that cuts a
segment's bytes into records (through :mod:`.record`).

``.idx`` layout (big-endian): ``count + 1`` unsigned 64-bit offsets (where each record starts,
then the segment's size), then a 118-byte trailer: magic ``KSEAL3`` (6 bytes), first position
(u64), record count (u64), last chain (32 bytes), SHA-256 of the segment file (32 bytes) and
SHA-256 of every ``.idx`` byte before it (32 bytes).
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import os
import re
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .. import fileio
from . import record

SEG_SUFFIX, IDX_SUFFIX = ".seg", ".idx"
SPARE_NAME = "next.prealloc"  # the preallocated next segment, before a roll gives it its first position
_NAME_RE = re.compile(r"\A(\d{12})\.(seg|idx)\Z")
_TRAILER = struct.Struct(">6sQQ32s32s32s")
TRAILER_SIZE = _TRAILER.size
_MAGIC = b"KSEAL3"
READ_CHUNK = 1 << 20
_ZEROS = bytes(READ_CHUNK)


class SegmentError(ValueError):
    """A segment or its offset index does not verify."""


def seg_name(first: int) -> str:
    """The file name of the segment whose first position is ``first``."""
    return f"{first:012d}{SEG_SUFFIX}"


def idx_name(first: int) -> str:
    """The file name of that segment's offset index."""
    return f"{first:012d}{IDX_SUFFIX}"


def parse_name(name: str) -> tuple[int, str] | None:
    """``(first, "seg" | "idx")`` for a segment or index file name, else None."""
    m = _NAME_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


@dataclass(frozen=True)
class Seal:
    """A sealed segment's trailer and offsets."""

    first: int
    count: int
    last_chain: bytes
    seg_sha256: bytes
    offsets: array  # count + 1 entries (u64): each record's start, then the segment's size

    @property
    def last(self) -> int:
        """The segment's last position."""
        return self.first + self.count - 1

    @property
    def size(self) -> int:
        """The segment file's size in bytes."""
        return self.offsets[-1]


def encode_idx(first: int, offsets: Sequence[int], last_chain: bytes, seg_sha256: bytes) -> bytes:
    """The bytes of an offset index: ``offsets`` are the records' starts then the segment's size."""
    body = struct.pack(f">{len(offsets)}Q", *offsets)
    head = _TRAILER.pack(_MAGIC, first, len(offsets) - 1, last_chain, seg_sha256, bytes(32))[:-32]
    digest = hashlib.sha256(body + head).digest()
    return body + head + digest


def decode_idx(data: bytes, first: int) -> Seal:
    """Parse and check an offset index's bytes; raises :class:`SegmentError`."""
    if len(data) < TRAILER_SIZE + 8 or (len(data) - TRAILER_SIZE) % 8:
        raise SegmentError(f"offset index of segment {first} has a bad size ({len(data)} bytes)")
    magic, ifirst, count, chain, seg_sha, digest = _TRAILER.unpack(data[-TRAILER_SIZE:])
    if magic != _MAGIC:
        raise SegmentError(f"offset index of segment {first} has no trailer")
    if hashlib.sha256(data[:-32]).digest() != digest:
        raise SegmentError(f"offset index of segment {first} fails its checksum")
    n = (len(data) - TRAILER_SIZE) // 8
    if ifirst != first or n != count + 1 or count < 1:
        raise SegmentError(f"offset index of segment {first} names first {ifirst} and {count} records "
                           f"but holds {n - 1} offsets")
    offsets = array("Q", data[: n * 8])
    if sys.byteorder == "little":
        offsets.byteswap()
    if offsets[0] != 0 or not all(map(operator.lt, offsets, itertools.islice(offsets, 1, None))):
        raise SegmentError(f"offset index of segment {first} has offsets out of order")
    return Seal(first, count, chain, seg_sha, offsets)


def read_idx(path: str, first: int, max_records: int = 1 << 27) -> Seal:
    """Read and check the offset index at ``path`` (a regular file of a bounded size)."""
    try:
        data = fileio.read_small(path, 8 * (max_records + 1) + TRAILER_SIZE)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise SegmentError(f"offset index of segment {first} cannot be read: {exc.strerror}") from None
    return decode_idx(data, first)


def seal_fast(data: bytes, first: int, last_chain: bytes) -> bytes:
    """Offset index bytes for a whole segment's ``data`` whose records the writer has already
    verified one by one as they were committed: splitting on newlines finds the offsets (a full
    re-parse would hold the writer lock for a whole segment's worth of parsing)."""
    offsets = [0]
    pos = 0
    for line in data.split(b"\n")[:-1]:
        pos += len(line) + 1
        offsets.append(pos)
    if pos != len(data):
        raise SegmentError(f"segment {first} does not end in a whole record")
    last = record.parse_at(data, offsets[-2])
    if last.position != first + len(offsets) - 2 or not last.commit or last.chain != last_chain:
        raise SegmentError(f"segment {first} does not end in its committed tail")
    return encode_idx(first, offsets, last_chain, hashlib.sha256(data).digest())


def build_seal(fd: int, first: int, size: int) -> bytes:
    """Scan a whole segment (``size`` bytes of the open file ``fd``) and return its offset index
    bytes; raises :class:`SegmentError` unless it is exactly complete records ``first..`` ending
    in a commit mark (the segment must hold at least one record)."""
    digest = hashlib.sha256()
    offsets: list[int] = []
    expect, chain, last_commit = first, b"", False
    for rec in scan(fd, 0, size, digest):
        if rec.position != expect:
            raise SegmentError(f"segment {first}: record at byte {rec.offset} holds position "
                               f"{rec.position}, expected {expect}")
        offsets.append(rec.offset)
        expect, chain, last_commit = expect + 1, rec.chain, rec.commit
    if not offsets or not last_commit:
        raise SegmentError(f"segment {first} does not end in a committed record")
    offsets.append(size)
    return encode_idx(first, offsets, chain, digest.digest())


def scan(fd: int, start: int, end: int, digest: hashlib._Hash | None = None) -> Iterator[record.Record]:
    """The records in bytes ``start..end`` of ``fd``, read in chunks (memory stays flat).

    Raises :class:`record.RecordError` at the first bytes that are not a whole record (its
    ``torn`` flag tells bytes cut short from damage); ``digest`` is fed every byte read.
    """
    pos = start
    carry = b""
    while pos < end or carry:
        chunk = os.pread(fd, min(READ_CHUNK, end - pos), pos) if pos < end else b""
        if digest is not None:
            digest.update(chunk)
        buf = carry + chunk
        base = pos - len(carry)
        pos += len(chunk)
        off = 0
        while off < len(buf):
            try:
                rec = record.parse_at(buf, off)
            except record.RecordError as exc:
                if exc.torn and pos < end:
                    break  # the rest of this record is in the next chunk
                raise record.RecordError(f"{exc} (file offset {base + off})", exc.torn) from None
            yield record.Record(rec.position, rec.event_id, rec.event_hash, rec.chain, rec.commit,
                                rec.body, rec.offset + base, rec.size, rec.time)
            off += rec.size
        carry = buf[off:]
        if not chunk and carry:
            raise record.RecordError(f"record at file offset {base + off} is cut short", torn=True)


def data_end(fd: int, size: int | None = None, floor: int = 0) -> int:
    """Where the bytes of a segment file that are not zero end (its records and any torn bytes
    after them; the zeros of the preallocated tail follow): searched back from ``size`` (the
    file's size by default) to ``floor``. Reads the zero tail once: for checks, not appends."""
    end = os.fstat(fd).st_size if size is None else size
    while end > floor:
        n = min(READ_CHUNK, end - floor)
        chunk = os.pread(fd, n, end - n)
        if len(chunk) != n:
            end = (end - n) + len(chunk)  # the file shrank under us: look again from its new end
            continue
        if chunk != (_ZEROS if n == READ_CHUNK else bytes(n)):  # a memcmp: the zero tail is long
            return end - n + len(chunk.rstrip(b"\0"))
        end -= n
    return floor


def first_zero(fd: int, start: int, limit: int) -> int:
    """The offset of the first NUL byte in ``start..limit`` of ``fd``, or ``limit``: where bytes
    written in this boot end (a dead writer's leftovers hold no NUL; zeros follow them)."""
    pos = start
    while pos < limit:
        chunk = os.pread(fd, min(READ_CHUNK, limit - pos), pos)
        if not chunk:
            return pos
        i = chunk.find(b"\0")
        if i >= 0:
            return pos + i
        pos += len(chunk)
    return limit


def holds_no_record(path: str) -> bool:
    """Whether the segment file at ``path`` is empty or starts with a zero byte (created or
    preallocated, never written to: a record starts with a digit)."""
    fd = fileio.open_read(path)
    try:
        return os.pread(fd, 1, 0) in (b"", b"\0")
    finally:
        os.close(fd)


def only_zeros(path: str) -> bool:
    """Whether the file at ``path`` holds nothing but zero bytes (a preallocated segment not yet
    written to)."""
    fd = fileio.open_read(path)
    try:
        return data_end(fd) == 0
    finally:
        os.close(fd)


class SealedSegment:
    """A sealed segment opened for reading: O(1) lookup of a position through its offsets."""

    def __init__(self, directory: str, first: int) -> None:
        self.first = first
        self.path = os.path.join(directory, seg_name(first))
        self.seal = read_idx(os.path.join(directory, idx_name(first)), first)
        self.last = self.seal.last
        self.fd = fileio.open_read(self.path)

    def close(self) -> None:
        """Close the segment's descriptor."""
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        # A view forgets segments it has not used lately; the last reader's reference closes it.
        self.close()

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """The byte range holding positions ``lo..hi``."""
        offs = self.seal.offsets
        return offs[lo - self.first], offs[hi - self.first + 1]

    def read_run(self, lo: int, hi: int) -> bytes:
        """The raw bytes of records ``lo..hi`` (whole records, in order)."""
        a, b = self.span(lo, hi)
        return os.pread(self.fd, b - a, a)

    def record(self, position: int) -> record.Record:
        """The record at ``position``."""
        a, b = self.span(position, position)
        return record.parse_at(os.pread(self.fd, b - a, a))

    def verify(self) -> list[str]:
        """Problems with this segment: its SHA-256 against the trailer, offsets against records."""
        problems: list[str] = []
        digest = hashlib.sha256()
        try:
            offsets = [rec.offset for rec in scan(self.fd, 0, self.seal.size, digest)]
        except record.RecordError as exc:
            return [f"segment {self.first}: {exc}"]
        if os.fstat(self.fd).st_size != self.seal.size:
            problems.append(f"segment {self.first} is {os.fstat(self.fd).st_size} bytes, its index says "
                            f"{self.seal.size}")
        if digest.digest() != self.seal.seg_sha256:
            problems.append(f"segment {self.first} does not match the SHA-256 its index records")
        if offsets != list(self.seal.offsets[:-1]):
            problems.append(f"segment {self.first}: its index's offsets do not match its records")
        return problems
