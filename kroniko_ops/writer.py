"""The writer's side of the log, used only under ``locks/append.lock``: the committed tail of the
active segment, cutting what a dead writer left, sealing and rolling segments, and the records
past the index checkpoint that conditions and idempotent retries must still see.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from . import fileio, layout
from .errors import StoreCorrupted
from .format import record as recfmt
from .format import segment as segfmt
from .index import Entry
from .logview import LogView
from .model import Query
from .synced import SyncedState

_log = logging.getLogger("kroniko_ops")
MAX_BATCH_BYTES = 256 * 1024 * 1024  # one batch's records; larger batches are refused before writing
MAX_TAIL_SLACK = 4 * MAX_BATCH_BYTES  # bytes past the synced end before it is damage, not a tail


@dataclass(frozen=True)
class Tail:
    """The end of the committed log: its last position and chain, where that record ends."""

    position: int
    chain: bytes
    segment: int
    end: int
    time: int = 0  # the last record's commit time (microseconds), 0 when not yet looked up


def entry_of(rec: recfmt.Record) -> Entry:
    """``(position, id, type, tags)`` of a record, for the index and condition checks."""
    doc = orjson.loads(rec.body)
    return rec.position, rec.event_id, doc["type"], tuple(doc.get("tags") or ())


class Pending:
    """The committed records past the index checkpoint, in position order, with their ids and
    terms looked up in O(1): conditions and idempotent retries check them on every append."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.ids: dict[str, int] = {}
        self._terms: dict[tuple[int, str], list[int]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    @property
    def first(self) -> int:
        """The first pending position (only when not empty)."""
        return self.entries[0][0]

    @property
    def last(self) -> int:
        """The last pending position (only when not empty)."""
        return self.entries[-1][0]

    def clear(self) -> None:
        """Forget everything (indexed, or to be re-read from the log)."""
        self.entries, self.ids, self._terms = [], {}, {}

    def extend(self, entries: Iterable[Entry]) -> None:
        """Add entries that follow the last one."""
        terms = self._terms
        for e in entries:
            self.entries.append(e)
            self.ids[e[1]] = e[0]
            terms.setdefault((0, e[2]), []).append(e[0])
            for t in e[3]:
                terms.setdefault((1, t), []).append(e[0])

    def first_match(self, query: Query, after: int) -> int | None:
        """The first pending position after ``after`` matching ``query``."""
        if not self.entries or after >= self.entries[-1][0]:
            return None
        first = self.entries[0][0]
        if query.is_all:
            return max(after + 1, first)
        best: int | None = None
        for item in query.items:
            if item.tags:
                candidates = self._terms.get((1, item.tags[0]), ())
            else:
                candidates = sorted(p for t in item.types for p in self._terms.get((0, t), ()))
            for pos in candidates[bisect.bisect_right(candidates, after):]:
                if best is not None and pos >= best:
                    break
                e = self.entries[pos - first]
                if item.matches(e[2], e[3]):
                    best = pos
                    break
        return best


class Writer:
    """One handle's write descriptor on the active segment and what it knows of the tail."""

    def __init__(self, lay: layout.Layout, view: LogView, syncer: fileio.Syncer, segment_bytes: int) -> None:
        self.layout = lay
        self.view = view
        self.syncer = syncer
        self.segment_bytes = segment_bytes
        self.fd: int | None = None
        self.first = 0
        self.tail: Tail | None = None
        self.pending = Pending()  # committed records past the index checkpoint, in order

    def close(self) -> None:
        """Close the write descriptor."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # -- the active segment ------------------------------------------------------------------

    def _open_active(self) -> None:
        """Point the write descriptor at the newest segment, finishing a seal that a crash
        interrupted (its offset index written, the next segment not yet created)."""
        self.view.refresh()
        first = self.view.active_first
        idx = os.path.join(self.layout.log_dir, segfmt.idx_name(first))
        if os.path.lexists(idx):
            self._finish_interrupted_seal(first, idx)
            return self._open_active()
        prev = self.view.previous_segment(first)
        if prev is not None and not os.path.lexists(os.path.join(self.layout.log_dir, segfmt.idx_name(prev))):
            # Compaction removes a packed segment's files (.seg first) after the listing: only
            # a segment still there can have lost its index to a power cut.
            if os.path.lexists(os.path.join(self.layout.log_dir, segfmt.seg_name(prev))):
                self._restore_lost_seal(prev, first)
            return self._open_active()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None  # if opening the next one fails, close() must not close this number again
        path = os.path.join(self.layout.log_dir, segfmt.seg_name(first))
        self.fd = fileio.check_regular(
            fileio.open_write(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK), path)
        self.first = first
        self._sealed_mark = idx  # appears when another writer seals this segment

    def _restore_lost_seal(self, prev: int, first: int) -> None:
        """A power cut kept the next segment's name but lost the sealed one's offset index (the
        folder fsync that makes both durable never ran). Nothing can have been written to the
        next segment before that fsync, so an empty one means: rebuild the index from the
        sealed segment, whose records were fsynced before the seal began."""
        size = os.lstat(os.path.join(self.layout.log_dir, segfmt.seg_name(first))).st_size
        if size:
            raise StoreCorrupted(
                f"log/{segfmt.idx_name(prev)} of {self.layout.root} is missing while the next segment holds "
                f"records; run: kroniko-ops fsck {self.layout.root}")
        fd = fileio.open_read(os.path.join(self.layout.log_dir, segfmt.seg_name(prev)))
        try:
            data = segfmt.build_seal(fd, prev, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        self._publish_idx(prev, data)
        self.syncer.dir(self.layout.log_dir)

    def _finish_interrupted_seal(self, first: int, idx: str) -> None:
        path = os.path.join(self.layout.log_dir, segfmt.seg_name(first))
        fd = fileio.open_read(path)
        try:
            size = os.fstat(fd).st_size
            try:
                seal = segfmt.read_idx(idx, first)
                ok = seal.size == size
            except (segfmt.SegmentError, OSError):
                ok = False
            if not ok:
                layout.set_aside(self.layout.root, "torn-seal",
                                 f"log/{segfmt.idx_name(first)}: an offset index left torn by a crash while "
                                 "sealing; rebuilt from the segment's records.",
                                 move=[idx], durable=self.syncer.durable)
                data = segfmt.build_seal(fd, first, size)
                self._publish_idx(first, data)
            last = segfmt.read_idx(idx, first)
            self._create_next(first + last.count)
        finally:
            os.close(fd)

    def _publish_idx(self, first: int, data: bytes) -> None:
        final = os.path.join(self.layout.log_dir, segfmt.idx_name(first))
        tmp = os.path.join(self.layout.log_dir, f"{layout.TMP_PREFIX}{os.getpid()}-{segfmt.idx_name(first)}")
        fd = fileio.open_write(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW)
        try:
            fileio.write_all(fd, data, tmp)
            self.syncer.file(fd, tmp)
        finally:
            os.close(fd)
        fileio.rename(tmp, final)

    def _create_next(self, first: int) -> None:
        path = os.path.join(self.layout.log_dir, segfmt.seg_name(first))
        fd = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            self.syncer.file(fd, path)
        finally:
            os.close(fd)
        # One folder fsync makes the sealed index's name and the new segment's name durable,
        # before any record goes to the new segment.
        self.syncer.dir(self.layout.log_dir)

    def seal_and_roll(self) -> None:
        """Seal the active segment (offset index and trailer, fsynced, together with the
        segment) and create the next one; the tail must be the segment's committed end."""
        assert self.fd is not None and self.tail is not None
        tail = self.tail
        size = os.fstat(self.fd).st_size
        data = os.pread(self.fd, size, 0)
        self.syncer.file(self.fd, self.view.active.path if self.view.active else "")
        self._publish_idx(self.first, segfmt.seal_fast(data, self.first, tail.chain))
        self._create_next(tail.position + 1)
        self._open_active()
        self.tail = Tail(tail.position, tail.chain, self.first, 0, tail.time)

    def commit_time(self, tail: Tail, at: int | None = None) -> int:
        """The commit time for a batch after ``tail``: now (or ``at``, a copied batch's own), in
        microseconds since the epoch, never earlier than the last record's (commit times never
        decrease along the log, so a point in time is found by bisection even if the clock
        stepped back)."""
        last = tail.time
        if last == 0 and tail.position > 0:
            try:
                last = self.view.record(tail.position).time
            except (recfmt.RecordError, ValueError, OSError, KeyError):
                last = 0  # only the monotonic guard is lost; the log is checked elsewhere
        return max(time.time_ns() // 1000 if at is None else at, last)

    def needs_roll(self, nbytes: int) -> bool:
        """Whether a batch of ``nbytes`` must go to a new segment (a batch never spans two)."""
        assert self.tail is not None
        return self.tail.end > 0 and self.tail.end + nbytes > self.segment_bytes

    # -- the committed tail --------------------------------------------------------------------

    def sync_tail(self, state: SyncedState | None, index_cp: tuple[int, bytes], verify_all: bool = False) -> Tail:
        """Bring :attr:`tail` and :attr:`pending` up to the end of the log, cutting a dead
        writer's torn or uncommitted bytes into ``lost-found/``. ``verify_all`` re-verifies
        every record past the synced state (after a reboot, or when it is unreadable)."""
        # Sealed by another writer (its index appeared), or packed and removed by compaction
        # since (which removes the .seg before the .idx): either way, find the new active one.
        if self.fd is None or os.path.lexists(self._sealed_mark) or os.fstat(self.fd).st_nlink == 0:
            self._open_active()
            self.tail = None
        assert self.fd is not None
        size = os.fstat(self.fd).st_size
        if self.tail is not None and self.tail.segment == self.first and self.tail.end == size and not verify_all:
            self._show(self.tail)
            return self.tail
        # After a reboot nothing past the last seal is trusted: the whole active segment is
        # verified record by record (once per boot), and the synced position is recomputed.
        start = self._start_point(None if verify_all else state, verify_all)
        if start.end > size:
            raise StoreCorrupted(
                f"log segment {segfmt.seg_name(self.first)} of {self.layout.root} is {size} bytes, shorter than "
                f"its synced end {start.end}; the store is damaged: run kroniko-ops fsck {self.layout.root}")
        committed, new = self._scan(start, size, verify_all)
        if verify_all and state is not None and state.segment == self.first and committed.position < state.position:
            # Acknowledged records do not verify. Lost (zeros, a short file: the disk dropped what
            # it had acknowledged) is recovered from what is left, but a whole committed record
            # after the bad bytes means damage, which is never cut (its positions were given out).
            self._refuse_damage(committed, size)
            _log.error("log segment %s of %s verifies only up to position %d, below the synced position %d written "
                       "before the reboot: the disk lost data it had acknowledged; recovering from what it kept",
                       segfmt.seg_name(self.first), self.layout.root, committed.position, state.position)
        if committed.end < size:
            if not verify_all:
                self._refuse_damage(committed, size)
            self._cut(committed, size)
        self._extend_pending(index_cp, committed, new)
        self.tail = committed
        self._show(committed)
        return committed

    def _show(self, tail: Tail) -> None:
        """Let the view read the active segment up to the tail (the writer may read its records)."""
        if self.view.active is not None and self.view.active.first == self.first == tail.segment:
            self.view.active.extend(tail.end)

    def _start_point(self, state: SyncedState | None, verify_all: bool) -> Tail:
        if self.tail is not None and self.tail.segment == self.first and not verify_all:
            return self.tail
        if state is not None and state.segment == self.first and not state.poisoned:
            return Tail(state.position, state.chain, state.segment, state.end)
        if self.first == 1:
            return Tail(0, recfmt.GENESIS, 1, 0)
        prev, _ = self.view.locate(self.first - 1)
        return Tail(self.first - 1, self._last_chain(prev), self.first, 0)

    def _last_chain(self, container: object) -> bytes:
        seal = getattr(container, "seal", None)
        if seal is not None:
            return seal.last_chain
        return container.last_chain  # type: ignore[attr-defined]

    def _scan(self, start: Tail, size: int, verify: bool) -> tuple[Tail, list[recfmt.Record]]:
        """Read records from ``start`` on; return the last committed point and its records.

        Records other live writers appended in this boot are checked by position, header CRC
        and length (enough to find the commit point); ``verify`` also checks every body hash and
        the chain, as after a reboot, when bytes past the synced point may be old or zeros.
        """
        assert self.fd is not None
        if size - start.end > MAX_TAIL_SLACK:
            raise StoreCorrupted(
                f"log segment {segfmt.seg_name(self.first)} of {self.layout.root} holds {size - start.end} bytes "
                "past its synced end, more than any batch could leave; run kroniko-ops fsck and recover")
        committed, chain, pos = start, start.chain, start.position
        records: list[recfmt.Record] = []
        good: list[recfmt.Record] = []
        try:
            for rec in segfmt.scan(self.fd, start.end, size):
                if rec.position != pos + 1:
                    break
                if verify and (not recfmt.body_hash_ok(rec) or recfmt.chain_of(chain, rec.event_hash) != rec.chain):
                    break
                records.append(rec)
                pos, chain = rec.position, rec.chain
                if rec.commit:
                    committed = Tail(pos, chain, self.first, rec.end, rec.time)
                    good.extend(records)
                    records = []
        except recfmt.RecordError:
            pass
        return committed, good

    def _refuse_damage(self, committed: Tail, size: int) -> None:
        """Within one boot, bytes past the commit point come from a writer that died mid-batch:
        at most one batch. More than that, or a whole, checksummed record with a commit mark
        among them, means committed records were damaged instead, and cutting would reassign
        acknowledged positions (or copy gigabytes of garbage)."""
        assert self.fd is not None
        if size - committed.end > MAX_BATCH_BYTES:
            raise StoreCorrupted(
                f"log segment {segfmt.seg_name(self.first)} of {self.layout.root} holds {size - committed.end} bytes "
                f"after its last commit at position {committed.position}, more than one batch can leave; appends "
                f"are refused: run kroniko-ops fsck {self.layout.root}")
        carry, pos = b"", committed.end
        while pos < size:
            chunk = os.pread(self.fd, min(segfmt.READ_CHUNK, size - pos), pos)
            if not chunk:
                break
            pos += len(chunk)
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop()
            for line in lines:
                try:
                    rec = recfmt.parse_at(line + b"\n")
                except recfmt.RecordError:
                    continue
                if rec.commit and rec.position > committed.position:
                    raise StoreCorrupted(
                        f"the log of {self.layout.root} is damaged after position {committed.position} (a committed "
                        f"record at position {rec.position} follows bytes that do not verify); appends are refused "
                        f"until it is repaired: run kroniko-ops fsck {self.layout.root}, then restore from a backup")
            if len(carry) > MAX_BATCH_BYTES:
                break

    def _cut(self, committed: Tail, size: int) -> None:
        """Set aside and truncate the bytes after the last commit mark (a dead writer's)."""
        assert self.fd is not None
        name = segfmt.seg_name(self.first)
        layout.set_aside(
            self.layout.root, "log-tail",
            f"Bytes {committed.end}..{size} of log/{name}, cut by recovery: a torn or uncommitted tail after "
            f"position {committed.position}, left by a writer that died (or a power cut) before its batch's "
            "commit mark was whole. No append was acknowledged for them.",
            copies={f"{name}.tail": (self.fd, committed.end, size)}, durable=self.syncer.durable)
        fileio.truncate(self.fd, committed.end, name)
        self.syncer.file(self.fd, name)

    def _extend_pending(self, index_cp: tuple[int, bytes], tail: Tail, new: list[recfmt.Record]) -> None:
        """Keep :attr:`pending` equal to the records in (index checkpoint, tail]."""
        cp = index_cp[0]
        pending = self.pending
        if pending and pending.first != cp + 1:
            pending.clear()
        have = pending.last if pending else cp
        if new and new[0].position == have + 1:
            pending.extend(entry_of(r) for r in new)
        elif have < tail.position:
            pending.clear()
            self._show(tail)
            pending.extend(self._entries(cp + 1, tail.position))

    def _entries(self, lo: int, hi: int) -> list[Entry]:
        out: list[Entry] = []
        if lo > hi:
            return out
        try:
            for _first, raw in self.view.runs(lo, hi):
                out.extend(entry_of(rec) for rec in recfmt.iter_records(raw))
        except (recfmt.RecordError, ValueError) as exc:
            raise StoreCorrupted(
                f"a committed record of {self.layout.root} between positions {lo} and {hi} is damaged ({exc}); "
                f"run: kroniko-ops fsck {self.layout.root}") from None
        return out

    def drop_cache(self) -> None:
        """Ask the kernel to forget the active segment's cached pages, so that the next read
        comes from the disk (after a failed fsync the cache may hold bytes the disk lacks)."""
        if self.fd is None:
            self._open_active()
        assert self.fd is not None
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
