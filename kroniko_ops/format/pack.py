"""Pack files: ``packs/<first:012d>-<last:012d>.pack`` holds the events of positions
``first..last`` in blocks compressed independently, so that reading one event decompresses one
block. The format is defined here, with its reader; :mod:`.packwrite` writes it (one owner, two
files for size), the inside of a block is laid out by :mod:`.packblock`, and raw records are cut
and rebuilt through :mod:`.record`; nothing else slices pack bytes.

Version 4 (dense, written since issue 19) keeps only what cannot be recomputed: each event's
canonical JSON (its id is in it), its batch's commit mark and time, and the chain hash at each
block's end; event hashes, chain hashes and record headers are recomputed (``docs/FORMAT.md``
gives every byte). Version 3 packs (whole raw records in zlib blocks) stay readable; the next
compaction rewrites them. Integers unsigned, big-endian::

    header   8 bytes   magic "KRPACK" (6 bytes), version (u16) = 4
    blocks             each a Zstandard frame (RFC 8878) of one block's payload
    table    32 bytes  the chain hash before the pack's first event (genesis before position 1)
             64 bytes per block, in position order: first position (u64), event count (u32),
                       file offset (u64), compressed length (u32), payload length (u32),
                       CRC-32 of the compressed bytes (u32), chain hash after its last event (32)
    trailer  114 bytes as in version 3: magic "KRPEND", first (u64), last (u64), count (u64),
                       block count (u32), table offset (u64), CRC-32 of the table (u32), chain of
                       the last event (32), SHA-256 of every byte before the trailer (32),
                       CRC-32 of the trailer's previous 110 bytes (u32)

The CRCs make damage to the header, table or trailer visible on open, and to a block when it is
read; :meth:`PackReader.verify` also recomputes every event hash and the chain through each block
and compares it with the table's, so a block whose events changed is named exactly.

Durability is the caller's: it writes a pack under a temporary name (or an anonymous file),
fsyncs it, renames (or links) it to :func:`name_of`, and fsyncs the folder.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import add, eq
from typing import Self

import orjson
import zstandard

from .. import fileio, gcpause
from . import packblock, record
from .packblock import BlockError, Commits, Decoded
from .packtable import Block, Table, decode_columns

VERSION = 4
BLOCK_BYTES = 1 << 16
LEVEL = 1  # measured on event JSON in 64 KiB blocks: faster than level 3, and as small or smaller
HEADS = {v: struct.pack(">6sH", b"KRPACK", v) for v in (3, 4)}
HEAD_SIZE = 8
ENTRY_V3 = struct.Struct(">QIQIII")
ENTRY_SIZE = 64  # bytes of one block's entry in a version 4 table (its columns' widths added up)
TRAILER = struct.Struct(">6sQQQIQI32s32sI")
TRAILER_SIZE = TRAILER.size
TRAILER_MAGIC = b"KRPEND"
_NAME_RE = re.compile(r"\A(\d{12})-(\d{12})\.pack\Z")
_IDS_RE = re.compile(rb"(?:[!-~]{1,64}\n)*")  # ids a record header holds: printable ASCII, no space
_READ_CHUNK = 1 << 20
_local = threading.local()  # a Zstandard context serves one thread at a time


class PackError(ValueError):
    """A pack file that does not verify, or events a writer cannot pack."""


class Closing:
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
class PackInfo:
    """What a finished pack holds: its trailer's fields and its size."""

    first: int
    last: int
    count: int
    blocks: int
    size: int
    last_chain: bytes
    sha256: bytes


@dataclass
class BlockCheck:
    """One block checked whole (:meth:`PackReader.check_block`): ``ids`` and ``docs`` of its
    events (parsed), ``chain`` after its last event as recomputed, ``chains`` after each of its
    events (empty when the hashes were not recomputed), its batches (``commits``) and
    ``problems`` as ``(finding code, message)``."""

    block: Block
    ids: list[str] = field(default_factory=list)
    docs: list[object] = field(default_factory=list)
    chain: bytes | None = None
    chains: list[bytes] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    commits: Commits = field(default_factory=list)


