"""Where each position's record lives: a pack, a sealed segment or the active segment.

:class:`LogView` is how the engine and every tool find records; it reads segments through
:mod:`.format.segment` and packs through :mod:`.format.pack` and never slices their bytes
itself. Files that compaction removes while a view holds them stay readable through the open
descriptor; a file gone before it was opened makes the view list the folders again.

Threads may share a view: its listing and its open files change under a lock, and a file it
stops using is closed when the last reader holding it lets go (not under a running read).
"""

from __future__ import annotations

import bisect
import os
import resource
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

from .activeseg import ActiveSegment
from .errors import StoreCorrupted
from .format import pack as packfmt
from .format import record as recfmt
from .format import segment as segfmt
from .layout import Layout

RUN_BYTES = 1 << 20  # raw bytes handed out per run: bulk enough to decode fast, flat in memory
FIRST_RUN = 64  # records of a segment read first: a read its caller stops early (limit=1) reads few
RUN_RECORDS = 1024  # records of a segment read at once after that (cache-friendly, few system calls)
LOCATE_TRIES = 20  # listings before a position no file holds is damage, not a compaction racing us
MAX_OPEN_SEGMENTS = 512  # sealed segments kept open at most (and a quarter of the open-files limit)
BLOCK_CACHE_BYTES = 32 << 20  # decompressed pack blocks kept for point reads (by tag, type or id)
Span = tuple[int, Sequence[bytes], list[tuple[int, int, bool]], "bytes | memoryview | None"]

_RELISTS = 20  # listings tried while compactions keep removing the segment just listed


Container = "segfmt.SealedSegment | packfmt.PackReader | ActiveSegment"


