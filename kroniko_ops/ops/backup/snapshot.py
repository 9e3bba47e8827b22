"""A consistent view of a live store at one head: the files that hold positions ``1..head``,
planned before anything is copied.

The synced position is read first; then ``log/`` and ``packs/`` are listed and a cover of
``1..head`` is chosen (packs first, then sealed segments, then the head's segment cut at the
synced end) and every file of it is opened, checked and noted: its size, its identity (device
and inode) and the checksum its trailer records. Sealed segments, their ``.idx`` files and packs
never change once named, and the active segment only grows, so the bytes read later are the
bytes of that head even if appends, sealing or compaction go on meanwhile.

A store may hold more files than a process may open, so only the first :data:`PINNED` files and
the active segment stay open; the others (a sealed segment holding the head included) are closed
after planning and opened again, one part at a time, when they are copied
(:meth:`Snapshot.opened`). A file compaction removes stays readable through a descriptor, not
through its name: a file gone, or another file under its name, when it is opened again raises
:class:`Vanished`, and the backup starts again from a new snapshot (compaction published the
pack holding those records first, so the next listing finds it). A file gone between the listing
and its first opening makes the snapshot start again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ... import fileio
from ...errors import StoreCorrupted
from ...format import pack as packfmt
from ...format import record as recfmt
from ...format import segment as segfmt
from ...layout import Layout
from ...store import EventStore
from ...synced import SyncedState

ATTEMPTS = 50
PINNED = 64  # files kept open from planning to copying (the active segment always is)


@dataclass
class File:
    """One file of a part: its name in the store, where it is, the bytes to copy, its identity
    ``(st_dev, st_ino)`` when planned, and its descriptor while open (else -1)."""

    rel: str
    path: str
    size: int
    ident: tuple[int, int]
    fd: int = -1

    def close(self) -> None:
        """Close the descriptor if open."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class Part:
    """One container of the snapshot: a pack, a sealed segment (``.idx`` and ``.seg``) or the
    head's segment (cut at the synced end)."""

    kind: str  # "pack" | "sealed" | "active"
    first: int
    last: int
    files: list[File] = field(default_factory=list)
    seg_sha256: bytes | None = None  # a sealed segment's SHA-256, as its offset index records it
    pack_sha256: bytes | None = None  # the pack trailer's SHA-256 of every byte before the trailer

    def close(self) -> None:
        """Close its files."""
        for f in self.files:
            f.close()


@dataclass
class Snapshot:
    """The head and the open files holding ``1..head``; close it when done."""

    root: str
    state: SyncedState
    format_bytes: bytes
    parts: list[Part]

    @property
    def active(self) -> Part | None:
        """The head's segment, when the head is not the end of a pack or sealed segment."""
        return next((p for p in self.parts if p.kind == "active"), None)

    def close(self) -> None:
        """Close every descriptor."""
        for p in self.parts:
            p.close()
        self.parts = []

    @contextmanager
    def opened(self, part: Part) -> Iterator[list[tuple[str, int, int]]]:
        """``(relative name, fd, bytes to copy)`` of each file of ``part``, opened again if it was
        closed after planning (and closed again after the ``with`` body); raises
        :class:`Vanished` when one is gone or another file took its name."""
        again: list[File] = []
        try:
            for f in part.files:
                if f.fd < 0:
                    f.fd = _reopen(f)
                    again.append(f)
            yield [(f.rel, f.fd, f.size) for f in part.files]
        finally:
            for f in again:
                f.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Vanished(Exception):
    """A planned file disappeared before it was copied (compaction): snapshot again."""


def take(root: str, lock_timeout: float = 30.0, seals: dict[tuple[int, ...], tuple[int, bytes]] | None = None
         ) -> Snapshot:
    """Snapshot the store at ``root`` at its synced position; raises StoreNotFound (no store),
    StoreCorrupted (its files do not cover ``1..head``: run fsck). ``lock_timeout`` bounds the
    wait for the append lock when the synced position must be re-verified (after a reboot).

    ``seals`` is a cache kept by a caller that snapshots again and again (replicate): a sealed
    segment whose ``.idx`` and ``.seg`` are the same files (position, device, inode, size, change
    time) as when it was last decoded is not read again (sealed files never change)."""
    lay = Layout(root)
    problem = ""
    for _ in range(ATTEMPTS):
        with EventStore(root, create=False, lock_timeout=lock_timeout) as st:
            state = st.synced_state()
        fmt = fileio.read_small(lay.format_file, 4096)
        parts: list[Part] = []
        try:
            _cover(lay, state, parts, seals)
            return Snapshot(root, state, fmt, parts)
        except Vanished as exc:
            problem = str(exc)
        except BaseException:
            Snapshot(root, state, fmt, parts).close()
            raise
        Snapshot(root, state, fmt, parts).close()
    raise StoreCorrupted(f"could not find files covering positions 1..{state.position} of {root} "
                         f"({problem}); run: kroniko-ops fsck {root}")


