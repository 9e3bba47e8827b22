"""Writing one pack safely: every event checked on its way in (position, event hash and chain
recomputed from the previous container's last chain and compared with what its source
records), the file written under a temp name in ``packs/``, fsynced, read back (every block
compared with what went in), then linked under its final name and ``packs/`` fsynced. Only
after that may the caller remove the files the pack replaces.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence

from ... import fileio, layout
from ...format import pack as packfmt
from ...format import packblock
from ...format import record as recfmt
from ...format import segment as segfmt
from ...format.packwrite import PackWriter

CHUNK_BYTES = 1 << 20  # bytes of a sealed segment read at a time

# What a source hands the writer: (first position, ids or None, bodies, batches, the chain its
# source records after the last, the raw records when the source holds them, to name damage).
Piece = tuple[int, Sequence[str] | None, Sequence[bytes], packfmt.Commits, bytes, bytes | None]


class Damage(Exception):
    """The input of a pack does not verify: nothing was published or removed. ``where`` is the
    store-relative path of the file at fault."""

    def __init__(self, message: str, position: int | None = None, where: str = "packs") -> None:
        super().__init__(message)
        self.position, self.where = position, where


def _raw_piece(pos: int, raw: bytes) -> Piece:
    """A run of raw records as a piece (split, not checked: the caller recomputes the chain)."""
    ids, bodies, commits = recfmt.split(raw)
    tail = raw[raw.rfind(b"\n", 0, len(raw) - 1) + 1:]
    try:
        head = recfmt.parse_header(recfmt.leading_header(tail))
    except recfmt.RecordError:
        head = None
    return pos, ids, bodies, commits, head.chain if head is not None else b"", raw


def segment_runs(log_dir: str, first: int, seal: segfmt.Seal) -> Iterator[Piece]:
    """The records of a whole sealed segment, about a MiB at a time; checks the segment's bytes
    against the SHA-256 its offset index records once all are read."""
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
            yield _raw_piece(lo, raw)
            lo = hi + 1
        if digest.digest() != seal.seg_sha256 or os.fstat(seg.fd).st_size != seal.size:
            raise Damage(f"{where} does not match the SHA-256 of its offset index", first, where)
    finally:
        seg.close()


def pack_runs(path: str) -> Iterator[Piece]:
    """The events of a whole pack, one block at a time (a version 3 pack's as raw records)."""
    where = f"packs/{os.path.basename(path)}"
    try:
        reader = packfmt.PackReader(path)
    except packfmt.PackError as exc:
        raise Damage(str(exc), None, where) from None
    try:
        for i, b in enumerate(reader.blocks):
            if reader.version == 3:
                yield _raw_piece(b.first, b"".join(reader.read_range(b.first, b.last)))
            else:
                d = reader.block(i)
                yield b.first, None, d.bodies, d.commits, b.chain, None
    except packfmt.PackError as exc:
        raise Damage(str(exc), None, where) from None
    finally:
        reader.close()


class _Checker:
    """Recomputes the event hashes and the chain of the pieces going into a pack, from the
    chain before its first position, and compares them with what each source records."""

    def __init__(self, first: int, chain: bytes) -> None:
        self.next, self.chain = first, chain

    def check(self, piece: Piece, where: str) -> list[bytes]:
        pos, ids, bodies, _commits, recorded, raw = piece
        if pos != self.next or (ids is not None and raw is not None and raw[:12] != b"%012d" % pos):
            raise Damage(f"{where}: position {pos} where {self.next} belongs", self.next, where)
        _hashes, chains = packblock.chains(self.chain, bodies)
        if not chains or chains[-1] != recorded:
            raise self._named(piece, where)
        self.next, self.chain = pos + len(bodies), chains[-1]
        return chains

    def _named(self, piece: Piece, where: str) -> Damage:
        """The damage in a piece whose chain does not verify, named as exactly as its source allows."""
        pos, _ids, bodies, _commits, _recorded, raw = piece
        if raw is not None:
            problems = recfmt.check_run(raw, pos, self.chain)[3]
            if problems:
                p, kind = problems[0]
                what = {"hash": "fails its event hash", "chain": "breaks the chain",
                        "position": "is out of place"}.get(kind, "is damaged")
                return Damage(f"{where}: record {p} {what}", p, where)
        return Damage(f"{where}: the chain recomputed through positions {pos}..{pos + len(bodies) - 1} differs from "
                      "the one recorded there", pos, where)


def write(lay: layout.Layout, syncer: fileio.Syncer, sources: Iterable[tuple[str, Iterable[Piece]]],
          first: int, last: int, chain_before: bytes, last_chain: bytes, block_bytes: int) -> packfmt.PackInfo:
    """Write and publish the pack of positions ``first..last`` from ``sources`` (``(label,
    pieces)`` in position order). ``chain_before`` is the chain of ``first - 1``, ``last_chain``
    the chain ``last`` must have. Raises :class:`Damage` when the input does not verify (the temp
    file is removed then); the caller removes nothing unless this returns."""
    tmp = os.path.join(lay.packs, f"{layout.TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}.pack")
    final = os.path.join(lay.packs, packfmt.name_of(first, last))
    fd = fileio.open_write(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)
    published = False
    try:
        checker = _Checker(first, chain_before)
        writer = PackWriter(fd, chain_before, block_bytes, name=tmp)
        for label, pieces in sources:
            for piece in pieces:
                chains = checker.check(piece, label)
                try:
                    writer.add(piece[0], piece[2], piece[3], piece[1], chains)
                except packfmt.PackError as exc:
                    raise Damage(f"{label}: {exc}", piece[0], label) from None
        if checker.next != last + 1:
            raise Damage(f"the inputs of pack {first}..{last} end at {checker.next - 1}", checker.next)
        try:
            info = writer.finish(last_chain)
        except packfmt.PackError as exc:
            raise Damage(str(exc), last) from None
        syncer.file(fd, tmp)
        os.close(fd)
        fd = -1
        _read_back(tmp, info)
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


def _read_back(path: str, info: packfmt.PackInfo) -> None:
    """Open the written pack afresh (its header, table and trailer checked) and read it back:
    every byte must match the SHA-256 computed as it was written (so every block is the one
    that went in). Its cached pages are dropped first, where the system allows, so that this
    reads the disk."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the page cache is the file's, not the fd's
        finally:
            os.close(fd)
    try:
        with packfmt.PackReader(path) as reader:
            same = (reader.first, reader.last, reader.last_chain, reader.sha256) == \
                (info.first, info.last, info.last_chain, info.sha256) and reader.sha_ok()
    except packfmt.PackError as exc:
        raise Damage(f"the pack just written does not read back ({exc}); check the disk", info.first) from None
    if not same:
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
