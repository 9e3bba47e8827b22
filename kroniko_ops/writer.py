"""The writer's side of the log, used only under ``locks/append.lock``: the committed tail of the
active segment, cutting what a dead writer left, and the records past the index checkpoint that
conditions and idempotent retries must still see (the segment files themselves, sealing and
rolling: :mod:`.segments`).

The active segment is preallocated (zeros): the records end where the zeros begin. A handle keeps
the tail it last saw; under the lock one ``pread`` at that offset tells whether anything was
written since (a zero byte: nothing; a sealed segment is trimmed, so it ends there instead), and
the records other writers appended meanwhile are read from there, not found by the file's size.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from . import fileio, layout
from .errors import StoreCorrupted
from .format import record as recfmt
from .format import segment as segfmt
from .index import Entry
from .logview import LogView
from .pending import Pending, entries_of, entry_of  # noqa: F401  (entry_of: rebuild's)
from .segments import SegmentFiles
from .synced import SyncedState

_log = logging.getLogger("kroniko_ops")
MAX_BATCH_BYTES = 256 * 1024 * 1024  # one batch's records; larger batches are refused before writing
MAX_TAIL_SLACK = 4 * MAX_BATCH_BYTES  # bytes past the synced end before it is damage, not a tail


PEEK = 4096  # bytes read at the tail under the lock: a zero byte, or the batches other writers appended
FOLLOW_MAX = 4 << 20  # past this much new log, the catch-up takes the slow path (and the index catches up)


@dataclass(frozen=True, slots=True)
class Tail:
    """The end of the committed log: its last position and chain, where that record ends."""

    position: int
    chain: bytes
    segment: int
    end: int
    time: int = 0  # the last record's commit time (microseconds), 0 when not yet looked up
    start: int = -1  # where that record begins in ``segment``; -1: unknown, or none in this segment


class Writer(SegmentFiles):
    """One handle's write descriptor on the active segment and what it knows of the tail."""

    def __init__(self, lay: layout.Layout, view: LogView, syncer: fileio.Syncer, segment_bytes: int) -> None:
        super().__init__(lay, view, syncer, segment_bytes)
        self.tail: Tail | None = None
        self.pending = Pending()  # committed records in (index checkpoint, tail], in order
        self.others = True  # whether the last look at the tail found batches other writers appended

    # -- the fast path: what changed since this handle last held the lock ---------------------

    def quick_tail(self) -> Tail | None:
        """In this boot, under the lock: the tail, following the whole batches other writers
        appended since this handle last looked; None when the slow path must look (no tail
        known yet, the segment rolled, or bytes that are not whole committed batches)."""
        tail = self.tail
        fd = self.fd
        if tail is None or fd is None or tail.segment != self.first:
            return None
        # The remembered last record is read with what follows it: a repair (fsck --accept-loss)
        # may have cut it since, and appending after it would leave a gap or a broken chain.
        lead = tail.end - tail.start
        if not tail.end:
            buf = os.pread(fd, PEEK, 0)
        elif tail.start < 0 or lead > PEEK:
            if not self.holds(tail):
                return None
            buf = os.pread(fd, PEEK, tail.end)
        else:
            buf = os.pread(fd, lead + PEEK, tail.start)
            if not recfmt.is_commit_point(buf, tail.position, tail.chain, lead):
                self.forget()
                return None
            buf = buf[lead:]
        if buf[:1] == b"\0" or (not buf and not self.rolled()):
            # Zeros: nothing was written since. The end of the file: nothing either, unless the
            # segment was sealed (trimmed to its records) by another writer.
            self.others = False
            return tail
        if not buf:
            return None
        return self._follow(tail, buf)

    def _follow(self, tail: Tail, buf: bytes) -> Tail | None:
        """Take in the whole committed batches other writers appended after ``tail`` (their
        bytes start ``buf``), checking framing, positions and header checksums; None when
        anything else is there (a dead writer's bytes: the slow path cuts them)."""
        assert self.fd is not None
        base, pos, off = tail.end, tail.position, 0
        spans: list[tuple[int, int, int]] = []
        while True:
            found, off, torn = recfmt.walk(buf, off, pos)
            spans += found
            pos += len(found)
            if off < len(buf) and not torn:
                if buf[off] != 0:
                    return None  # not a record, not the zero tail
                break
            if len(buf) >= FOLLOW_MAX:
                return None  # a long way behind: the slow path catches up in chunks
            more = os.pread(self.fd, max(PEEK, len(buf) - off), base + len(buf))
            if not more:
                if torn or self.rolled():
                    return None  # cut short at the end of the file, or sealed meanwhile
                break
            buf += more
        last = len(spans) - 1
        while last >= 0 and buf[spans[last][0] + 208] != recfmt.COMMIT:
            last -= 1
        if last != len(spans) - 1:
            return None  # whole records without their commit mark: a dead writer's, cut by the slow path
        if not spans:
            return tail
        start, end, size = spans[-1]
        fields = recfmt.chain_and_time(buf, start, size)
        if fields is None:
            return None  # a checksummed header with fields no writer writes: the slow path judges it
        committed = Tail(pos, fields[0], self.first, base + end, fields[1], base + start)
        self.pending.add_raw(tail.position + 1, buf, spans)
        self.others = True
        self.tail = committed
        return committed

    # -- the slow path -------------------------------------------------------------------------

    def sync_tail(self, state: SyncedState | None, index_cp: tuple[int, bytes], verify_all: bool = False,
                  thorough: bool = False) -> Tail:
        """Bring :attr:`tail` and :attr:`pending` up to the end of the log, cutting a dead
        writer's torn or uncommitted bytes into ``lost-found/``. ``verify_all`` re-verifies
        every record past the synced state (after a reboot, or when it is unreadable);
        ``thorough`` (recovery) also cuts bytes that are not zero anywhere past the records,
        as ``fsck`` finds them, not only those right after them."""
        # Sealed by another writer (its index appeared), or packed and removed by compaction
        # since (which removes the .seg before the .idx): either way, find the new active one.
        if self.fd is None or self.rolled():
            self.open_active()
            self.tail = None
        assert self.fd is not None
        self.others = True
        limit = os.fstat(self.fd).st_size
        # After a reboot nothing past the last seal is trusted: the whole active segment is
        # verified record by record (once per boot), and the synced position is recomputed.
        start = self._start_point(None if verify_all else state, verify_all)
        if start.end > limit:
            raise StoreCorrupted(
                f"log segment {segfmt.seg_name(self.first)} of {self.layout.root} is {limit} bytes, shorter than "
                f"its synced end {start.end}; the store is damaged: run kroniko-ops fsck {self.layout.root}")
        if limit - max(start.end, self.segment_bytes) > MAX_TAIL_SLACK:
            raise StoreCorrupted(
                f"log segment {segfmt.seg_name(self.first)} of {self.layout.root} holds {limit - start.end} bytes "
                "past its synced end, more than any batch could leave; run kroniko-ops fsck and recover")
        committed, new, stop = self._scan(start, limit, verify_all)
        # In one boot a dead writer's bytes are one run from the commit point (a write() fills
        # the page cache in order) and hold no NUL; after a power cut anything may have stuck
        # anywhere past the synced point, so the last byte that is not zero ends them.
        if verify_all or thorough:
            end = segfmt.data_end(self.fd, limit, stop)
        else:
            end = segfmt.first_zero(self.fd, stop, limit)
        if end - start.end > MAX_TAIL_SLACK:
            raise StoreCorrupted(
                f"log segment {segfmt.seg_name(self.first)} of {self.layout.root} holds {end - start.end} bytes "
                "past its synced end, more than any batch could leave; run kroniko-ops fsck and recover")
        if verify_all and state is not None and state.segment == self.first and committed.position < state.position:
            # Acknowledged records do not verify. Lost (zeros, a short file: the disk dropped what
            # it had acknowledged) is recovered from what is left, but a whole committed record
            # after the bad bytes means damage, which is never cut (its positions were given out).
            self._refuse_damage(committed, end)
            _log.error("log segment %s of %s verifies only up to position %d, below the synced position %d written "
                       "before the reboot: the disk lost data it had acknowledged; recovering from what it kept",
                       segfmt.seg_name(self.first), self.layout.root, committed.position, state.position)
        if committed.end < end:
            if not verify_all:
                self._refuse_damage(committed, end)
            self._cut(committed, end)
        elif limit == committed.end:
            self.preallocate(limit)
        self._extend_pending(index_cp, committed, new)
        self.tail = committed
        self.show(committed)
        return committed

    def show(self, tail: Tail) -> None:
        """Let the view read the active segment up to the tail (the writer may read its records
        through it). Appends do not need it: readers extend the view to the synced end."""
        if self.view.active is not None and self.view.active.first == self.first == tail.segment:
            self.view.active.extend(tail.end)

    def holds(self, tail: Tail) -> bool:
        """Whether the record ``tail`` names is still the last of a batch where it says (else
        :meth:`forget` it): nothing but a repair cuts committed records, but one may have run."""
        if tail.end and (tail.start < 0 or self.fd is None or not recfmt.is_commit_point(
                os.pread(self.fd, recfmt.HEADER, tail.start), tail.position, tail.chain, tail.end - tail.start)):
            self.forget()
            return False
        return True

    def forget(self) -> None:
        """Drop the remembered tail and the records before it: the slow path finds them again."""
        self.tail = None
        self.pending.clear()

    def _start_point(self, state: SyncedState | None, verify_all: bool) -> Tail:
        if self.tail is not None and self.tail.segment == self.first and not verify_all and self.holds(self.tail):
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

    def _scan(self, start: Tail, size: int, verify: bool) -> tuple[Tail, list[recfmt.Record], int]:
        """Read records from ``start`` on; return the last committed point, its records and
        where the scan stopped (the first byte that is not a record following the last one).

        Records other live writers appended in this boot are checked by position, header CRC
        and length (enough to find the commit point); ``verify`` also checks every body hash and
        the chain, as after a reboot, when bytes past the synced point may be old or zeros.
        """
        assert self.fd is not None
        committed, chain, pos, stop = start, start.chain, start.position, start.end
        records: list[recfmt.Record] = []
        good: list[recfmt.Record] = []
        try:
            for rec in segfmt.scan(self.fd, start.end, size):
                if rec.position != pos + 1:
                    break
                if verify and (not recfmt.body_hash_ok(rec) or recfmt.chain_of(chain, rec.event_hash) != rec.chain):
                    break
                records.append(rec)
                pos, chain, stop = rec.position, rec.chain, rec.end
                if rec.commit:
                    committed = Tail(pos, chain, self.first, rec.end, rec.time, rec.offset)
                    good.extend(records)
                    records = []
        except recfmt.RecordError:
            pass
        return committed, good, stop

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
                    rec = recfmt.parse_at(line.lstrip(b"\0") + b"\n")
                except recfmt.RecordError:
                    continue
                if rec.commit and rec.position > committed.position:
                    raise StoreCorrupted(
                        f"the log of {self.layout.root} is damaged after position {committed.position} (a committed "
                        f"record at position {rec.position} follows bytes that do not verify); appends are refused "
                        f"until it is repaired: run kroniko-ops fsck {self.layout.root}, then restore from a backup")
            if len(carry) > MAX_BATCH_BYTES:
                break

    def _cut(self, committed: Tail, end: int) -> None:
        """Set aside the bytes after the last commit mark (a dead writer's), then clear them."""
        assert self.fd is not None
        name = segfmt.seg_name(self.first)
        layout.set_aside(
            self.layout.root, "log-tail",
            f"Bytes {committed.end}..{end} of log/{name}, cut by recovery: a torn or uncommitted tail after "
            f"position {committed.position}, left by a writer that died (or a power cut) before its batch's "
            "commit mark was whole. No append was acknowledged for them.",
            copies={f"{name}.tail": (self.fd, committed.end, end)}, durable=self.syncer.durable)
        self.clear(self.fd, committed.end, end, name)
        self.syncer.file(self.fd, name)

    def _extend_pending(self, index_cp: tuple[int, bytes], tail: Tail, new: list[recfmt.Record]) -> None:
        """Keep :attr:`pending` equal to the records in (index checkpoint, tail]."""
        cp = index_cp[0]
        pending = self.pending
        if pending and pending.first != cp + 1:
            pending.clear()
        have = pending.last if pending else cp
        if new and new[0].position == have + 1:
            pending.extend(entries_of(new))
        elif have < tail.position:
            pending.clear()
            self.show(tail)
            pending.extend(self._entries(cp + 1, tail.position))

    def _entries(self, lo: int, hi: int) -> list[Entry]:
        out: list[Entry] = []
        if lo > hi:
            return out
        try:
            for _first, raw in self.view.runs(lo, hi):
                out.extend(entries_of(list(recfmt.iter_records(raw))))
        except (recfmt.RecordError, ValueError) as exc:
            raise StoreCorrupted(
                f"a committed record of {self.layout.root} between positions {lo} and {hi} is damaged ({exc}); "
                f"run: kroniko-ops fsck {self.layout.root}") from None
        return out

    # -- sealing and rolling --------------------------------------------------------------------

    def seal_and_roll(self) -> None:
        """Seal the active segment (trimmed to its records, offset index and trailer, fsynced)
        and give the preallocated next segment its name; the tail must be the segment's
        committed end. The next segment is made first: a full disk stops the roll before
        anything changed."""
        assert self.fd is not None and self.tail is not None
        tail = self.tail
        spare = self.spare()
        name = segfmt.seg_name(self.first)
        data = os.pread(self.fd, tail.end, 0)
        try:
            seal = segfmt.seal_fast(data, self.first, tail.chain)
        except segfmt.SegmentError as exc:
            raise StoreCorrupted(f"log/{name} of {self.layout.root} cannot be sealed ({exc}); nothing new was "
                                 f"written: run kroniko-ops fsck {self.layout.root}") from None
        if os.fstat(self.fd).st_size > tail.end:
            fileio.truncate(self.fd, tail.end, name)  # backups, packs and replicas never carry the zeros
        self.syncer.file(self.fd, name)
        self.publish_idx(self.first, seal)
        self.create_next(tail.position + 1, spare)
        self.open_active()
        self.tail = Tail(tail.position, tail.chain, self.first, 0, tail.time)

    def commit_time(self, tail: Tail, at: int | None = None) -> int:
        """The commit time for a batch after ``tail``: now (or ``at``, a copied batch's own), in
        microseconds since the epoch, never earlier than the last record's (commit times never
        decrease along the log, so a point in time is found by bisection even if the clock
        stepped back)."""
        last = tail.time
        if last == 0 and tail.position > 0:
            try:
                self.show(tail)
                last = self.view.record(tail.position).time
            except (recfmt.RecordError, ValueError, OSError, KeyError):
                last = 0  # only the monotonic guard is lost; the log is checked elsewhere
        return max(time.time_ns() // 1000 if at is None else at, last)

    def needs_roll(self, nbytes: int) -> bool:
        """Whether a batch of ``nbytes`` must go to a new segment (a batch never spans two)."""
        assert self.tail is not None
        return self.tail.end > 0 and self.tail.end + nbytes > self.segment_bytes

    def drop_cache(self) -> None:
        """Ask the kernel to forget the active segment's cached pages, so that the next read
        comes from the disk (after a failed fsync the cache may hold bytes the disk lacks)."""
        if self.fd is None:
            self.open_active()
        assert self.fd is not None
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
