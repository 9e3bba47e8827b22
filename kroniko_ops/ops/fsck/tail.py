"""The synced position (``locks/synced``) and the active segment's tail, read without the
append lock: a writer may be appending right now, so nothing here is modified, and bytes past
the last commit mark are only reported once they stay unchanged for a moment.

Records up to the synced end are the checked log; after it come committed records a writer has
not fsynced yet (fine), then possibly a dead writer's leftovers: whole records without a commit
mark (``log-uncommitted-tail``) or bytes that are no whole record (``log-torn-tail``), both cut
by recovery. A whole committed record after bytes that do not verify is damage to committed data
(``log-bad-line``), which recovery refuses to cut, as the engine does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ... import fileio
from ...activeseg import ActiveSegment
from ...errors import StoreCorrupted
from ...format import record as recfmt
from ...format import segment as segfmt
from ...synced import FILE_BYTES as SYNCED_BYTES
from ...synced import SyncedState, decode
from ...writer import MAX_TAIL_SLACK
from .context import RECOVER, Context
from .coverage import ACTIVE, RELISTS, SCANNED, Part, Plan, build_plan

_CHUNK = 8 << 20  # bytes of a tail read at once while looking for a committed record past it
_MAX_RECORD = (64 << 20) + (64 << 10)  # the largest event FORMAT allows, with room for its header
SETTLE_CHECKS, SETTLE_SECONDS = 4, 0.05  # how long a tail must stay unchanged to be a dead writer's


@dataclass
class TailState:
    """What the tail check learnt: the synced value and the committed head of the log."""

    synced: SyncedState | None
    head: int
    head_chain: bytes
    unsynced: int = 0  # committed records past the synced position
    segment: int = 0  # the active segment's first position (0: none)
    end: int = 0  # where its last committed record ends
    size: int = 0  # the active segment's size when it was read

    @property
    def lost(self) -> range:
        """Positions the synced hint says were acknowledged that the log no longer holds."""
        top = self.synced.position if self.synced is not None else 0
        return range(self.head + 1, top + 1)


def plan_and_tail(ctx: Context) -> tuple[Plan, TailState]:
    """Read the synced position, list and open the log's files (:func:`build_plan`), check the
    tail (:func:`check_tail`), in that order. The active segment of a listing can be sealed,
    packed and removed by a compaction before its tail is read: then all of it is taken again,
    as readers do, and only the findings of the try that read the tail count."""
    for attempt in range(RELISTS):
        trial = ctx.trial()
        synced = read_synced(trial)
        plan = build_plan(trial)
        try:
            tail = check_tail(trial, plan, synced)
        except FileNotFoundError:
            plan.close()
            if attempt == RELISTS - 1:
                raise
            continue
        ctx.absorb(trial)
        return plan, tail
    raise AssertionError("unreachable")  # pragma: no cover


def read_synced(ctx: Context) -> SyncedState | None:
    """``locks/synced``, reporting a damaged or poisoned one."""
    path = ctx.layout.synced_file
    try:
        raw = fileio.read_small(path, 4096)
    except FileNotFoundError:
        return None
    except OSError as exc:
        ctx.add("synced-damaged", "warning", "locks/synced", f"unreadable ({exc})", action=RECOVER)
        return None
    state = decode(raw)
    if state is None and raw:
        ctx.add("synced-damaged", "warning", "locks/synced", "the synced position does not parse (fails its "
                "CRC); the next writer re-verifies the unsynced part of the log and rewrites it", action=RECOVER)
    if state is not None and len(raw) > SYNCED_BYTES:
        ctx.add("synced-damaged", "warning", "locks/synced", f"{len(raw) - SYNCED_BYTES} bytes after its two lines "
                "(written in place, it never grows): remove locks/synced by hand; the next writer re-verifies the "
                "log's unsynced part and writes it again")
    if state is not None and state.poisoned:
        ctx.add("store-poisoned", "error", "locks/synced", "an fsync failed in a writer: appends are refused "
                "until the unsynced part of the log is re-read from disk", state.position, action=RECOVER)
    return state


def check_spare(ctx: Context) -> None:
    """``log/next.prealloc``, the next segment made ahead of time, must hold only zeros."""
    path = os.path.join(ctx.layout.log_dir, segfmt.SPARE_NAME)
    try:
        if os.path.islink(path) or not os.path.isfile(path):
            return
        fd = fileio.open_read(path)
        try:
            if segfmt.data_end(fd) == 0:
                return
            # A roll may have renamed it into the new active segment after we opened it, and a
            # writer filled it with records: only the file still named the spare is judged.
            if os.fstat(fd).st_ino != os.lstat(path).st_ino:
                return
        finally:
            os.close(fd)
    except OSError:
        return  # gone meanwhile (a roll renamed it), or reported by the layout walk
    ctx.add("segment-spare-dirty", "warning", f"log/{segfmt.SPARE_NAME}", "the preallocated next segment holds "
            "bytes that are not zero (it never held a record); recover removes it and the next roll makes a new one",
            action=RECOVER)


def check_tail(ctx: Context, plan: Plan, synced: SyncedState | None) -> TailState:
    """Check the synced position (read with :func:`read_synced` before the log's files were
    listed, so that it names no file the listing missed) against the log and classify the active
    segment's tail; add the active segment (up to its committed end) to ``plan.parts``."""
    check_spare(ctx)
    if plan.active_path is None:
        state = TailState(synced, plan.sealed_head, plan.sealed_chain)
        if synced is not None and synced.position > plan.sealed_head:
            _ahead(ctx, synced, plan.sealed_head)
        return state
    rel = ctx.rel(plan.active_path)
    first = plan.active_first
    start = (0, first - 1, plan.sealed_chain)
    ahead = False
    if synced is not None:
        if synced.segment == first and synced.position >= first - 1:
            found, ahead = _synced_start(ctx, plan, synced)
            start = found or start
        elif synced.position > plan.sealed_head or synced.segment > first:
            ahead = True
    fd = fileio.open_read(plan.active_path)
    try:
        size = _extent(fd, start[0])
        end, pos, chain, stop = _scan(fd, start, size)
        for _ in range(SETTLE_CHECKS if end < size else 0):
            time.sleep(SETTLE_SECONDS)
            if _extent(fd, start[0]) != size:
                break
        now = _extent(fd, start[0])
        acked = synced.position if synced is not None else 0
        if ahead or acked > pos:
            # Reported with the log's real end, once the scan has found it.
            _ahead(ctx, synced, pos)  # type: ignore[arg-type]
        if end < size and (now != size or _synced_past(ctx, synced, pos)):
            # The file grew meanwhile, or a writer has since synced past what this scan saw:
            # the bytes were an append in flight, read half written.
            ctx.add("log-uncommitted-tail", "info", rel, f"bytes after position {pos}: an append is in progress",
                    pos + 1)
        elif end < size:
            _classify(ctx, rel, fd, end, size, pos, stop, acked)
    finally:
        os.close(fd)
    active = ActiveSegment(ctx.layout.log_dir, first)
    part = Part(ACTIVE, first, pos, plan.active_path, chain, active, size=end)
    try:
        active.extend(end)
    except StoreCorrupted:
        pass
    if active.last != pos:  # damaged before the synced end: read it record by record instead
        active.close()
        part = Part(SCANNED, first, pos, plan.active_path, chain, None, fileio.open_read(plan.active_path), end)
    if pos >= first:
        plan.parts.append(part)
    else:
        part.close()
    unsynced = pos - synced.position if synced is not None and synced.position < pos else 0
    return TailState(synced, pos, chain, unsynced, first, end, size)


