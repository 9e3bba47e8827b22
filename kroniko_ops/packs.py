"""Pack files: many committed events in one file, found by position (docs/FORMAT.md, "Packs").

A pack covers the positions ``first..last`` and is two files in ``packs/``:

- ``pack-<first>-<last>.pack``: each event's stored bytes followed by ``\\n`` (so the data is
  JSON lines), then a trailer ``kroniko-pack 1 <first> <last> <sha256>\\n``;
- ``pack-<first>-<last>.idx``: ``count + 1`` lines ``%012d\\n``, the byte offset of each event and
  then the end of the data, then ``kroniko-idx 1 <first> <last> <pack sha256> <sha256>\\n``.

Each trailer's SHA-256 covers every byte of its file before it. Packs are immutable; compaction
writes them (:mod:`kroniko_ops.ops.compact_write`), one pair is read by
:class:`~kroniko_ops.packfile.Pack`, the engine finds them through :class:`PackSet`, and fsck
verifies them through :func:`check_packs`.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import StoreCorrupted
from .packfile import (
    BATCH,
    IDX_TRAILER_LEN,
    OFF_LEN,
    PACK_TRAILER_LEN,
    Pack,
    PackError,
    idx_trailer,
    pack_name,
    pack_trailer,
    parse_name,
)

if TYPE_CHECKING:
    from .report import Report

__all__ = [
    "BATCH", "IDX_TRAILER_LEN", "OFF_LEN", "PACK_TRAILER_LEN", "Pack", "PackError", "PackSet", "check_packs",
    "idx_trailer", "list_packs", "merge_ranges", "pack_name", "pack_trailer", "parse_name",
]

# A bulk read that covers at least this share of a pack (or any read of a pack this small)
# verifies the pack's checksums once instead of hashing each event against the log.
VERIFY_SHARE = 4
SMALL_PACK = 4 << 20


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
        """Re-list the folder; keep the packs already open. Returns the packs."""
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
        """Close every pack (no other thread may be reading through this set)."""
        for p in self._view[0]:
            p.close()
        self._view = ([], [], [])
        self._listed = False


def check_packs(root: str, report: Report, full: bool, head: int | None = None) -> None:
    """Verify every pack of the store at ``root``, adding ``pack-corrupt`` (and leftover)
    findings to ``report``; see :func:`kroniko_ops.packcheck.check_packs`."""
    from .packcheck import check_packs as check

    check(root, report, full, head)
