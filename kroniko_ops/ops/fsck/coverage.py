"""Which file holds each position: sealed segments (their offset index decoded and checked),
packs (header, table and trailer checked on open), the active segment; positions covered by no
file (``segment-gap``) or by two that disagree (``segment-overlap``), and the chain hash across
each boundary between two files. Each file is opened, read for what the plan needs (range, size,
last chain hash, first record) and closed again: the walk reopens it (:mod:`.parts`).

``log/`` is listed before ``packs/``: compaction publishes a pack before it removes the segments
it replaces, so this order can see both (an overlap that agrees, noted as superseded) but never
neither (a false gap)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ... import fileio
from ...errors import access_denied, denied
from ...format import pack as packfmt
from ...format import record as recfmt
from ...format import segment as segfmt
from .context import RECOVER, RESEAL, Context
from .parts import ACTIVE, PACK, SCANNED, SEALED, Part, Pool

__all__ = ["ACTIVE", "PACK", "SCANNED", "SEALED", "Part", "Plan", "build_plan"]
SETTLE_CHECKS, SETTLE_SECONDS = 5, 0.05  # how long a roll may take before it counts as interrupted


@dataclass
class Plan:
    """The files of the log in position order (``parts``), the ones a pack supersedes, and the
    active segment (None when the last segment is sealed). ``pool`` bounds the files open at once."""

    pool: Pool
    parts: list[Part] = field(default_factory=list)
    superseded: list[Part] = field(default_factory=list)
    active_first: int = 1
    active_path: str | None = None
    sealed_head: int = 0  # the last position held by packs and sealed segments
    sealed_chain: bytes = recfmt.GENESIS

    def close(self) -> None:
        """Release every file."""
        for p in self.parts + self.superseded:
            p.close()

    def find(self, position: int) -> Part | None:
        """The part holding ``position`` (packs and sealed segments only)."""
        for p in self.parts:
            if p.first <= position <= p.last:
                return p
        return None


def _regular(path: str, tolerant: bool) -> bool:
    """Whether ``path`` is a regular file. A name just listed that is gone was removed by a
    compaction: FileNotFoundError (the caller lists again), or False when ``tolerant``."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        if tolerant:
            return False
        raise


def _list_segments(log_dir: str, tolerant: bool) -> dict[int, set[str]]:
    """``{first: {"seg", "idx"}}`` of the regular segment files in ``log_dir``. A listing that
    catches a writer between sealing the last segment and creating the next is taken again
    (a roll takes a moment; one that never finishes is reported)."""
    for _ in range(SETTLE_CHECKS):
        segs: dict[int, set[str]] = {}
        for name in sorted(os.listdir(log_dir)):
            parsed = segfmt.parse_name(name)
            if parsed is not None and _regular(os.path.join(log_dir, name), tolerant):
                segs.setdefault(parsed[0], set()).add(parsed[1])
        tops = [f for f, kinds in segs.items() if "seg" in kinds]
        if not tops or "idx" not in segs[max(tops)]:
            break
        time.sleep(SETTLE_SECONDS)
    return segs


RELISTS = 20  # listings tried while compactions keep removing files just listed


class _Moved(Exception):
    """A file of the listing was gone when it was opened: compaction replaced it meanwhile."""


def build_plan(ctx: Context) -> Plan:
    """List and open the log's files and report coverage problems (the quick level's share).

    A file listed but gone when opened was replaced by a compaction (it publishes the pack
    holding a file's records before removing the file): the listing is taken again, as readers
    do, and only the findings of a listing whose files all opened are reported."""
    for attempt in range(RELISTS):
        trial = ctx.trial()
        try:
            plan = _build(trial, last_try=attempt == RELISTS - 1)
        except _Moved:
            continue
        ctx.absorb(trial)
        return plan
    raise AssertionError("unreachable: the last try reports what it finds")  # pragma: no cover