def _synced_past(ctx: Context, before: SyncedState | None, pos: int) -> bool:
    """Whether ``locks/synced`` has moved since ``before`` was read and now names a position
    past ``pos``: a writer synced what this scan saw half written (read quietly: it was judged)."""
    try:
        state = decode(fileio.read_small(ctx.layout.synced_file, 4096))
    except OSError:
        return False
    return state is not None and state != before and state.position > pos


def _extent(fd: int, start: int) -> int:
    """Where the active segment's bytes end: it is preallocated, so where its zeros begin, not at
    its size; a file grown past any tail a writer leaves is taken whole (reported as oversized,
    never read through)."""
    size = os.fstat(fd).st_size
    return size if size - start > MAX_TAIL_SLACK else segfmt.data_end(fd, size, start)


def _ahead(ctx: Context, synced: SyncedState, head: int) -> None:
    lost = f"position {head + 1}" if synced.position == head + 1 else f"positions {head + 1}..{synced.position}"
    ctx.add("synced-ahead", "error", "locks/synced", f"the synced position {synced.position} is past the end of "
            f"the log ({head}): {lost} were acknowledged to writers but the disk lost them (a disk that ignored "
            "fsync, or a file cut short). Restore from a backup to get them back, or accept their loss and keep "
            f"positions 1..{head}: kroniko-ops fsck {ctx.root} --repair --accept-loss", synced.position)


