"""Pack files: many committed events in one file, found by position (docs/FORMAT.md, "Packs").

A pack covers the positions ``first..last`` and is two files in ``packs/``:

- ``pack-<first>-<last>.pack``: each event's stored bytes followed by ``\\n`` (so the data is
  JSON lines), then a trailer ``kroniko-pack 1 <first> <last> <sha256>\\n``;
- ``pack-<first>-<last>.idx``: ``count + 1`` lines ``%012d\\n``, the byte offset of each event and
  then the end of the data, then ``kroniko-idx 1 <first> <last> <pack sha256> <sha256>\\n``.

Each trailer's SHA-256 covers every byte of its file before it. Packs are immutable; compaction
writes them (:mod:`kroniko_ops.ops.compact_write`), the engine reads them through :class:`PackSet`, fsck
verifies them through :func:`check_packs`.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
import re
import threading
from collections.abc import Iterator
from itertools import pairwise
from typing import TYPE_CHECKING

from .errors import StoreCorrupted

if TYPE_CHECKING:
    from .report import Report

OFF_LEN = 13  # "%012d\n"
PACK_MAGIC = b"kroniko-pack 1 "
IDX_MAGIC = b"kroniko-idx 1 "
PACK_TRAILER_LEN = len(PACK_MAGIC) + 13 + 13 + 64 + 1
IDX_TRAILER_LEN = len(IDX_MAGIC) + 13 + 13 + 65 + 64 + 1
NAME_RE = re.compile(r"\Apack-(\d{12})-(\d{12})\.(pack|idx)\Z")
BATCH = 1024
# A bulk read that covers at least this share of a pack (or any read of a pack this small)
# verifies the pack's checksums once instead of hashing each event against the log.
VERIFY_SHARE = 4
SMALL_PACK = 4 << 20


def pack_name(first: int, last: int) -> str:
    """The file name stem of the pack of ``first..last``."""
    return f"pack-{first:012d}-{last:012d}"


def parse_name(name: str) -> tuple[int, int, str] | None:
    """``(first, last, suffix)`` of a pack or idx file name, or None when it is not one."""
    m = NAME_RE.match(name)
    if not m:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    return (first, last, m.group(3)) if 1 <= first <= last else None


def pack_trailer(first: int, last: int, digest: hashlib._Hash) -> bytes:
    """The trailer of a pack whose data went into ``digest`` (which this updates)."""
    head = PACK_MAGIC + b"%012d %012d " % (first, last)
    digest.update(head)
    return head + digest.hexdigest().encode() + b"\n"


def idx_trailer(first: int, last: int, pack_hex: bytes, digest: hashlib._Hash) -> bytes:
    """The trailer of an idx whose offset lines went into ``digest`` (which this updates)."""
    head = IDX_MAGIC + b"%012d %012d %s " % (first, last, pack_hex)
    digest.update(head)
    return head + digest.hexdigest().encode() + b"\n"


class Pack:
    """One pack, opened lazily (both files memory-mapped: a mapping stays valid after a merge
    removes the files, and reading a closed mapping fails loudly instead of reading another file
    the way a reused file descriptor could)."""

    def __init__(self, folder: str, first: int, last: int, pack_path: str | None = None,
                 idx_path: str | None = None) -> None:
        stem = os.path.join(folder, pack_name(first, last))
        self.first, self.last = first, last
        self.pack_path = pack_path or stem + ".pack"
        self.idx_path = idx_path or stem + ".idx"
        self._maps: tuple[mmap.mmap, mmap.mmap] | None = None
        self._checked = False
        self.verified = False
        self._mutex = threading.Lock()

    @property
    def count(self) -> int:
        """Number of events in the pack."""
        return self.last - self.first + 1

    @property
    def data_size(self) -> int:
        """Bytes of event data (without the trailer)."""
        return len(self._open()[0]) - PACK_TRAILER_LEN

    def __repr__(self) -> str:
        return f"Pack({self.first}..{self.last})"

    def _open(self) -> tuple[mmap.mmap, mmap.mmap]:
        maps = self._maps
        if maps is None:
            with self._mutex:
                if self._maps is None:
                    self._maps = (_map(self.pack_path), _map(self.idx_path))
                maps = self._maps
        return maps

    def open(self) -> None:
        """Map both files; raises ``FileNotFoundError`` if they were removed, :class:`PackError`
        if their sizes or trailers do not fit the name."""
        pack, idx = self._open()
        if self._checked:
            return
        n = self.count
        if len(idx) != (n + 1) * OFF_LEN + IDX_TRAILER_LEN or len(pack) < PACK_TRAILER_LEN:
            raise PackError(f"{self.idx_path}: size does not fit {n} events")
        for tail, magic in ((pack[-PACK_TRAILER_LEN:], PACK_MAGIC), (idx[-IDX_TRAILER_LEN:], IDX_MAGIC)):
            fields = tail[len(magic):].split(b" ")
            if not tail.startswith(magic) or fields[:2] != [b"%012d" % self.first, b"%012d" % self.last]:
                raise PackError(f"{self.pack_path}: trailer does not name positions {self.first}..{self.last}")
        self._checked = True

    def close(self) -> None:
        """Drop the mappings (a read racing with this fails with ``ValueError``, never misreads)."""
        maps, self._maps = self._maps, None
        for m in maps or ():
            m.close()

    def offsets(self, k0: int, k1: int) -> list[int]:
        """Byte offsets of events ``k0..k1`` (0-based in the pack) and the end of ``k1``."""
        idx = self._open()[1]
        try:
            out = [int(x) for x in idx[k0 * OFF_LEN : (k1 + 2) * OFF_LEN].split(b"\n")[:-1]]
        except ValueError:
            raise PackError(f"{self.idx_path}: offset lines {k0}..{k1 + 1} are not numbers") from None
        if len(out) != k1 - k0 + 2:
            raise PackError(f"{self.idx_path}: offset lines {k0}..{k1 + 1} are missing")
        return out

    def read(self, first: int, last: int) -> list[bytes]:
        """The stored bytes of the events ``first..last`` (inside this pack), in order."""
        pack, idx = self._open()
        k0, k1 = first - self.first, last - self.first + 1
        try:
            base, end = int(idx[k0 * OFF_LEN : k0 * OFF_LEN + 12]), int(idx[k1 * OFF_LEN : k1 * OFF_LEN + 12])
        except ValueError:
            raise PackError(f"{self.idx_path}: offset lines {k0} or {k1} are not numbers") from None
        if not 0 <= base < end <= len(pack) - PACK_TRAILER_LEN:
            raise PackError(f"{self.idx_path}: offsets {base}..{end} fall outside the pack")
        data = pack[base:end]
        # Canonical JSON holds no raw newline: then the newlines are exactly the events' ends and
        # one split frames them all. Otherwise frame each event by its offsets.
        parts = data.split(b"\n")
        if len(parts) == k1 - k0 + 1 and parts[-1] == b"":
            parts.pop()
            return parts
        offs = self.offsets(k0, k1 - 1)
        if offs[0] != base or offs[-1] != end:
            raise PackError(f"{self.idx_path}: offset lines {k0}..{k1} changed while being read")
        out = []
        for a, b in pairwise(offs):
            if b <= a or data[b - base - 1] != 10:
                raise PackError(f"{self.pack_path}: event at offset {a} is not followed by a newline")
            out.append(data[a - base : b - base - 1])
        return out

    def read_one(self, position: int) -> bytes:
        """The stored bytes of one event (two offsets and one slice: no list is built)."""
        pack, idx = self._open()
        k = (position - self.first) * OFF_LEN
        try:
            a, b = int(idx[k : k + 12]), int(idx[k + OFF_LEN : k + OFF_LEN + 12])
        except ValueError:
            raise PackError(f"{self.idx_path}: the offsets of position {position} are not numbers") from None
        if not 0 <= a < b <= len(pack) - PACK_TRAILER_LEN or pack[b - 1] != 10:
            raise PackError(f"{self.idx_path}: the offsets of position {position} do not frame an event")
        return pack[a : b - 1]

    def batches(self, first: int, last: int, backwards: bool = False) -> Iterator[tuple[int, list[bytes]]]:
        """``(position, [bytes, ...])`` runs covering ``first..last`` in order (each run
        ascending; runs descending when ``backwards``)."""
        if not backwards:
            for a in range(first, last + 1, BATCH):
                yield a, self.read(a, min(last, a + BATCH - 1))
        else:
            for b in range(last, first - 1, -BATCH):
                a = max(first, b - BATCH + 1)
                yield a, self.read(a, b)

    def checksums(self) -> tuple[str, str]:
        """Verify both trailers' SHA-256 and that the idx names this pack's; return the pack's
        and the idx's hex digests. Raises :class:`PackError`."""
        self.open()
        pack, idx = self._open()
        pack_hex = _check_tail(pack, PACK_TRAILER_LEN, self.pack_path)
        idx_hex = _check_tail(idx, IDX_TRAILER_LEN, self.idx_path)
        named = idx[-IDX_TRAILER_LEN:].split(b" ")[4]
        if named.decode("ascii", "replace") != pack_hex:
            raise PackError(f"{self.idx_path}: names pack checksum {named[:12]!r}..., not this pack's")
        offs = self.offsets(0, self.count - 1)
        if offs[0] != 0 or offs[-1] != len(pack) - PACK_TRAILER_LEN or any(
            b <= a for a, b in pairwise(offs)
        ):
            raise PackError(f"{self.idx_path}: offsets are not increasing from 0 to the data's end")
        self.verified = True
        return pack_hex, idx_hex


