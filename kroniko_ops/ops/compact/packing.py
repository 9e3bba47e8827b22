"""Writing one pack safely: every record checked on its way in (position, event hash, chain from
the previous container's last chain), the file written under a temp name in ``packs/``, fsynced,
read back (every block, compared with what went in), then linked under its final name and
``packs/`` fsynced. Only
after that may the caller remove the files the pack replaces.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Iterable, Iterator

from ... import fileio, layout
from ...format import pack as packfmt
from ...format import record as recfmt
from ...format import segment as segfmt

CHUNK_BYTES = 1 << 20  # bytes of a sealed segment read at a time


class Damage(Exception):
    """The input of a pack does not verify: nothing was published or removed. ``where`` is the
    store-relative path of the file at fault."""

    def __init__(self, message: str, position: int | None = None, where: str = "packs") -> None:
        super().__init__(message)
        self.position, self.where = position, where


class _Checker:
    """Checks a stream of raw record runs: consecutive positions, each body against its hash,
    the chain continuing from ``chain``."""

    def __init__(self, first: int, chain: bytes) -> None:
        self.next, self.chain = first, chain

    def check(self, raw: bytes, where: str) -> None:
        try:
            for rec in recfmt.iter_records(raw):
                if rec.position != self.next:
                    raise Damage(f"{where}: record {rec.position} where {self.next} belongs", self.next, where)
                if not recfmt.body_hash_ok(rec):
                    raise Damage(f"{where}: record {rec.position} fails its event hash", rec.position, where)
                if recfmt.chain_of(self.chain, rec.event_hash) != rec.chain:
                    raise Damage(f"{where}: record {rec.position} breaks the chain", rec.position, where)
                self.next, self.chain = rec.position + 1, rec.chain
        except recfmt.RecordError as exc:
            raise Damage(f"{where}: {exc} (near position {self.next})", self.next, where) from None


def segment_runs(log_dir: str, first: int, seal: segfmt.Seal) -> Iterator[tuple[int, bytes]]:
    """``(first position, raw records)`` of a whole sealed segment, about a MiB at a time; checks
    the segment's bytes against the SHA-256 its offset index records once all are read."""
    where = f"log/{segfmt.seg_name(first)}"
    try:
        seg = segfmt.SealedSegment(log_dir, first)
    except segfmt.SegmentError as exc:
        raise Damage(f"{where}: {exc}", first, where) from None
    try:
        if seg.seal.seg_sha256 != seal.seg_sha256:
            raise Damage(f"{where}: its offset index changed while compacting", first, where)
        digest = hashlib.sha256()
        offsets = seal.offsets
        lo = first
        while lo <= seal.last:
            a = lo - first
            b = max(a + 1, bisect.bisect_right(offsets, offsets[a] + CHUNK_BYTES, a + 1) - 1)
            hi = first + b - 1
            raw = seg.read_run(lo, hi)
            digest.update(raw)
            yield lo, raw
            lo = hi + 1
        if digest.digest() != seal.seg_sha256 or os.fstat(seg.fd).st_size != seal.size:
            raise Damage(f"{where} does not match the SHA-256 of its offset index", first, where)
    finally:
        seg.close()


def pack_runs(path: str) -> Iterator[tuple[int, bytes]]:
    """``(first position, raw records)`` of a whole pack, one block at a time."""
    where = f"packs/{os.path.basename(path)}"
    try:
        reader = packfmt.PackReader(path)
    except packfmt.PackError as exc:
        raise Damage(str(exc), None, where) from None
    try:
        pos = reader.first
        for raw in reader.read_range(reader.first, reader.last):
            yield pos, raw
            pos += raw.count(b"\n")
    except packfmt.PackError as exc:
        raise Damage(str(exc), None, where) from None
    finally:
        reader.close()


def write(lay: layout.Layout, syncer: fileio.Syncer, sources: Iterable[tuple[str, Iterable[tuple[int, bytes]]]],
          first: int, last: int, chain_before: bytes, last_chain: bytes, block_bytes: int) -> packfmt.PackInfo:
    """Write and publish the pack of positions ``first..last`` from ``sources`` (``(label,
    runs)`` in position order). ``chain_before`` is the chain of ``first - 1``, ``last_chain``
    the chain ``last`` must have. Raises :class:`Damage` when the input does not verify (the temp
    file is removed then); the caller removes nothing unless this returns."""
    tmp = os.path.join(lay.packs, f"{layout.TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}.pack")
    final = os.path.join(lay.packs, packfmt.name_of(first, last))
    fd = fileio.open_write(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)
    published = False
    try:
        checker = _Checker(first, chain_before)
        digest = hashlib.sha256()  # of the records put in, to compare with what reads back
        writer = packfmt.PackWriter(fd, block_bytes, name=tmp)
        for label, runs in sources:
            for pos, raw in runs:
                checker.check(raw, label)
                digest.update(raw)
                writer.add(raw, pos)
        if checker.next != last + 1:
            raise Damage(f"the inputs of pack {first}..{last} end at {checker.next - 1}", checker.next)
        try:
            info = writer.finish(last_chain)
        except packfmt.PackError as exc:
            raise Damage(str(exc), last) from None
        syncer.file(fd, tmp)
        os.close(fd)
        fd = -1
        _read_back(tmp, info, digest.digest())
        fileio.link(tmp, final)  # never replaces a file, unlike rename
        published = True
        fileio.unlink(tmp)
        syncer.dir(lay.packs)
        return info
    finally:
        if fd >= 0:
            os.close(fd)
        if not published:
            try:
                fileio.unlink(tmp)
            except OSError:
                pass  # a leftover temp holds only copies: the next compaction clears it


def _read_back(path: str, info: packfmt.PackInfo, digest: bytes) -> None:
    """Open the written pack afresh (its header, table and trailer checked) and read every
    record back (each block's CRC checked): they must be exactly the records that went in. Its
    cached pages are dropped first, where the system allows, so that this reads the disk."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the page cache is the file's, not the fd's
        finally:
            os.close(fd)
    try:
        with packfmt.PackReader(path) as reader:
            back = hashlib.sha256()
            for raw in reader.read_range(reader.first, reader.last):
                back.update(raw)
            same = (reader.first, reader.last, reader.last_chain) == (info.first, info.last, info.last_chain)
    except packfmt.PackError as exc:
        raise Damage(f"the pack just written does not read back ({exc}); check the disk", info.first) from None
    if not same or back.digest() != digest:
        raise Damage("the pack just written does not read back as written; check the disk", info.first)


def chain_differs(path: str, position: int, chain: bytes) -> str | None:
    """Why the pack at ``path`` does not hold ``chain`` at ``position`` (so not the same history
    up to there as the file that says so), or None when it does."""
    try:
        with packfmt.PackReader(path) as reader:
            if reader.record(position).chain != chain:
                return f"record {position} of {os.path.basename(path)} has another chain than the files it replaces"
    except (packfmt.PackError, OSError, IndexError) as exc:
        return str(exc)
    return None