def _build(ctx: Context, last_try: bool) -> Plan:
    lay = ctx.layout
    try:
        segs = _list_segments(lay.log_dir, last_try)
        packs = []
        if os.path.isdir(lay.packs) and not os.path.islink(lay.packs):
            for name in sorted(os.listdir(lay.packs)):
                rng = packfmt.parse_name(name)
                if rng is not None and _regular(os.path.join(lay.packs, name), last_try):
                    packs.append((rng, name))
    except FileNotFoundError:
        raise _Moved() from None  # never on the last try: it skips names that are gone
    plan = Plan(Pool(lay.packs))
    seg_firsts = sorted(f for f, kinds in segs.items() if "seg" in kinds)
    for first, kinds in sorted(segs.items()):
        if "seg" not in kinds:
            ctx.add("segment-orphan-index", "info", f"log/{segfmt.idx_name(first)}",
                    "an offset index whose segment is gone: a compaction's leftover (the next one removes it; "
                    "positions no pack holds are reported as a gap)")
    if seg_firsts:
        top = seg_firsts[-1]
        if "idx" in segs[top]:
            ctx.add("segment-seal-unfinished", "warning", f"log/{segfmt.seg_name(top)}",
                    "the last segment is sealed but the next one was never created (a crash while rolling); "
                    "the next writer or recover finishes the roll", action=RECOVER)
        else:
            plan.active_first, plan.active_path = top, os.path.join(lay.log_dir, segfmt.seg_name(top))
            seg_firsts = seg_firsts[:-1]
    parts: list[Part] = []
    try:
        for first in seg_firsts:
            part = _open_sealed(ctx, plan.pool, first, last_sealed=first == seg_firsts[-1])
            if part is not None:
                parts.append(part)
        for (first, last), name in packs:
            part = _open_pack(ctx, plan.pool, first, last, os.path.join(lay.packs, name))
            if part is not None:
                parts.append(part)
    except FileNotFoundError:
        if not last_try:
            raise _Moved() from None
    _arrange(ctx, plan, parts)
    return plan


def _head(read: Callable[[], recfmt.Record]) -> tuple[bytes, bytes] | Exception:
    """The event hash and chain hash of the first record, read by ``read()`` (only these are
    kept: the body may be large), or the error reading it."""
    try:
        rec = read()
        return rec.event_hash, rec.chain
    except (packfmt.PackError, recfmt.RecordError, OSError, IndexError, StopIteration) as exc:
        return exc if not isinstance(exc, StopIteration) else recfmt.RecordError("the file holds no record")


def _open_sealed(ctx: Context, pool: Pool, first: int, last_sealed: bool) -> Part | None:
    log_dir = ctx.layout.log_dir
    rel = f"log/{segfmt.seg_name(first)}"
    try:
        seg = segfmt.SealedSegment(log_dir, first)
    except FileNotFoundError:
        why = "its offset index is missing"
    except (segfmt.SegmentError, OSError) as exc:
        why = f"its offset index does not verify ({exc})"
    else:
        try:
            size = os.fstat(seg.fd).st_size
            head = _head(lambda: seg.record(first))
        finally:
            seg.close()
        if size != seg.seal.size:
            ctx.add("segment-corrupt", "error", rel, f"the segment is {size} bytes, its offset index says "
                    f"{seg.seal.size}: a sealed segment never changes; restore it from a backup")
        return Part(SEALED, first, seg.last, seg.path, seg.seal.last_chain, size=size, pool=pool, head=head)
    # Without a usable offset index, learn the segment's range by scanning its records.
    path = os.path.join(log_dir, segfmt.seg_name(first))
    fd = fileio.open_read(path)  # FileNotFoundError: removed meanwhile (compaction): list again
    try:
        size = segfmt.data_end(fd)  # a seal a power cut interrupted may not have trimmed the zeros yet
        seal = segfmt.decode_idx(segfmt.build_seal(fd, first, size), first)
        head = _head(lambda: next(segfmt.scan(fd, 0, size)))
    except (segfmt.SegmentError, recfmt.RecordError) as exc:
        ctx.add("segment-corrupt", "error", rel, f"{why}, and its records do not form a whole segment "
                f"({exc}); restore it from a backup")
        return None
    finally:
        os.close(fd)
    action = RESEAL if last_sealed else None
    ctx.add("segment-corrupt", "error", f"log/{segfmt.idx_name(first)}",
            f"{why}; the segment's records are whole (positions {first}..{seal.last})"
            + (" (a power cut while sealing)" if last_sealed else ""), first, action=action)
    return Part(SCANNED, first, seal.last, path, seal.last_chain, size=size, pool=pool, head=head)