class LogView:
    """The containers of one store, refreshed as segments roll and compaction publishes packs."""

    def __init__(self, lay: Layout) -> None:
        self.layout = lay
        self._firsts: list[int] = []
        self._entries: list[tuple[int, str, str]] = []  # (first, kind, name): "pack" | "sealed" | "active"
        self._open: OrderedDict[str, object] = OrderedDict()  # least recently used first
        self._max_open = open_limit()
        self._blocks: OrderedDict[tuple[str, int], packfmt.Decoded] = OrderedDict()  # least recently used first
        self._block_bytes = 0
        self.active: ActiveSegment | None = None
        self._lock = threading.RLock()  # the listing, the open files and `active` change together
        self.refresh()

    def close(self) -> None:
        """Close every open file."""
        for c in self._open.values():
            c.close()  # type: ignore[attr-defined]
        self._open.clear()
        self._blocks.clear()
        self._block_bytes = 0
        if self.active is not None:
            self.active.close()
            self.active = None

    def refresh(self) -> None:
        """List ``log/`` and ``packs/`` again."""
        with self._lock:
            for attempt in range(_RELISTS):
                try:
                    self._list()
                    return
                except FileNotFoundError:
                    # The segment listed last was sealed, packed and removed by a compaction
                    # before it could be opened: a new listing names the new active segment.
                    if attempt == _RELISTS - 1:
                        raise

    def _list(self) -> None:
        segs: dict[int, set[str]] = {}
        for name in os.listdir(self.layout.log_dir):
            parsed = segfmt.parse_name(name)
            if parsed is not None:
                segs.setdefault(parsed[0], set()).add(parsed[1])
        packs = []
        try:
            names = os.listdir(self.layout.packs)
        except FileNotFoundError:
            names = []
        for name in names:
            rng = packfmt.parse_name(name)
            if rng is not None:
                packs.append((rng[0], rng[1], name))
        # The biggest pack first among those starting at one position: a merge's inputs may
        # outlive it for a while (a power cut kept the unlink of one and not of another).
        packs.sort(key=lambda p: (p[0], -p[1]))
        entries: list[tuple[int, str, str]] = []
        covered = 0
        pack_iter = iter(packs)
        next_pack = next(pack_iter, None)
        seg_firsts = sorted(f for f, kinds in segs.items() if "seg" in kinds)
        active_first = seg_firsts[-1] if seg_firsts else 1
        for first in seg_firsts:
            while next_pack is not None and next_pack[0] <= first:
                if next_pack[0] > covered:
                    entries.append((next_pack[0], "pack", next_pack[2]))
                    covered = next_pack[1]
                next_pack = next(pack_iter, None)
            if first <= covered:
                continue  # a pack already holds it (compaction removes the segment next)
            kind = "active" if first == active_first else "sealed"
            entries.append((first, kind, segfmt.seg_name(first)))
        while next_pack is not None:
            if next_pack[0] > covered:
                entries.append((next_pack[0], "pack", next_pack[2]))
                covered = next_pack[1]
            next_pack = next(pack_iter, None)
        entries.sort()
        listed = {e[2] for e in entries}
        for name in [n for n in self._open if n not in listed]:
            # Gone (compacted): forget it so its disk space is freed; a read still using it
            # holds its own reference, and the descriptor closes with the last one.
            del self._open[name]
        self._drop_blocks(listed)
        self._entries = entries
        self._firsts = [e[0] for e in entries]
        if self.active is None or self.active.first != active_first:
            # The old one closes once no read still running in another thread holds it.
            self.active = ActiveSegment(self.layout.log_dir, active_first) if seg_firsts else None

    def previous_segment(self, first: int) -> int | None:
        """The first position of the segment right before the one at ``first``, unless a pack
        holds those positions (or there is none)."""
        with self._lock:
            i = bisect.bisect_left(self._firsts, first) - 1
            if i < 0 or self._entries[i][1] == "pack":
                return None
            return self._entries[i][0]

    @property
    def active_first(self) -> int:
        """The first position of the active segment."""
        return self.active.first if self.active is not None else 1

    def _container(self, entry: tuple[int, str, str]) -> object:
        first, kind, name = entry
        if kind == "active":
            assert self.active is not None
            return self.active
        c = self._open.get(name)
        if c is None:
            if kind == "pack":
                c = packfmt.PackReader(os.path.join(self.layout.packs, name))
            else:
                c = segfmt.SealedSegment(self.layout.log_dir, first)
            self._open[name] = c
            self._evict()
        else:
            self._open.move_to_end(name)
        return c

    def _evict(self) -> None:
        """Forget the least recently used sealed segments past :func:`open_limit` (a read
        of a whole store would otherwise hold every segment open). A read still running over one
        keeps it; it closes when the last reference goes (``SealedSegment.__del__``)."""
        excess = len(self._open) - self._max_open
        if excess > 0:
            old = [k for k, v in self._open.items() if isinstance(v, segfmt.SealedSegment)][:excess]
            for name in old:
                del self._open[name]

    def locate(self, position: int) -> tuple[object, int]:
        """The container holding ``position`` and the last position it holds."""
        with self._lock:
            return self._locate(position)

    def _locate(self, position: int) -> tuple[object, int]:
        missing: FileNotFoundError | None = None
        for attempt in range(LOCATE_TRIES):
            i = bisect.bisect_right(self._firsts, position) - 1
            if i >= 0:
                entry = self._entries[i]
                nxt = self._entries[i + 1][0] - 1 if i + 1 < len(self._entries) else None
                if nxt is None or position <= nxt:
                    try:
                        c = self._container(entry)
                    except FileNotFoundError as exc:
                        # Compaction removed it after the listing (back-to-back runs may do so
                        # more than once): list again.
                        missing = exc
                        self.refresh()
                        continue
                    except (segfmt.SegmentError, packfmt.PackError) as exc:
                        raise StoreCorrupted(f"{exc}; run: kroniko-ops fsck {self.layout.root}") from None
                    last = c.last if nxt is None else nxt  # type: ignore[attr-defined]
                    if position <= last:
                        return c, last
            if attempt > 0 and missing is None:
                break  # listed again and still no container holds it
            missing = None
            self.refresh()
        if missing is not None:
            raise StoreCorrupted(f"{missing.filename} is missing: position {position} cannot be read; "
                                 f"run: kroniko-ops fsck {self.layout.root}")
        raise StoreCorrupted(f"no segment or pack of {self.layout.root} holds position {position}; "
                             f"run: kroniko-ops fsck {self.layout.root}")

    # -- decoded reads (the read path) --------------------------------------------------------

    def _drop_blocks(self, listed: set[str]) -> None:
        for key in [k for k in self._blocks if k[0] not in listed]:
            self._block_bytes -= self._blocks.pop(key).size

    def _decoded(self, c: packfmt.PackReader, i: int, keep: bool) -> packfmt.Decoded:
        """Block ``i`` of pack ``c``, from the cache when it is there; kept there when ``keep``."""
        key = (c.name, i)
        with self._lock:
            d = self._blocks.get(key)
            if d is not None:
                self._blocks.move_to_end(key)
                return d
        try:
            d = c.block(i)
        except packfmt.PackError as exc:
            raise StoreCorrupted(f"{exc}; run: kroniko-ops fsck {self.layout.root}") from None
        if keep and d.size <= BLOCK_CACHE_BYTES // 4:
            with self._lock:
                if key not in self._blocks:
                    self._blocks[key] = d
                    self._block_bytes += d.size
                    while self._block_bytes > BLOCK_CACHE_BYTES:
                        self._block_bytes -= self._blocks.popitem(last=False)[1].size
        return d

    def spans(self, lo: int, hi: int, backwards: bool = False,
              holds: Callable[[bytes], bool] | None = None) -> Iterator[Span]:
        """``(first, bodies, commits, array)`` covering positions ``lo..hi`` for
        :func:`~kroniko_ops.codec.decode_run`, in order (in reverse order of spans when
        ``backwards``; each span's events stay in ascending order). A pack's blocks are read
        whole (one decompression, one parse each); a segment's records a growing run at a time.
        ``holds`` (forward reads): a run of a segment whose raw bytes it rejects is skipped
        before it is split into records; it must accept every run holding something wanted."""
        step = FIRST_RUN
        if backwards:
            pos = hi
            while pos >= lo:
                c, _ = self.locate(pos)
                first = max(lo, c.first)  # type: ignore[attr-defined]
                if isinstance(c, packfmt.PackReader):
                    i = c.find(pos)
                    a = max(first, c.bounds(i)[0])
                    yield self._decoded(c, i, pos - a < step).span(a, pos)
                else:
                    a = max(first, pos - step + 1)
                    yield (a, *recfmt.bodies_commits(c.read_run(a, pos)), None)  # type: ignore[attr-defined]
                step = min(2 * step, RUN_RECORDS)
                pos = a - 1
            return
        pos = lo
        while pos <= hi:
            c, last = self.locate(pos)
            b = min(hi, last)
            if isinstance(c, packfmt.PackReader):
                i, j = c.find(pos), c.find(b)
                for k in range(i, j + 1):
                    bf, bl = c.bounds(k)
                    # A short read (start, limit, subscribe) is likely read again: keep its block.
                    yield self._decoded(c, k, j - i < 2).span(max(pos, bf), min(b, bl))
            else:
                a = pos
                while a <= b:
                    z = min(b, a + step - 1)
                    raw = c.read_run(a, z)  # type: ignore[attr-defined]
                    if holds is None or holds(raw):
                        yield (a, *recfmt.bodies_commits(raw), None)
                    step = min(2 * step, RUN_RECORDS)
                    a = z + 1
            pos = b + 1

    def read_spans(self, positions: list[int]) -> list[Span]:
        """Spans covering exactly ``positions`` (ascending), consecutive ones read together; the
        pack blocks they touch are kept in the cache of decoded blocks."""
        out: list[Span] = []
        i, n = 0, len(positions)
        while i < n:
            c, last = self.locate(positions[i])
            j = i
            while j + 1 < n and positions[j + 1] == positions[j] + 1 and positions[j + 1] <= last:
                j += 1
            lo, hi = positions[i], positions[j]
            if isinstance(c, packfmt.PackReader):
                k = c.find(lo)
                bf, bl = c.bounds(k)
                if hi <= bl:  # the common case: a point read, or a short run, in one block
                    out.append(self._decoded(c, k, True).span(lo, hi))
                else:
                    for m in range(k, c.find(hi) + 1):
                        bf, bl = c.bounds(m)
                        out.append(self._decoded(c, m, True).span(max(lo, bf), min(hi, bl)))
            else:
                out.append((lo, *recfmt.bodies_commits(c.read_run(lo, hi)), None))  # type: ignore[attr-defined]
            i = j + 1
        return out

    # -- raw records (the tools) -------------------------------------------------------------

    def runs(self, lo: int, hi: int, backwards: bool = False) -> Iterator[tuple[int, bytes]]:
        """``(first position, raw record bytes)`` covering ``lo..hi`` in order (or in reverse
        order of runs when ``backwards``; each run's records stay in ascending order)."""
        if backwards:
            pos = hi
            while pos >= lo:
                c, _ = self.locate(pos)
                first = max(lo, c.first)  # type: ignore[attr-defined]
                step = max(1, RUN_BYTES // 512)
                a = max(first, pos - step + 1)
                yield a, self._read(c, a, pos)
                pos = a - 1
            return
        pos = lo
        while pos <= hi:
            c, last = self.locate(pos)
            b = min(hi, last)
            yield from self._chunks(c, pos, b)
            pos = b + 1

    def _chunks(self, c: object, lo: int, hi: int) -> Iterator[tuple[int, bytes]]:
        if isinstance(c, packfmt.PackReader):
            pos = lo
            for raw in c.read_range(lo, hi):
                yield pos, raw
                pos += raw.count(b"\n")
            return
        step = max(1, RUN_BYTES // 512)
        for a in range(lo, hi + 1, step):
            yield a, self._read(c, a, min(hi, a + step - 1))

    def _read(self, c: object, lo: int, hi: int) -> bytes:
        if isinstance(c, packfmt.PackReader):
            return b"".join(c.read_range(lo, hi))
        return c.read_run(lo, hi)  # type: ignore[attr-defined]

    def read_positions(self, positions: list[int]) -> list[tuple[int, bytes]]:
        """Runs covering exactly ``positions`` (ascending), consecutive ones read together."""
        out: list[tuple[int, bytes]] = []
        i, n = 0, len(positions)
        while i < n:
            c, last = self.locate(positions[i])
            j = i
            while j + 1 < n and positions[j + 1] == positions[j] + 1 and positions[j + 1] <= last:
                j += 1
            out.append((positions[i], self._read(c, positions[i], positions[j])))
            i = j + 1
        return out

    def record(self, position: int) -> recfmt.Record:
        """The parsed record at ``position``."""
        c, _ = self.locate(position)
        return recfmt.parse_at(self._read(c, position, position))


def open_limit() -> int:
    """How many sealed segments a view keeps open: :data:`MAX_OPEN_SEGMENTS`, but at most a
    quarter of the process's open-files limit (the rest is the application's)."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_SEGMENTS
    return max(8, min(MAX_OPEN_SEGMENTS, soft // 4))
