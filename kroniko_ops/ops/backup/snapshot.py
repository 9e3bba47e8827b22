"""A consistent view of a live store at one head: the files that hold positions ``1..head``,
opened before anything is copied.

The synced position is read first; then ``log/`` and ``packs/`` are listed and a cover of
``1..head`` is chosen (packs first, then sealed segments, then the head's segment cut at the
synced end) and every file of it is opened. Sealed segments, their ``.idx`` files and packs
never change once named, and the active segment only grows, so the bytes read later through
these descriptors are the bytes of that head even if appends, sealing or compaction go on
meanwhile (a file compaction removes stays readable through its descriptor). A file gone
between the listing and its opening makes the whole snapshot start again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ... import fileio
from ...errors import StoreCorrupted
from ...format import pack as packfmt
from ...format import segment as segfmt
from ...layout import Layout
from ...store import EventStore
from ...synced import SyncedState

ATTEMPTS = 50


@dataclass
class Part:
    """One container of the snapshot: a pack, a sealed segment (``.seg`` and ``.idx``) or the
    head's segment (cut at the synced end). ``files`` are ``(relative name, fd, bytes to copy)``."""

    kind: str  # "pack" | "sealed" | "active"
    first: int
    last: int
    files: list[tuple[str, int, int]] = field(default_factory=list)
    seal: segfmt.Seal | None = None
    pack_sha256: bytes | None = None  # the pack trailer's SHA-256 of every byte before the trailer


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
            for _rel, fd, _size in p.files:
                os.close(fd)
        self.parts = []

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Vanished(Exception):
    """A listed file disappeared before it was opened (compaction): list again."""


def take(root: str, lock_timeout: float = 30.0) -> Snapshot:
    """Snapshot the store at ``root`` at its synced position; raises StoreNotFound (no store),
    StoreCorrupted (its files do not cover ``1..head``: run fsck). ``lock_timeout`` bounds the
    wait for the append lock when the synced position must be re-verified (after a reboot)."""
    lay = Layout(root)
    problem = ""
    for _ in range(ATTEMPTS):
        with EventStore(root, create=False, lock_timeout=lock_timeout) as st:
            state = st.synced_state()
        fmt = fileio.read_small(lay.format_file, 4096)
        parts: list[Part] = []
        try:
            _cover(lay, state, parts)
            return Snapshot(root, state, fmt, parts)
        except _Vanished as exc:
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
        raise _Vanished(f"{path} disappeared") from None


def _cover(lay: Layout, state: SyncedState, parts: list[Part]) -> None:
    """Fill ``parts`` with open containers covering ``1..state.position`` exactly."""
    segs, packs = _listing(lay)
    head, pos = state.position, 1
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
            parts.append(_sealed(lay, pos))
            if parts[-1].last > head:
                raise _Vanished(f"sealed segment {pos} ends past the head {head} it should hold")
        else:
            raise _Vanished(f"no pack or segment starts at position {pos}")
        pos = parts[-1].last + 1
    if state.segment == head + 1 and "seg" in segs.get(head + 1, ()):
        parts.append(_active(lay, state))  # an empty segment after a roll: the synced end is 0


def _pack(lay: Layout, first: int, last: int, name: str) -> Part:
    path = os.path.join(lay.packs, name)
    fd = _open(path)
    part = Part("pack", first, last, [(f"packs/{name}", fd, os.fstat(fd).st_size)])
    try:
        with packfmt.PackReader(path) as reader:  # a pack's name is never reused: same file as fd
            part.pack_sha256 = reader.sha256
            rng = (reader.first, reader.last)
    except FileNotFoundError:
        os.close(fd)
        raise _Vanished(f"{path} disappeared") from None
    except (packfmt.PackError, OSError) as exc:
        os.close(fd)
        raise StoreCorrupted(f"{path} does not open as a pack ({exc}) (pack-corrupt); "
                             f"run: kroniko-ops fsck {lay.root}") from None
    if rng != (first, last):
        os.close(fd)
        raise StoreCorrupted(f"{path} holds {rng[0]}..{rng[1]}, not what its name says "
                             f"(pack-corrupt); run: kroniko-ops fsck {lay.root}")
    return part


def _sealed(lay: Layout, first: int) -> Part:
    seg = os.path.join(lay.log_dir, segfmt.seg_name(first))
    idx = os.path.join(lay.log_dir, segfmt.idx_name(first))
    ifd = _open(idx)
    try:
        sfd = _open(seg)
    except _Vanished:
        os.close(ifd)
        raise
    part = Part("sealed", first, first, [(f"log/{segfmt.idx_name(first)}", ifd, os.fstat(ifd).st_size),
                                         (f"log/{segfmt.seg_name(first)}", sfd, os.fstat(sfd).st_size)])
    try:
        data = os.pread(ifd, os.fstat(ifd).st_size, 0)
        part.seal = segfmt.decode_idx(data, first)
    except segfmt.SegmentError as exc:
        os.close(ifd)
        os.close(sfd)
        raise StoreCorrupted(f"{idx}: {exc} (segment-corrupt); run: kroniko-ops fsck {lay.root}") from None
    part.last = part.seal.last
    return part


def _active(lay: Layout, state: SyncedState) -> Part:
    path = os.path.join(lay.log_dir, segfmt.seg_name(state.segment))
    fd = _open(path)
    if os.fstat(fd).st_size < state.end:
        os.close(fd)
        raise StoreCorrupted(f"{path} is shorter than its synced end {state.end}; run: kroniko-ops fsck {lay.root}")
    return Part("active", state.segment, state.position, [(f"log/{segfmt.seg_name(state.segment)}", fd, state.end)])
