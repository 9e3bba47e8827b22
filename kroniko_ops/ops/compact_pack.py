"""Packing committed loose events, as a pipeline.

The main thread parses log lines, checks each event against its log hash and writes packs;
worker threads read the next loose files ahead of it and remove the loose files of packs already
published. Those file system calls release the GIL, so they overlap with the Python work. The
order that makes a crash safe is kept per pack: a pack's loose files are removed only after it
was fsynced, read back from disk, checked event by event against the log's hashes, published
and its folder fsynced.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from .. import fileio
from ..log import LINE_LEN
from ..packs import BATCH, Pack, PackError
from ..progress import progress
from .compact_plan import events
from .compact_write import PackWriter

if TYPE_CHECKING:
    from .compact import _Compaction

CHUNK = 2048
READ_AHEAD = 3
READERS = 8
READ_PART = 256
# Removing a file can wait on the disk for milliseconds (the freed blocks are discarded) while
# costing the CPU little: many threads keep many removals in flight.
REMOVERS = 32


class PackDamage(Exception):
    """A loose event is missing or does not match the log, or a pack does not read back."""


def _read_many(paths: list[str]) -> list[bytes | None]:
    """Whole files (None for a missing one), one ``read`` each for the usual small event."""
    out: list[bytes | None] = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            out.append(None)
            continue
        try:
            data = os.read(fd, 1 << 16)
            if len(data) == 1 << 16:
                parts = [data]
                while more := os.read(fd, 1 << 20):
                    parts.append(more)
                data = b"".join(parts)
        finally:
            os.close(fd)
        out.append(data)
    return out


def _unlink_many(paths: list[str]) -> None:
    for path in paths:
        try:
            fileio.unlink(path)
        except FileNotFoundError:
            pass


def _parse(raw: bytes, count: int) -> tuple[list[str], bytes]:
    """Ids and binary SHA-256 digests of ``count`` log lines. The CRC is not checked here: a
    damaged id finds no file and a damaged hash matches no event, so both stop the packing."""
    ids = [raw[k * LINE_LEN + 13 : k * LINE_LEN + 77].rstrip(b" ").decode("ascii", "replace") for k in range(count)]
    hexes = b"".join(raw[k * LINE_LEN + 78 : k * LINE_LEN + 142] for k in range(count))
    try:
        return ids, bytes.fromhex(hexes.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return ids, b"\0" * (32 * count)  # a garbled hash field: every event of the chunk mismatches


class LoosePacker:
    """Packs the committed positions of some runs for one compaction."""

    def __init__(self, job: _Compaction) -> None:
        self.job = job
        self.lay = job.lay
        self.prefix = os.path.join(job.lay.events, "")
        self.pool = ThreadPoolExecutor(READERS, thread_name_prefix="kroniko-compact-read")
        self.removers = ThreadPoolExecutor(REMOVERS, thread_name_prefix="kroniko-compact-unlink")
        self.unlinks: list[Future[None]] = []

    def run(self, runs: list[tuple[int, int]], total: int) -> None:
        """Pack every run, then wait for the removal of the loose files and fsync ``events/``."""
        chunks = [(s, min(b, s + CHUNK - 1)) for a, b in runs for s in range(a, b + 1, CHUNK)]
        try:
            bar = iter(progress(range(len(chunks)), len(chunks), f"packing {total} events", self.job.quiet))
            started = time.monotonic()
            self._pack(chunks, bar)
            for _ in bar:
                pass
            packed = time.monotonic()
            # Packing (read, check, write, read back, publish) and the removal of the loose files
            # overlap; this is how long the removals still took after the last pack was published.
            self.job.report.figures["pack_seconds"] = round(packed - started, 3)
            for f in self.unlinks:
                f.result()
            if self.job.store.durable and self.unlinks:
                fileio.fsync_dir(self.lay.events)
            self.job.report.figures["removal_wait_seconds"] = round(time.monotonic() - packed, 3)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.removers.shutdown(wait=True, cancel_futures=True)

    def _submit_read(self, chunk: tuple[int, int]) -> tuple[int, list[str], bytes, list[Future[list[bytes | None]]]]:
        start, end = chunk
        count = end - start + 1
        raw = os.pread(self.job.fd, count * LINE_LEN, (start - 1) * LINE_LEN)
        ids, digests = _parse(raw, count)
        paths = [self.prefix + i + ".json" for i in ids]
        # Small parts over many threads: a read that misses the page cache waits on the disk.
        parts = [self.pool.submit(_read_many, paths[k : k + READ_PART]) for k in range(0, count, READ_PART)]
        return start, ids, digests, parts

    def _pack(self, chunks: list[tuple[int, int]], bar: Iterator[int]) -> None:
        ahead: deque[tuple[int, list[str], bytes, list[Future[list[bytes | None]]]]] = deque()
        todo = iter(chunks)
        writer: PackWriter | None = None
        ids: list[str] = []
        expected = bytearray()
        try:
            for chunk in todo:
                ahead.append(self._submit_read(chunk))
                if len(ahead) >= READ_AHEAD:
                    break
            while ahead:
                start, chunk_ids, digests, parts = ahead.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    ahead.append(self._submit_read(nxt))
                raws = [raw for part in parts for raw in part.result()]
                self._check(start, chunk_ids, digests, raws)
                if writer is not None and writer.next != start:  # a new run: close the pack
                    self._publish(writer, ids, bytes(expected))
                    writer, ids, expected = None, [], bytearray()
                if writer is None:
                    writer = PackWriter(self.lay.packs, start, self.job.store.durable)
                writer.add(raws)  # type: ignore[arg-type]  # _check proved none is None
                ids.extend(chunk_ids)
                expected += digests
                next(bar, None)
                if writer.size >= self.job.max_pack_bytes:
                    self._publish(writer, ids, bytes(expected))
                    writer, ids, expected = None, [], bytearray()
            if writer is not None:
                self._publish(writer, ids, bytes(expected))
                writer = None
        finally:
            if writer is not None:
                writer.abort()

    def _check(self, start: int, ids: list[str], digests: bytes, raws: list[bytes | None]) -> None:
        for k, raw in enumerate(raws):
            pos = start + k
            if raw is None:
                self.job.add("missing-event", "error", self.prefix + ids[k] + ".json",
                             f"event {ids[k]} of position {pos} is neither loose nor packed; compaction "
                             "stopped", pos)
                raise PackDamage
            if hashlib.sha256(raw).digest() != digests[32 * k : 32 * k + 32]:
                self.job.add("event-hash-mismatch", "error", self.prefix + ids[k] + ".json",
                             f"event {ids[k]} does not match its hash in the log; compaction stopped", pos)
                raise PackDamage

    def _publish(self, writer: PackWriter, ids: list[str], expected: bytes) -> None:
        pack = writer.finish()
        try:
            verify_digests(pack, expected)
        except (PackError, ValueError) as exc:
            writer.abort()
            self.job.add("pack-corrupt", "error", pack.pack_path,
                         f"the pack just written does not read back as written ({exc}); nothing was removed. "
                         "Check the disk", pack.first)
            raise PackDamage from None
        path = writer.publish()
        paths = [self.prefix + i + ".json" for i in ids]
        step = max(1, -(-len(paths) // (4 * REMOVERS)))
        self.unlinks += [self.removers.submit(_unlink_many, paths[k : k + step]) for k in range(0, len(paths), step)]
        self.job.counts["packs_written"] += 1
        self.job.counts["events_packed"] += len(ids)
        self.job.note("compact-pack", path, f"packed positions {pack.first}..{pack.last} ({events(len(ids))})",
                      "", pack.first)


def verify_digests(pack: Pack, expected: bytes) -> None:
    """Check a written pack: trailers, offsets, and each event's SHA-256 against ``expected``
    (the log's digests, 32 bytes per position). Raises :class:`~kroniko_ops.packs.PackError`."""
    try:
        pack.checksums()
        for a in range(pack.first, pack.last + 1, BATCH):
            b = min(pack.last, a + BATCH - 1)
            base = 32 * (a - pack.first)
            for k, raw in enumerate(pack.read(a, b)):
                if hashlib.sha256(raw).digest() != expected[base + 32 * k : base + 32 * k + 32]:
                    raise PackError(f"{pack.pack_path}: position {a + k} does not match the log")
    finally:
        pack.close()