def _listing(lay: Layout) -> tuple[dict[int, set[str]], list[tuple[int, int, str]]]:
    # log/ before packs/: compaction publishes a pack before it removes the segments it holds,
    # so a segment missing from this listing is found in the later listing of packs/.
    segs: dict[int, set[str]] = {}
    for name in os.listdir(lay.log_dir):
        parsed = segfmt.parse_name(name)
        if parsed is not None:
            segs.setdefault(parsed[0], set()).add(parsed[1])
    packs = []
    for name in os.listdir(lay.packs) if os.path.isdir(lay.packs) else ():
        rng = packfmt.parse_name(name)
        if rng is not None:
            packs.append((rng[0], rng[1], name))
    return segs, packs


def _open(path: str) -> int:
    try:
        return fileio.open_read(path)
    except FileNotFoundError:
        raise Vanished(f"{path} disappeared") from None


def _file(rel: str, path: str, fd: int, size: int | None = None) -> File:
    st = os.fstat(fd)
    return File(rel, path, st.st_size if size is None else size, (st.st_dev, st.st_ino), fd)


def _reopen(f: File) -> int:
    """``f`` opened again: the same file (identity and size) as when it was planned."""
    fd = _open(f.path)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != f.ident or st.st_size < f.size:
        os.close(fd)
        raise Vanished(f"{f.path} was replaced after it was planned")
    return fd


def _cover(lay: Layout, state: SyncedState, parts: list[Part],
           seals: dict[tuple[int, ...], tuple[int, bytes]] | None = None) -> None:
    """Fill ``parts`` with containers covering ``1..state.position`` exactly (each file opened
    and checked; the first PINNED files and the active segment left open)."""
    segs, packs = _listing(lay)
    head, pos, pinned = state.position, 1, 0
    while pos <= head:
        if pos == state.segment and "seg" in segs.get(pos, ()):
            parts.append(_active(lay, state))
            return
        # the biggest pack starting here that ends at or before the head (a merged pack over its parts)
        fitting = [p for p in packs if p[0] == pos and p[1] <= head]
        if fitting:
            first, last, name = max(fitting, key=lambda p: p[1])
            parts.append(_pack(lay, first, last, name))
        elif {"seg", "idx"} <= segs.get(pos, set()):
            parts.append(_sealed(lay, pos, seals))
            if parts[-1].last > head:
                raise Vanished(f"sealed segment {pos} ends past the head {head} it should hold")
        else:
            raise Vanished(f"no pack or segment starts at position {pos}")
        pinned += len(parts[-1].files)
        if pinned > PINNED:
            parts[-1].close()  # planned: opened again (and checked to be the same file) when copied
        pos = parts[-1].last + 1
    if state.segment == head + 1 and "seg" in segs.get(head + 1, ()):
        parts.append(_active(lay, state))  # an empty segment after a roll: the synced end is 0


def _pack(lay: Layout, first: int, last: int, name: str) -> Part:
    path = os.path.join(lay.packs, name)
    fd = _open(path)
    part = Part("pack", first, last, [_file(f"packs/{name}", path, fd)])
    try:
        with packfmt.PackReader(path) as reader:  # a pack's name is never reused: same file as fd
            part.pack_sha256 = reader.sha256
            rng = (reader.first, reader.last)
    except FileNotFoundError:
        os.close(fd)
        raise Vanished(f"{path} disappeared") from None
    except (packfmt.PackError, OSError) as exc:
        os.close(fd)
        raise StoreCorrupted(f"{path} does not open as a pack ({exc}) (pack-corrupt); "
                             f"run: kroniko-ops fsck {lay.root}") from None
    if rng != (first, last):
        os.close(fd)
        raise StoreCorrupted(f"{path} holds {rng[0]}..{rng[1]}, not what its name says "
                             f"(pack-corrupt); run: kroniko-ops fsck {lay.root}")
    return part


