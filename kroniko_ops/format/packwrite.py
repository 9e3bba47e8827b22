"""Writing a version 4 (dense) pack (the format is in :mod:`.pack`, which reads it)."""

from __future__ import annotations

import bisect
import hashlib
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from itertools import accumulate
from operator import add

import zstandard

from .. import fileio
from . import packblock, record
from .pack import (
    BLOCK_BYTES,
    HEADS,
    LEVEL,
    TRAILER,
    TRAILER_MAGIC,
    VERSION,
    Closing,
    PackError,
    PackInfo,
    parse_ids,
)
from .packblock import Commits
from .packtable import Block, encode_table


class PackWriter(Closing):
    """Writes one version 4 pack, streaming: at most one block is held besides what is being added.

    ``target`` is a path (created, must not exist; closed by :meth:`finish` or :meth:`close`) or
    an open writable descriptor positioned at 0 (left open; ``name`` labels it for fault
    injection). ``chain_before`` is the chain hash before the first event: the writer recomputes
    every event hash and the chain from it. Nothing is fsynced here.
    """

    def __init__(self, target: int | str, chain_before: bytes, block_bytes: int = BLOCK_BYTES, level: int = LEVEL,
                 name: str = "") -> None:
        if block_bytes < 1:
            raise ValueError("block_bytes must be positive")
        if len(chain_before) != 32:
            raise ValueError("chain_before must be a 32-byte SHA-256 digest")
        self.block_bytes = block_bytes
        self._zc = zstandard.ZstdCompressor(level=level, write_checksum=False, write_content_size=True)
        if isinstance(target, str):
            self.name, self._owned = target, True
            self._fd = fileio.open_write(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        else:
            self.name, self._fd, self._owned = name, target, False
        self._digest, self._offset, self._first = hashlib.sha256(), 0, 0
        self._before = self.chain = chain_before
        self._blocks: list[Block] = []
        self._bodies: list[bytes] = []
        self._ids: list[str | bytes] | None = []
        self._commits: Commits = []
        self._bytes = 0
        self._chain_at = b""  # the chain after the last event taken, or b"-" once one came without
        self._next = 0  # the position the next add() must start at
        self._ended = False  # whether the last event added ends its batch
        self._write(HEADS[VERSION])

    def _write(self, data: bytes) -> None:
        fileio.write_all(self._fd, data, self.name)
        self._digest.update(data)
        self._offset += len(data)

    def add_records(self, raw: bytes, first_position: int) -> None:
        """Add a run of whole raw records (already checked) whose first position is
        ``first_position``; their ids are checked against their JSON as blocks are written."""
        ids, bodies, commits = record.split(raw)
        self.add(first_position, bodies, commits, ids)

    def add(self, first_position: int, bodies: Sequence[bytes], commits: Commits,
            ids: Sequence[str | bytes] | None = None, chains: Sequence[bytes] | None = None) -> None:
        """Add events from ``first_position`` (the pack's first when nothing was added yet,
        else the position after the previous ones): their stored bytes, their batches as
        :func:`record.commits` gives them, their ids when known (as text, or as the bytes of
        their record headers; checked against the JSON) and the chain hash after each when the
        caller has recomputed them already (else the writer does, from the chain before the pack)."""
        if not bodies:
            return
        if self._next == 0:
            if first_position < 1:
                raise PackError(f"{self.name}: position {first_position} is not a position")
            self._first = self._next = first_position
        elif first_position != self._next:
            raise PackError(f"{self.name}: events start at {first_position}, expected {self._next}")
        if not commits or commits[-1][0] != len(bodies) - 1:
            raise PackError(f"{self.name}: the batches given do not cover the events from {first_position}")
        start, n = 0, len(bodies)
        # Where each event ends in the block's budget (its JSON, its length and a separator).
        ends = list(map(add, accumulate(map(len, bodies), initial=0), range(0, 5 * n + 5, 5)))
        while start < n:
            room = self.block_bytes - self._bytes
            end = bisect.bisect_right(ends, ends[start] + room, start + 1) - 1
            if end == start and not self._bodies:
                end = start + 1  # an event bigger than a block gets one of its own
            if end == start:  # the next event does not fit: this block is full
                self._flush()
                continue
            self._take(bodies, commits, ids, chains, start, end - 1, ends[end] - ends[start])
            start = end
            if self._bytes >= self.block_bytes or start < n:
                self._flush()
        self._next += n

    def _take(self, bodies: Sequence[bytes], commits: Commits, ids: Sequence[str | bytes] | None,
              chains: Sequence[bytes] | None, a: int, b: int, size: int) -> None:
        base = len(self._bodies)
        self._bodies.extend(bodies[a:b + 1])
        self._chain_at = chains[b] if chains is not None and self._chain_at != b"-" else b"-"
        if ids is None or self._ids is None:
            self._ids = None  # the block's ids are then taken from its events' JSON alone
        else:
            self._ids.extend(ids[a:b + 1])
        for last, stamp, ends in packblock.clip(commits, a, b):
            if self._commits and not self._commits[-1][2]:  # the batch the last group began goes on
                if self._commits[-1][1] != stamp:
                    raise PackError(f"{self.name}: the batch ending at position {self._next + last} "
                                    "changes its commit time midway")
                self._commits.pop()
            self._commits.append((base + last, stamp, ends))
        self._ended = self._commits[-1][2]
        self._bytes += size

    def _flush(self) -> None:
        bodies, commits, given = self._bodies, self._commits, self._ids
        if not bodies:
            return
        first = self._next_block_first()
        payload = packblock.encode(bodies, commits)
        if given is not None:
            # Each event's JSON names the id its record header does (orjson writes keys sorted:
            # the top-level id comes right before "metadata"): a pack keeps only the JSON.
            wanted = [b'"id":"%s","metadata":' % (i if i.__class__ is bytes else i.encode()) for i in given]
            if not all(map(bytes.__contains__, bodies, wanted)):
                k = next(k for k, (b, w) in enumerate(zip(bodies, wanted, strict=True)) if w not in b)
                eid = wanted[k][6:-13].decode("ascii", "replace")
                raise PackError(f"{self.name}: position {first + k}: its JSON does not hold the id {eid!r} of its "
                                "record")
        else:
            array = memoryview(payload)[len(payload) - sum(map(len, bodies)) - len(bodies) - 1:]
            try:
                parse_ids(array, len(bodies))
            except ValueError as exc:
                raise PackError(f"{self.name}: block at position {first}: {exc}") from None
        if self._chain_at == b"-":  # some events came without their chains: recompute them all
            self.chain = packblock.chains(self.chain, bodies)[1][-1]
        else:
            self.chain = self._chain_at
        packed = self._zc.compress(payload)
        self._blocks.append(Block(first, len(bodies), self._offset, len(packed), len(payload), zlib.crc32(packed),
                                  self.chain))
        self._write(packed)
        self._bodies, self._ids, self._commits, self._bytes, self._chain_at = [], [], [], 0, b""

    def _next_block_first(self) -> int:
        return self._blocks[-1].last + 1 if self._blocks else self._first

    def finish(self, last_chain: bytes | None = None) -> PackInfo:
        """Write the last block, the table and the trailer. ``last_chain`` (the chain hash the
        last event must have, e.g. from the records packed) is checked against the recomputed one."""
        self._flush()
        if not self._blocks:
            raise PackError(f"{self.name}: a pack needs at least one event")
        last = self._blocks[-1].last
        if last_chain is not None and last_chain != self.chain:
            raise PackError(f"{self.name}: the chain recomputed up to position {last} differs from the one given: "
                            "an event's bytes differ from the ones its record was hashed from")
        if not self._ended:
            raise PackError(f"{self.name}: position {last} ends no batch (no commit mark)")
        table = encode_table(self._before, self._blocks)
        table_offset = self._offset
        self._write(table)
        first = self._first
        sha = self._digest.digest()
        trailer = TRAILER.pack(TRAILER_MAGIC, first, last, last - first + 1, len(self._blocks), table_offset,
                                zlib.crc32(table), self.chain, sha, 0)[:-4]
        trailer += struct.pack(">I", zlib.crc32(trailer))
        fileio.write_all(self._fd, trailer, self.name)
        self.close()
        return PackInfo(first, last, last - first + 1, len(self._blocks), self._offset + len(trailer), self.chain, sha)

    def close(self) -> None:
        """Close the file if this writer opened it (a failed pack is the caller's to remove)."""
        if self._owned and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1


def write_pack(target: int | str, runs: Sequence[tuple[int, bytes]] | Iterator[tuple[int, bytes]],
               last_chain: bytes | None = None, block_bytes: int = BLOCK_BYTES,
               chain_before: bytes | None = None) -> PackInfo:
    """Write a whole pack from ``(first position, raw records)`` runs in position order; the
    chain before the first is taken from the first record unless given."""
    runs = iter(runs)
    first, raw = next(runs)
    if chain_before is None:
        head = record.parse_at(raw)
        chain_before = _before_of(head)
    with PackWriter(target, chain_before, block_bytes) as writer:
        writer.add_records(raw, first)
        for first, raw in runs:
            writer.add_records(raw, first)
        return writer.finish(last_chain)


def _before_of(rec: record.Record) -> bytes:
    """The chain before ``rec`` when it starts the log; otherwise it cannot be known from the
    record alone, and the caller must say."""
    if rec.position == 1:
        return record.GENESIS
    raise PackError(f"the chain before position {rec.position} must be given")