def _synced_start(ctx: Context, plan: Plan, synced: SyncedState) -> tuple[tuple[int, int, bytes] | None, bool]:
    """Where the tail scan starts when the synced position is in the active segment: its end,
    after checking that the record there is the one ``locks/synced`` names; and whether the
    segment is shorter than that end (the caller reports it once it knows where the log ends)."""
    if synced.end == 0:
        return ((0, synced.position, synced.chain) if synced.position == plan.active_first - 1 else None), False
    seg = ActiveSegment(ctx.layout.log_dir, plan.active_first)
    try:
        seg.extend(synced.end)
        rec = recfmt.parse_at(seg.read_run(synced.position, synced.position)) if seg.last >= synced.position else None
    except StoreCorrupted:
        return None, True
    except (recfmt.RecordError, IndexError):
        rec = None
    finally:
        seg.close()
    if rec is None or rec.position != synced.position or rec.chain != synced.chain:
        ctx.add("synced-mismatch", "error", "locks/synced", f"the synced position {synced.position} (byte "
                f"{synced.end} of log/{segfmt.seg_name(plan.active_first)}) is not where that record ends, or "
                "its chain differs: the log was changed under it", synced.position)
        return None, False
    return (synced.end, synced.position, synced.chain), False


def _scan(fd: int, start: tuple[int, int, bytes], size: int) -> tuple[int, int, bytes, str]:
    """Verify records from ``start`` on, as the writer does; return the committed end, its
    position and chain, and why the scan stopped before ``size`` (empty when it did not)."""
    end, pos, chain = start
    seen_pos, seen_chain = pos, chain
    try:
        for rec in segfmt.scan(fd, end, size):
            if rec.position != seen_pos + 1:
                return end, pos, chain, f"record at byte {rec.offset} holds position {rec.position}"
            if not recfmt.body_hash_ok(rec) or recfmt.chain_of(seen_chain, rec.event_hash) != rec.chain:
                return end, pos, chain, f"record {rec.position} fails its event or chain hash"
            seen_pos, seen_chain = rec.position, rec.chain
            if rec.commit:
                end, pos, chain = rec.end, rec.position, rec.chain
    except recfmt.RecordError as exc:
        return end, pos, chain, ("torn: " if exc.torn else "") + str(exc)
    return end, pos, chain, ""


def _committed_after(fd: int, end: int, size: int) -> Iterator[recfmt.Record]:
    """The records that parse among the lines of bytes ``end..size``, read a chunk at a time (a
    line longer than any event is no record and is skipped, so memory stays bounded)."""
    carry, offset = b"", end
    while offset < size:
        chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
        if not chunk:
            return
        offset += len(chunk)
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        if len(carry) > _MAX_RECORD:
            carry = b"\xff"  # never a record: the next newline ends it
        for line in lines:
            try:
                yield recfmt.parse_at(line + b"\n")
            except recfmt.RecordError:
                continue


def _classify(ctx: Context, rel: str, fd: int, end: int, size: int, pos: int, stop: str, acked: int = 0) -> None:
    if size - end > MAX_TAIL_SLACK:
        # More than any batch could leave (a file extended by gigabytes, or garbage): damage to
        # report, never a tail to read into memory or for recovery to copy into lost-found/.
        ctx.add("log-tail-oversized", "error", rel, f"bytes {end}..{size} after position {pos}: {size - end} bytes "
                f"past the last commit mark, more than any batch leaves ({MAX_TAIL_SLACK}); not cut by recovery: "
                f"restore the store from a backup, or cut the file at byte {end} by hand after keeping a copy",
                pos + 1)
        return
    for rec in _committed_after(fd, end, size):
        if rec.commit and rec.position > pos:
            ctx.add("log-bad-line", "error", rel, f"bytes {end}..{size} after position {pos} do not verify, yet a "
                    f"committed record ({rec.position}) follows them: damage to committed data, never cut; "
                    "restore the store from a backup", pos + 1)
            return
    if acked > pos:
        # Under the synced position: these bytes are what is left of acknowledged records.
        what = "whole records without a commit mark" if not stop else f"no whole record ({stop})"
        ctx.add("log-torn-tail", "error", rel, f"bytes {end}..{size} after position {pos} are {what}, yet the synced "
                f"position {acked} says they were acknowledged: the disk lost part of them. Recovery does not cut "
                "acknowledged records; fsck --repair --accept-loss sets them aside into lost-found/", pos + 1)
    elif not stop:
        ctx.add("log-uncommitted-tail", "error", rel, f"bytes {end}..{size}: whole records after position {pos} "
                "without a commit mark (a writer died mid-batch; no append was acknowledged for them)",
                pos + 1, action=RECOVER)
    else:
        ctx.add("log-torn-tail", "error", rel, f"bytes {end}..{size} after position {pos} are no whole record "
                f"({stop}): a writer died mid-write; no append was acknowledged for them", pos + 1, action=RECOVER)