def _sealed(lay: Layout, first: int, seals: dict[tuple[int, ...], tuple[int, bytes]] | None = None) -> Part:
    seg = os.path.join(lay.log_dir, segfmt.seg_name(first))
    idx = os.path.join(lay.log_dir, segfmt.idx_name(first))
    ifd = _open(idx)
    try:
        sfd = _open(seg)
    except Vanished:
        os.close(ifd)
        raise
    part = Part("sealed", first, first, [_file(f"log/{segfmt.idx_name(first)}", idx, ifd),
                                         _file(f"log/{segfmt.seg_name(first)}", seg, sfd)])
    isize, ssize = part.files[0].size, part.files[1].size
    # Inode numbers are reused once compaction deletes a segment: the key holds the position
    # and both files' change times too, so a cached seal never describes another file.
    key = (first, *part.files[0].ident, isize, os.fstat(ifd).st_ctime_ns, *part.files[1].ident, ssize,
           os.fstat(sfd).st_ctime_ns)
    if seals is not None and key in seals:
        part.last, part.seg_sha256 = seals[key]
        return part
    try:
        # Sizes first: an offset index holds 8 bytes per record of at least one byte, and a
        # sealed segment is exactly as long as its index says; a file grown by gigabytes is
        # damage, never read into memory nor hashed.
        if isize > 8 * (ssize + 2) + segfmt.TRAILER_SIZE:
            raise segfmt.SegmentError(f"the offset index holds {isize} bytes, more than a segment of {ssize} needs")
        seal = segfmt.decode_idx(os.pread(ifd, isize, 0), first)
        if seal.size != ssize:
            raise segfmt.SegmentError(f"the segment holds {ssize} bytes, its offset index says {seal.size}")
    except segfmt.SegmentError as exc:
        os.close(ifd)
        os.close(sfd)
        raise StoreCorrupted(f"{idx}: {exc} (segment-corrupt); run: kroniko-ops fsck {lay.root}") from None
    part.last, part.seg_sha256 = seal.last, seal.seg_sha256  # the offsets are not kept: memory stays flat
    if seals is not None:
        seals[key] = (seal.last, seal.seg_sha256)
    return part


def _active(lay: Layout, state: SyncedState) -> Part:
    path = os.path.join(lay.log_dir, segfmt.seg_name(state.segment))
    fd = _open(path)
    if os.fstat(fd).st_size < state.end:
        os.close(fd)
        raise StoreCorrupted(f"{path} is shorter than its synced end {state.end}; run: kroniko-ops fsck {lay.root}")
    return Part("active", state.segment, state.position,
                [_file(f"log/{segfmt.seg_name(state.segment)}", path, fd, state.end)])


CHECK_CHUNK = 4 << 20  # bytes of records checked at once


def check_records(root: str, rel: str, fd: int, start: int, end: int, last_chain: bytes | None = None) -> None:
    """Check the records in bytes ``start..end`` of the head's segment before a copy carries them
    (sealed segments and packs are checked against the checksums their own files record; these
    bytes have none): every header, position, event hash and chain link from the first of them
    on, and, given ``last_chain``, that the last one's chain is the head's. Raises
    :class:`StoreCorrupted` naming the first bad position."""
    chain: bytes | None = None
    pos = 0
    at = start
    while at < end:
        data = os.pread(fd, min(CHECK_CHUNK, end - at), at)
        cut = data.rfind(b"\n") + 1 if at + len(data) < end else len(data)
        if cut <= 0:  # one record longer than a chunk
            data = os.pread(fd, end - at, at)
            cut = data.rfind(b"\n") + 1 or len(data)
        run = data[:cut]
        try:
            first = pos + 1 if pos else recfmt.parse_header(recfmt.leading_header(run)).position
        except (recfmt.RecordError, ValueError, IndexError):
            first, problems = pos + 1, [(pos + 1, "header")]
        else:
            _ids, _bodies, chain, problems = recfmt.check_run(run, first, chain)
            pos = first + run.count(b"\n") - 1
        if problems:
            where, kind = problems[0]
            raise StoreCorrupted(f"{root}/{rel}: the record at position {where} is damaged ({kind}); nothing damaged "
                                 f"is copied: run kroniko-ops fsck {root}")
        at += cut
    if last_chain is not None and start < end and chain != last_chain:
        raise StoreCorrupted(f"{root}/{rel}: the records end on a chain other than the synced position's; run "
                             f"kroniko-ops fsck {root}")
