"""Pack files: ``packs/<first:012d>-<last:012d>.pack`` holds records ``first..last``, their exact
bytes as they were in the log segments (so every hash verifies byte for byte), in blocks
compressed independently, so that reading one event decompresses one block. This is the only
module that writes or reads pack bytes; records are cut and parsed through :mod:`.record`.

Layout (integers unsigned, big-endian)::

    header   8 bytes   magic "KRPACK" (6 bytes), version (u16) = 3
    blocks             each a zlib stream (RFC 1950) of a run of whole records, back to back
    table    32 bytes per block, in position order:
                       first position (u64), record count (u32), file offset (u64),
                       compressed length (u32), uncompressed length (u32),
                       CRC-32 of the compressed bytes (u32)
    trailer  114 bytes magic "KRPEND" (6 bytes), first (u64), last (u64), record count (u64),
                       block count (u32), table offset (u64), CRC-32 of the table (u32),
                       chain hash of the last record (32 bytes), SHA-256 of every byte before
                       the trailer (32 bytes), CRC-32 of the trailer's previous 110 bytes (u32)

A block holds whole records and at most ``block_bytes`` uncompressed bytes (64 KiB unless the
writer is told otherwise), except that a record bigger than that gets a block of its own. The
first block starts at byte 8, each next one where the previous ends, the table right after the
last. The CRCs make any damage to the header, table or trailer visible on open, and to a block
when it is read; :meth:`PackReader.verify` also checks the SHA-256, every record's checksum, body
hash, position and chain, and that the pack ends on a commit mark (a pack holds whole batches).

Durability is the caller's: it writes a pack under a temporary name (or an anonymous file),
fsyncs it, renames (or links) it to :func:`name_of`, and fsyncs the folder.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Self

from .. import fileio
from . import record

VERSION = 3
BLOCK_BYTES = 1 << 16
_HEAD_BYTES = struct.pack(">6sH", b"KRPACK", VERSION)
_ENTRY = struct.Struct(">QIQIII")
_TRAILER = struct.Struct(">6sQQQIQI32s32sI")
TRAILER_SIZE = _TRAILER.size
_TRAILER_MAGIC = b"KRPEND"
_NAME_RE = re.compile(r"\A(\d{12})-(\d{12})\.pack\Z")
_READ_CHUNK = 1 << 20


class PackError(ValueError):
    """A pack file that does not verify, or bytes a writer cannot pack."""


class _Closing:
    """Context management for the writer and the reader."""

    def close(self) -> None:
        """Release the file."""


    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def name_of(first: int, last: int) -> str:
    """The file name of the pack of positions ``first..last``."""
    return f"{first:012d}-{last:012d}.pack"


def parse_name(name: str) -> tuple[int, int] | None:
    """``(first, last)`` of a pack file name, or None when it is not one."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    return (first, last) if 1 <= first <= last else None


@dataclass(frozen=True, slots=True)
class Block:
    """One entry of the block table."""

    first: int
    count: int
    offset: int
    clen: int
    ulen: int
    crc: int


@dataclass(frozen=True, slots=True)
class PackInfo:
    """What a finished pack holds: its trailer's fields and its size."""

    first: int
    last: int
    count: int
    blocks: int
    size: int
    last_chain: bytes
    sha256: bytes


def _skip(buf: bytes, start: int, n: int) -> int:
    """The offset just after the ``n``-th newline from ``start``: records never hold a raw
    newline before their own, so this steps over ``n`` whole records without parsing them."""
    for _ in range(n):
        start = buf.index(b"\n", start) + 1
    return start