def parse_ids(array: bytes | memoryview, count: int) -> tuple[list[str], list[object]]:
    """The ids and documents of a block's JSON array of ``count`` events; raises ``ValueError``
    when it is not ``count`` objects each with an id a record header can hold."""
    try:
        with gcpause.paused():
            docs = orjson.loads(array)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the block's events are not all JSON ({exc})") from None
    if type(docs) is not list or len(docs) != count:
        raise ValueError(f"the block's JSON is not an array of {count} events")
    try:
        ids = [d["id"] for d in docs]
        text = "\n".join(ids).encode() + b"\n"
    except (KeyError, TypeError):
        raise ValueError("an event of the block is not an object with a string id") from None
    if not _IDS_RE.fullmatch(text):
        raise ValueError("an event id of the block does not fit a record header (1-64 printable ASCII bytes)")
    return ids, docs


def _decompressor() -> zstandard.ZstdDecompressor:
    zd = getattr(_local, "zd", None)
    if zd is None:
        zd = _local.zd = zstandard.ZstdDecompressor()
    return zd




class PackReader(Closing):
    """One pack (version 3 or 4), opened and checked (header, table, trailer) on construction,
    which raises :class:`PackError` naming the damage. Attributes: ``version``, ``first``,
    ``last``, ``count``, ``last_chain``, ``sha256`` (the trailer's), ``size``, ``blocks`` (the
    table) and, in version 4, ``chain_before`` (the chain before ``first``). Blocks are read with
    ``pread``, so threads may share a reader (but close it only once none is reading)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
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
        if size < HEAD_SIZE + TRAILER_SIZE:
            raise self._fail(f"{size} bytes is too short for a pack")
        head = os.pread(self._fd, HEAD_SIZE, 0)
        self.version = next((v for v, h in HEADS.items() if h == head), 0)
        if not self.version:
            raise self._fail("bad magic or version at the start")
        raw = os.pread(self._fd, TRAILER_SIZE, size - TRAILER_SIZE)
        fields = TRAILER.unpack(raw)
        if fields[0] != TRAILER_MAGIC or zlib.crc32(raw[:-4]) != fields[-1]:
            raise self._fail("the trailer is damaged or missing (truncated file?)")
        _, self.first, self.last, self.count, nblocks, table_offset, table_crc, self.last_chain, self.sha256, _ = fields
        if not 1 <= self.first <= self.last or self.count != self.last - self.first + 1:
            raise self._fail(f"trailer range {self.first}..{self.last} ({self.count} records) is inconsistent")
        entry_size, pre = (ENTRY_SIZE, 32) if self.version == 4 else (ENTRY_V3.size, 0)
        if table_offset + pre + nblocks * entry_size != size - TRAILER_SIZE:
            raise self._fail("the block table does not end where the trailer starts")
        table = os.pread(self._fd, pre + nblocks * entry_size, table_offset)
        if zlib.crc32(table) != table_crc:
            raise self._fail("the block table fails its CRC")
        self.chain_before = table[:pre] or None
        if pre:
            columns, chains = decode_columns(table[pre:], nblocks)
        else:
            columns, chains = [list(c) for c in zip(*ENTRY_V3.iter_unpack(table), strict=True)] or [[]] * 6, b""
        self.blocks = Table(columns, chains)
        firsts, counts, offsets, clens = columns[0], columns[1], columns[2], columns[3]
        # Each block starts where the one before ends, in positions and in bytes (checked in C:
        # a pack of millions of events has tens of thousands of blocks to open quickly).
        if not (firsts and firsts[0] == self.first and offsets[0] == HEAD_SIZE and min(counts) >= 1
                and all(map(eq, firsts[1:], map(add, firsts, counts)))
                and all(map(eq, offsets[1:], map(add, offsets, clens)))):
            raise self._fail("the block table is out of place")
        if firsts[-1] + counts[-1] != self.last + 1 or offsets[-1] + clens[-1] != table_offset:
            raise self._fail("the block table does not cover the pack")
        if self.version == 4 and self.blocks.chain(nblocks - 1) != self.last_chain:
            raise self._fail("the block table's last chain differs from the trailer's")
        self._counts = counts
        self._firsts = firsts

    @property
    def raw_bytes(self) -> int:
        """About the bytes its events take in log segments (records with their headers)."""
        extra = 0 if self.version == 3 else record.HEADER - 4
        return sum(b.ulen + extra * b.count for b in self.blocks)

    def bounds(self, i: int) -> tuple[int, int]:
        """The first and last positions of block ``i``."""
        first = self._firsts[i]
        return first, first + self._counts[i] - 1

    def find(self, position: int) -> int:
        """The index of the block holding ``position``; ``IndexError`` outside ``first..last``."""
        if not self.first <= position <= self.last:
            raise IndexError(f"position {position} is not in pack {self.first}..{self.last}")
        return bisect.bisect_right(self._firsts, position) - 1

    def _payload(self, i: int) -> bytes:
        b = self.blocks[i]
        packed = os.pread(self._fd, b.clen, b.offset)
        if len(packed) != b.clen or zlib.crc32(packed) != b.crc:
            raise self._fail(f"block {i} (positions {b.first}..{b.last}) fails its CRC")
        try:
            if self.version == 3:
                data = zlib.decompress(packed, bufsize=b.ulen)
            else:
                data = _decompressor().decompress(packed, max_output_size=b.ulen)
        except (zlib.error, zstandard.ZstdError) as exc:
            raise self._fail(f"block {i} (positions {b.first}..{b.last}) does not decompress: {exc}") from None
        if len(data) != b.ulen:
            raise self._fail(f"block {i} decompresses to other bytes than the table says")
        return data

    def block(self, i: int) -> Decoded:
        """Block ``i`` decompressed and cut into its events (nothing recomputed)."""
        b = self.blocks[i]
        data = self._payload(i)
        try:
            if self.version == 3:
                return packblock.decode_records(data, b.first, b.count)
            return packblock.decode(data, b.first, b.count)
        except BlockError as exc:
            raise self._fail(f"block {i} (positions {b.first}..{b.last}): {exc}") from None

    def spans(self, lo: int, hi: int) -> Iterator[tuple[int, Sequence[bytes], Commits, bytes | None]]:
        """``(first, bodies, commits, array)`` covering positions ``lo..hi``, one per block (see
        :meth:`packblock.Decoded.span`)."""
        if lo > hi:
            return
        i = self.find(lo)
        self.find(hi)
        while i < len(self.blocks) and self.blocks[i].first <= hi:
            b = self.blocks[i]
            yield self.block(i).span(max(lo, b.first), min(hi, b.last))
            i += 1

    def read_range(self, lo: int, hi: int) -> Iterator[bytes]:
        """The raw records of positions ``lo..hi``, one chunk of whole records per block: in
        version 3 the bytes stored, in version 4 rebuilt (exactly as they were in the log)."""
        if lo > hi:
            return
        i = self.find(lo)
        self.find(hi)
        while i < len(self.blocks) and self.blocks[i].first <= hi:
            b = self.blocks[i]
            a, z = max(lo, b.first) - b.first, min(hi, b.last) - b.first
            if self.version == 3:
                data = self._payload(i)
                start = _skip(data, 0, a)
                end = _skip(data, start, z - a + 1)
                yield data if start == 0 and end == len(data) else data[start:end]
            else:
                d = self.block(i)
                try:
                    ids, _docs = parse_ids(d.array, b.count)  # type: ignore[arg-type]
                except ValueError as exc:
                    raise self._fail(f"block {i} (positions {b.first}..{b.last}): {exc}") from None
                before = self._chain_into(i, d, a)
                yield record.rebuild(b.first + a, before, ids[a:z + 1], d.bodies[a:z + 1],
                                     packblock.clip(d.commits, a, z))[0]
            i += 1

    def _chain_into(self, i: int, d: Decoded, a: int) -> bytes:
        """The chain before the ``a``-th event of version 4 block ``i``."""
        before = self.chain_before if i == 0 else self.blocks[i - 1].chain
        assert before is not None
        return packblock.chains(before, d.bodies[:a])[1][-1] if a else before

    def record(self, position: int) -> record.Record:
        """The record at ``position`` (``offset`` is within the bytes of that one record);
        raises ``IndexError`` outside ``first..last``."""
        raw = b"".join(self.read_range(position, position))
        try:
            rec = record.parse_at(raw)
        except record.RecordError as exc:
            raise self._fail(f"position {position}: {exc}") from None
        if rec.position != position:
            raise self._fail(f"record {rec.position} found where {position} belongs")
        return rec

    def check_block(self, i: int, before: bytes | None = None, hashes: bool = True) -> BlockCheck:
        """Check block ``i`` whole: it reads, its events parse, each event hash and the chain
        recomputed from ``before`` (default: the table's chain before it; in version 3 the first
        record's own) reach the chain recorded at its end (unless ``hashes`` is False).
        ``problems`` are ``(code, message)`` with the codes of ``docs/FSCK.md``."""
        b = self.blocks[i]
        chk = BlockCheck(b)
        where = f"block {i} (positions {b.first}..{b.last})"
        try:
            d = self.block(i)
        except PackError as exc:
            chk.problems.append(("pack-corrupt", str(exc)))
            return chk
        if self.version == 3:
            return self._check_records(chk, d, before, where)
        if before is None:
            before = self.chain_before if i == 0 else self.blocks[i - 1].chain
        try:
            chk.ids, chk.docs = parse_ids(d.array, b.count)  # type: ignore[arg-type]
        except ValueError as exc:
            chk.problems.append(("event-unreadable", f"{where}: {exc}"))
        if b"[" + b",".join(d.bodies) + b"]" != d.array:
            chk.problems.append(("pack-corrupt", f"{where}: its JSON array is not its events' bytes joined"))
        if hashes:
            chk.chains = packblock.chains(before, d.bodies)[1]  # type: ignore[arg-type]
        chain = chk.chains[-1] if chk.chains else b.chain
        if chain != b.chain:
            chk.problems.append(("chain-mismatch", f"{where}: the chain recomputed from its events differs from the "
                                 "one recorded at its end (an event's bytes changed after it was packed)"))
        chk.chain = chain
        chk.commits = d.commits
        return chk

    def _check_records(self, chk: BlockCheck, d: Decoded, before: bytes | None, where: str) -> BlockCheck:
        b = chk.block
        data = d.bodies._data  # type: ignore[attr-defined]
        ids, bodies, chain, problems = record.check_run(data, b.first, before)
        kinds = {"header": "log-bad-line", "position": "log-position-mismatch", "hash": "event-hash-mismatch",
                 "chain": "chain-mismatch"}
        for pos, kind in problems:
            chk.problems.append((kinds[kind], f"{where}: record {pos} fails its {kind} check"))
        chk.ids, chk.chain = ids, chain
        try:
            with gcpause.paused():
                docs = orjson.loads(b"[" + b",".join(bodies) + b"]")
            chk.docs = docs if len(docs) == len(bodies) else []
        except orjson.JSONDecodeError:
            chk.problems.append(("event-unreadable", f"{where}: its events are not all JSON"))
        chk.commits = d.commits
        return chk

    def sha_ok(self) -> bool:
        """Whether every byte before the trailer matches the SHA-256 the trailer records."""
        digest = hashlib.sha256()
        for offset in range(0, self.size - TRAILER_SIZE, _READ_CHUNK):
            digest.update(os.pread(self._fd, min(_READ_CHUNK, self.size - TRAILER_SIZE - offset), offset))
        return digest.digest() == self.sha256

    def verify(self) -> list[str]:
        """Every problem found reading the whole pack (empty when it is sound)."""
        problems: list[str] = []
        if not self.sha_ok():
            problems.append("the file fails its SHA-256")
        chain: bytes | None = self.chain_before
        for i, b in enumerate(self.blocks):
            chk = self.check_block(i, chain if self.version == 3 else None)
            problems += [message for _code, message in chk.problems]
            chain = chk.chain if self.version == 3 else b.chain
            if i == len(self.blocks) - 1 and chk.commits and not chk.commits[-1][2]:
                problems.append(f"record {self.last} ends no batch (no commit mark)")
        if self.version == 3 and chain is not None and chain != self.last_chain:
            problems.append("the last record's chain differs from the trailer's")
        return problems

    def close(self) -> None:
        """Close the file descriptor."""
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        # A view forgets packs that compaction merged away; the last reader's reference closes it.
        self.close()


def _skip(buf: bytes, start: int, n: int) -> int:
    """The offset just after the ``n``-th newline from ``start``: records never hold a raw
    newline before their own, so this steps over ``n`` whole records without parsing them."""
    for _ in range(n):
        start = buf.index(b"\n", start) + 1
    return start


def verify_file(path: str | os.PathLike[str]) -> list[str]:
    """The problems of the pack at ``path``, an unreadable header, table or trailer included."""
    try:
        with PackReader(path) as reader:
            return reader.verify()
    except PackError as exc:
        return [str(exc)]