class PackError(ValueError):
    """A pack whose files do not verify (pack-corrupt)."""


def _map(path: str) -> mmap.mmap:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size == 0:
            raise PackError(f"{path} is empty")
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


def _check_tail(data: mmap.mmap, tail_len: int, path: str) -> str:
    """Check that the last 65 bytes hold the SHA-256 hex of everything before them."""
    if len(data) < tail_len:
        raise PackError(f"{path}: shorter than its trailer")
    digest = hashlib.sha256()
    view = memoryview(data)
    try:
        end = len(data) - 65
        for a in range(0, end, 8 << 20):
            digest.update(view[a : min(end, a + (8 << 20))])
    finally:
        view.release()
    want = data[-65:-1].decode("ascii", "replace")
    if digest.hexdigest() != want:
        raise PackError(f"{path}: SHA-256 does not match its trailer (damaged)")
    return want


def list_packs(folder: str) -> tuple[list[tuple[int, int]], list[str]]:
    """Complete packs (``.pack`` with its ``.idx``) as ``(first, last)`` sorted, and the other
    names in the folder."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return [], []
    found: dict[tuple[int, int], set[str]] = {}
    other = []
    for name in names:
        parsed = parse_name(name)
        if parsed is None:
            other.append(name)
        else:
            found.setdefault(parsed[:2], set()).add(parsed[2])
    complete = sorted(k for k, v in found.items() if v == {"pack", "idx"})
    other.extend(pack_name(*k) + "." + s for k, v in found.items() if v != {"pack", "idx"} for s in v)
    return complete, other


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of position ranges, as sorted disjoint ranges (adjacent ones joined)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


class PackSet:
    """The packs of one store, found by position.

    The listing is cached; it is re-read when a position is not found in it (compaction may
    publish a pack, and remove the loose files it holds, at any time) or a listed pack is gone
    (merged into a bigger one, which is always published before the parts are removed).
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._view: tuple[list[Pack], list[int], list[int]] = ([], [], [])
        self._listed = False

    def refresh(self) -> list[Pack]:
        """Re-list the folder; keep the mappings of packs already open. Returns the packs."""
        old = {(p.first, p.last): p for p in self._view[0]}
        ranges, _other = list_packs(self.folder)
        packs = [old.get(r) or Pack(self.folder, *r) for r in ranges]
        # Sorted by first, then longest first, so that after a crashed merge the merged pack
        # is preferred to the parts it superseded.
        packs.sort(key=lambda p: (p.first, -p.last))
        reach, top = [], 0
        for p in packs:
            top = max(top, p.last)
            reach.append(top)
        self._view = (packs, [p.first for p in packs], reach)
        self._listed = True
        return packs

    def packs(self) -> list[Pack]:
        """The packs of the last listing (listing now if never listed)."""
        if not self._listed:
            self.refresh()
        return list(self._view[0])

    def _find(self, position: int) -> Pack | None:
        packs, firsts, reach = self._view
        i = bisect.bisect_right(firsts, position) - 1
        # Packs overlap only after a crashed merge; ``reach`` (the largest ``last`` so far)
        # stops the walk back as soon as no earlier pack can hold the position.
        while i >= 0 and reach[i] >= position:
            if packs[i].last >= position:
                return packs[i]
            i -= 1
        return None

    def get(self, position: int, refresh: bool = True) -> bytes | None:
        """The stored bytes of the event at ``position``, or None when no pack holds it.

        With ``refresh=False`` only the cached listing is used (no system call when no pack is
        known to hold it). Raises :class:`~kroniko_ops.errors.StoreCorrupted` for a damaged pack.
        """
        misses = 0
        for _attempt in range(8):
            pack = self._find(position)
            if pack is None:
                # Two listings in a row without it: a readdir racing with a merge may miss both
                # the new pack (created during it) and the old one (removed during it), never twice.
                if not refresh or misses == 2:
                    return None
                misses += 1
                self.refresh()
                continue
            try:
                return pack.read_one(position)
            except FileNotFoundError:
                if not refresh:
                    return None
                self.refresh()  # merged away since we listed: its successor is published
            except PackError as exc:
                raise StoreCorrupted(f"{exc}; run: kroniko-ops fsck {os.path.dirname(self.folder)}") from None
        return None

    def segments(self, first: int, last: int, refresh: bool = True) -> list[tuple[int, int, Pack | None]]:
        """``first..last`` cut into ascending runs ``(a, b, pack)``: held by ``pack``, or loose
        when ``pack`` is None. The packs returned are open, so a merge cannot take them away."""
        for _attempt in range(8):
            if refresh or not self._listed:
                self.refresh()
            out: list[tuple[int, int, Pack | None]] = []
            pos = first
            try:
                while pos <= last:
                    pack = self._find(pos)
                    if pack is not None:
                        end = min(last, pack.last)
                        pack.open()
                        out.append((pos, end, pack))
                    else:
                        nxt = self._next_start(pos)
                        end = min(last, nxt - 1) if nxt is not None else last
                        out.append((pos, end, None))
                    pos = end + 1
                return out
            except FileNotFoundError:
                refresh = True
            except PackError as exc:
                raise StoreCorrupted(f"{exc}; run: kroniko-ops fsck {os.path.dirname(self.folder)}") from None
        raise StoreCorrupted(f"the packs of {self.folder} keep changing while being listed")

    def _next_start(self, position: int) -> int | None:
        packs, firsts, _reach = self._view
        i = bisect.bisect_right(firsts, position)
        return packs[i].first if i < len(packs) else None

    def ensure_verified(self, pack: Pack, span: int) -> bool:
        """Verify ``pack``'s checksums (once) if a read of ``span`` of its events makes that
        worth it; return whether the pack is verified (else hash each event against the log)."""
        if pack.verified:
            return True
        if span * VERIFY_SHARE < pack.count and pack.data_size > SMALL_PACK:
            return False
        try:
            pack.checksums()
        except PackError as exc:
            raise StoreCorrupted(f"{exc}; run: kroniko-ops fsck {os.path.dirname(self.folder)}") from None
        return True

    def iter_range(self, first: int, last: int, backwards: bool = False) -> Iterator[tuple[int, bytes]]:
        """``(position, stored bytes)`` of every packed position in ``first..last``, in order.

        Bulk reads straight from the packs, without checking hashes: callers that need to trust
        the bytes verify them (fsck hashes each against the log, or see :meth:`ensure_verified`).
        """
        segs = [s for s in self.segments(first, last) if s[2] is not None]
        for a, b, pack in reversed(segs) if backwards else segs:
            assert pack is not None
            for start, raws in pack.batches(a, b, backwards):
                if backwards:
                    for k in range(len(raws) - 1, -1, -1):
                        yield start + k, raws[k]
                else:
                    yield from enumerate(raws, start)

    def ranges(self) -> list[tuple[int, int]]:
        """The packed positions as sorted disjoint ranges (re-lists the folder)."""
        return merge_ranges([(p.first, p.last) for p in self.refresh()])

    def count(self) -> int:
        """How many positions the packs hold (from the file names: no pack is read)."""
        return sum(b - a + 1 for a, b in self.ranges())

    def close(self) -> None:
        """Drop every mapping."""
        for p in self._view[0]:
            p.close()
        self._view = ([], [], [])
        self._listed = False


def check_packs(root: str, report: Report, full: bool, head: int | None = None) -> None:
    """Verify every pack of the store at ``root``, adding ``pack-corrupt`` (and leftover)
    findings to ``report``; see :func:`kroniko_ops.packcheck.check_packs`."""
    from .packcheck import check_packs as check

    check(root, report, full, head)