class PackWriter(_Closing):
    """Writes one pack, streaming: at most one block is held besides the run being added.

    ``target`` is a path (created, must not exist; closed by :meth:`finish` or :meth:`close`)
    or an open writable descriptor positioned at 0 (left open; ``name`` labels it for fault
    injection). Writes go through :mod:`kroniko_ops.fileio`; nothing is fsynced here.
    """

    def __init__(self, target: int | str, block_bytes: int = BLOCK_BYTES, level: int = 6,
                 name: str = "") -> None:
        if block_bytes < 1:
            raise ValueError("block_bytes must be positive")
        self.block_bytes, self.level = block_bytes, level
        if isinstance(target, str):
            self.name, self._owned = target, True
            self._fd = fileio.open_write(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        else:
            self.name, self._fd, self._owned = name, target, False
        self._digest, self._offset, self._first = hashlib.sha256(), 0, 0
        self._blocks: list[Block] = []
        self._pending = bytearray()
        self._next = 0  # the position the next add() must start at
        self._flushed = 0  # the position the next block must start at
        self._tail = b""  # the last record written, for finish() to check
        self._write(_HEAD_BYTES)

    def _write(self, data: bytes) -> None:
        fileio.write_all(self._fd, data, self.name)
        self._digest.update(data)
        self._offset += len(data)

    def add(self, run: bytes | bytearray, first_position: int) -> None:
        """Append a run of whole raw records whose first position is ``first_position`` (the
        pack's first when this is the first run, else the position after the previous run)."""
        if not run:
            return
        if run[-1] != 10:
            raise PackError(f"{self.name}: a run must end with a whole record")
        if self._next == 0:
            if first_position < 1:
                raise PackError(f"{self.name}: position {first_position} is not a position")
            self._first = self._next = self._flushed = first_position
        elif first_position != self._next:
            raise PackError(f"{self.name}: run starts at {first_position}, expected {self._next}")
        self._next += run.count(b"\n")
        pending, pos, n = self._pending, 0, len(run)
        while pos < n:
            room = self.block_bytes - len(pending)
            if n - pos <= room:
                pending += run[pos:]
                break
            cut = run.rfind(b"\n", pos, pos + room) + 1
            if cut == 0 and pending:  # the next record does not fit: close this block first
                self._flush()
                continue
            if cut == 0:  # a record bigger than a block: a block of its own
                cut = run.index(b"\n", pos) + 1
            pending += run[pos:cut]
            self._flush()
            pos = cut

    def _flush(self) -> None:
        data = bytes(self._pending)
        self._pending.clear()
        count = data.count(b"\n")
        tail = data[data.rfind(b"\n", 0, len(data) - 1) + 1:]
        try:  # a cheap guard against runs fed out of order: check each block's ends
            first = record.parse_header(record.leading_header(data)).position
            last = record.parse_header(record.leading_header(tail)).position
        except record.RecordError as exc:
            raise PackError(f"{self.name}: block at {self._flushed}: {exc}") from None
        if first != self._flushed or last != self._flushed + count - 1:
            raise PackError(f"{self.name}: block holds {first}..{last}, expected {self._flushed}..")
        packed = zlib.compress(data, self.level)
        self._blocks.append(Block(first, count, self._offset, len(packed), len(data), zlib.crc32(packed)))
        self._write(packed)
        self._flushed += count
        self._tail = tail

    def finish(self, last_chain: bytes | None = None) -> PackInfo:
        """Write the last block, the table and the trailer. ``last_chain`` (the chain hash of
        the last record) is checked against that record when given."""
        if self._pending:
            self._flush()
        if not self._blocks:
            raise PackError(f"{self.name}: a pack needs at least one record")
        head = record.parse_header(record.leading_header(self._tail))
        if last_chain is not None and last_chain != head.chain:
            raise PackError(f"{self.name}: last chain given does not match record {head.position}")
        if not head.commit:
            raise PackError(f"{self.name}: record {head.position} ends no batch (no commit mark)")
        table = b"".join(_ENTRY.pack(b.first, b.count, b.offset, b.clen, b.ulen, b.crc) for b in self._blocks)
        table_offset = self._offset
        self._write(table)
        first, last = self._first, head.position
        sha = self._digest.digest()
        trailer = _TRAILER.pack(_TRAILER_MAGIC, first, last, last - first + 1, len(self._blocks),
                                table_offset, zlib.crc32(table), head.chain, sha, 0)[:-4]
        trailer += struct.pack(">I", zlib.crc32(trailer))
        fileio.write_all(self._fd, trailer, self.name)
        self.close()
        return PackInfo(first, last, last - first + 1, len(self._blocks),
                        self._offset + len(trailer), head.chain, sha)

    def close(self) -> None:
        """Close the file if this writer opened it (a failed pack is the caller's to remove)."""
        if self._owned and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1


def write_pack(target: int | str, runs: Iterable[tuple[int, bytes]], last_chain: bytes | None = None,
               block_bytes: int = BLOCK_BYTES) -> PackInfo:
    """Write a whole pack from ``(first position, raw record bytes)`` runs in position order."""
    with PackWriter(target, block_bytes) as writer:
        for first, run in runs:
            writer.add(run, first)
        return writer.finish(last_chain)


class PackReader(_Closing):
    """One pack, opened and checked (header, trailer, table) on construction, which raises
    :class:`PackError` naming the damage. Attributes: ``first``, ``last``, ``count``,
    ``last_chain``, ``sha256`` (the trailer's), ``size``, ``blocks`` (the table). Blocks are read
    with ``pread``, so threads may share a reader (but close it only once none is reading)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = fileio.open_read(self.path)  # no symlink, FIFO or device where a pack belongs
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _fail(self, what: str) -> PackError:
        return PackError(f"{self.path}: {what}")

    def _load(self) -> None:
        self.size = size = os.fstat(self._fd).st_size
        if size < len(_HEAD_BYTES) + TRAILER_SIZE:
            raise self._fail(f"{size} bytes is too short for a pack")
        if os.pread(self._fd, len(_HEAD_BYTES), 0) != _HEAD_BYTES:
            raise self._fail("bad magic or version at the start")
        raw = os.pread(self._fd, TRAILER_SIZE, size - TRAILER_SIZE)
        fields = _TRAILER.unpack(raw)
        if fields[0] != _TRAILER_MAGIC or zlib.crc32(raw[:-4]) != fields[-1]:
            raise self._fail("the trailer is damaged or missing (truncated file?)")
        _, self.first, self.last, self.count, nblocks, table_offset, table_crc, self.last_chain, self.sha256, _ = fields
        if not 1 <= self.first <= self.last or self.count != self.last - self.first + 1:
            raise self._fail(f"trailer range {self.first}..{self.last} ({self.count} records) is inconsistent")
        if table_offset + nblocks * _ENTRY.size != size - TRAILER_SIZE:
            raise self._fail("the block table does not end where the trailer starts")
        table = os.pread(self._fd, nblocks * _ENTRY.size, table_offset)
        if zlib.crc32(table) != table_crc:
            raise self._fail("the block table fails its CRC")
        self.blocks = [Block(*e) for e in _ENTRY.iter_unpack(table)]
        position, offset = self.first, len(_HEAD_BYTES)
        for i, b in enumerate(self.blocks):
            if b.first != position or b.offset != offset or b.count < 1:
                raise self._fail(f"block {i} of the table is out of place")
            position, offset = position + b.count, offset + b.clen
        if position != self.last + 1 or offset != table_offset:
            raise self._fail("the block table does not cover the pack")
        self._firsts = [b.first for b in self.blocks]

    def _block(self, i: int) -> bytes:
        b = self.blocks[i]
        packed = os.pread(self._fd, b.clen, b.offset)
        if len(packed) != b.clen or zlib.crc32(packed) != b.crc:
            raise self._fail(f"block {i} (positions {b.first}..) fails its CRC")
        try:
            data = zlib.decompress(packed, bufsize=b.ulen)
        except zlib.error as exc:
            raise self._fail(f"block {i} does not decompress: {exc}") from None
        if len(data) != b.ulen or data[:12] != b"%012d" % b.first:
            raise self._fail(f"block {i} decompresses to other bytes than the table says")
        return data

    def _find(self, position: int) -> int:
        if not self.first <= position <= self.last:
            raise IndexError(f"position {position} is not in pack {self.first}..{self.last}")
        return bisect.bisect_right(self._firsts, position) - 1

    def record(self, position: int) -> record.Record:
        """The record at ``position`` (``offset`` is within its decompressed block); raises
        ``IndexError`` outside ``first..last``."""
        i = self._find(position)
        data = self._block(i)
        try:
            rec = record.parse_at(data, _skip(data, 0, position - self.blocks[i].first))
        except ValueError as exc:  # a RecordError, or too few newlines in the block
            raise self._fail(f"position {position}: {exc}") from None
        if rec.position != position:
            raise self._fail(f"record {rec.position} found where {position} belongs")
        return rec

    def read_range(self, lo: int, hi: int) -> Iterator[bytes]:
        """The raw bytes of records ``lo..hi``, one chunk of whole records per block."""
        if lo > hi:
            return
        i = self._find(lo)
        self._find(hi)
        while i < len(self.blocks) and self.blocks[i].first <= hi:
            b, data = self.blocks[i], self._block(i)
            start = _skip(data, 0, lo - b.first) if b.first < lo else 0
            end = _skip(data, start, hi - max(lo, b.first) + 1) if b.first + b.count - 1 > hi else len(data)
            yield data[start:end] if start or end != len(data) else data
            i += 1

    def bodies_range(self, lo: int, hi: int) -> Iterator[bytes]:
        """The JSON bodies of records ``lo..hi`` in order (split, not parsed: see
        :func:`record.bodies`)."""
        for chunk in self.read_range(lo, hi):
            yield from record.bodies(chunk)

    def verify(self) -> list[str]:
        """Every problem found reading the whole pack (empty when it is sound)."""
        problems: list[str] = []
        digest = hashlib.sha256()
        for offset in range(0, self.size - TRAILER_SIZE, _READ_CHUNK):
            digest.update(os.pread(self._fd, min(_READ_CHUNK, self.size - TRAILER_SIZE - offset), offset))
        if digest.digest() != self.sha256:
            problems.append("the file fails its SHA-256")
        chain: bytes | None = None
        last: record.Record | None = None
        for i, b in enumerate(self.blocks):
            try:
                data = self._block(i)
                recs = list(record.iter_records(data))
            except (PackError, record.RecordError) as exc:
                problems.append(str(exc) if isinstance(exc, PackError) else f"block {i}: {exc}")
                chain = None
                continue
            for k, rec in enumerate(recs):
                if rec.position != b.first + k:
                    problems.append(f"block {i}: record {rec.position} where {b.first + k} belongs")
                if data[rec.offset + 208] not in (record.COMMIT, record.MORE):
                    problems.append(f"record {rec.position} has no valid commit mark")
                if not record.body_hash_ok(rec):
                    problems.append(f"record {rec.position} fails its event hash")
                if chain is not None and record.chain_of(chain, rec.event_hash) != rec.chain:
                    problems.append(f"record {rec.position} breaks the chain")
                chain, last = rec.chain, rec
            if len(recs) != b.count:
                problems.append(f"block {i} holds {len(recs)} records, the table says {b.count}")
        if last is not None and last.position == self.last:
            if last.chain != self.last_chain:
                problems.append("the last record's chain differs from the trailer's")
            if not last.commit:
                problems.append(f"record {last.position} ends no batch (no commit mark)")
        return problems

    def close(self) -> None:
        """Close the file descriptor."""
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        # A view forgets packs that compaction merged away; the last reader's reference closes it.
        self.close()


def verify_file(path: str | os.PathLike[str]) -> list[str]:
    """The problems of the pack at ``path``, an unreadable header, table or trailer included."""
    try:
        with PackReader(path) as reader:
            return reader.verify()
    except PackError as exc:
        return [str(exc)]