def _open_pack(ctx: Context, pool: Pool, first: int, last: int, path: str) -> Part | None:
    rel = ctx.rel(path)
    try:
        reader = packfmt.PackReader(path)
    except FileNotFoundError:
        raise  # removed meanwhile (a compaction merged it into a bigger pack): list again
    except (packfmt.PackError, OSError) as exc:
        if isinstance(exc, OSError) and denied(exc):  # the check cannot run: exit 8, no verdict
            raise access_denied(path, exc) from None
        ctx.add("pack-corrupt", "error", rel, f"the pack does not open ({exc}); restore it from a backup", first)
        return None
    try:
        if (reader.first, reader.last) != (first, last):
            ctx.add("pack-corrupt", "error", rel, f"the pack holds {reader.first}..{reader.last}, its name says "
                    f"{first}..{last}", first)
            return None
        head = _head(lambda: reader.record(first))
    finally:
        reader.close()
    return Part(PACK, first, last, path, reader.last_chain, size=reader.size, pool=pool, head=head)


def _arrange(ctx: Context, plan: Plan, parts: list[Part]) -> None:
    """Choose the files readers use (packs first, as :class:`~kroniko_ops.logview.LogView`
    does), report gaps and overlaps, and check the chain across each boundary."""
    parts.sort(key=lambda p: (p.first, p.kind != PACK, -p.last))
    covered, chain = 0, recfmt.GENESIS
    for part in parts:
        if part.first > covered + 1:
            ctx.add("segment-gap", "error", ctx.rel(part.path), f"positions {covered + 1}..{part.first - 1} are "
                    "in no segment or pack: those events are lost; restore them from a backup", covered + 1)
        if part.last <= covered:
            _superseded(ctx, plan, part)
            continue
        if part.first <= covered:
            ctx.add("segment-overlap", "error", ctx.rel(part.path), f"holds {part.first}..{part.last}, but "
                    f"positions up to {covered} are already held by another file", part.first)
            plan.superseded.append(part)
            continue
        if part.first == covered + 1:
            _check_link(ctx, part, chain)
        plan.parts.append(part)
        covered, chain = part.last, part.last_chain
    plan.sealed_head, plan.sealed_chain = covered, chain
    if plan.active_path is not None:
        rel = ctx.rel(plan.active_path)
        if plan.active_first > covered + 1:
            ctx.add("segment-gap", "error", rel, f"positions {covered + 1}..{plan.active_first - 1} are in no "
                    "segment or pack: those events are lost; restore them from a backup", covered + 1)
        elif plan.active_first <= covered:
            ctx.add("segment-overlap", "error", rel, f"the active segment starts at {plan.active_first}, but "
                    f"positions up to {covered} are already held by sealed segments or packs", plan.active_first)


def _superseded(ctx: Context, plan: Plan, part: Part) -> None:
    """A file whose positions another (a pack) holds: a compaction in progress or its leftover.
    Fine when both hold the same history (equal chain hashes at its last position)."""
    plan.superseded.append(part)
    holder = plan.find(part.last)
    try:
        same = holder is not None and holder.record_at(part.last).chain == part.last_chain
    except (packfmt.PackError, recfmt.RecordError, OSError, IndexError):
        same = False
    if same:
        ctx.add("segment-superseded", "info", ctx.rel(part.path), f"positions {part.first}..{part.last} are "
                "also in a pack (compaction removes this file)")
    else:
        ctx.add("segment-overlap", "error", ctx.rel(part.path), f"positions {part.first}..{part.last} are also "
                "in another file that holds a different history", part.first)


def _check_link(ctx: Context, part: Part, chain: bytes) -> None:
    """The first record of ``part`` must chain onto the previous file's last chain hash."""
    head = part.head
    if not isinstance(head, tuple):
        code = "pack-corrupt" if part.kind == PACK else "segment-corrupt"
        ctx.add(code, "error", ctx.rel(part.path), f"its first record does not read ({head})", part.first)
        return
    if recfmt.chain_of(chain, head[0]) != head[1]:
        ctx.add("chain-mismatch", "error", ctx.rel(part.path), "the first record of this file does not chain "
                "onto the previous file's last record: files of different histories", part.first)
