"""``fsck --repair --accept-loss``: a store whose disk lost acknowledged records at the end of
the log (``synced-ahead``: the synced position names records the log no longer holds, or a
damaged record under it) is stuck: recovery never cuts acknowledged records, so ``--repair``,
``recover`` and every append refuse it. Salvage, only when the operator accepts the loss (like
``e2fsck -y`` or ``borg check --repair``): keep the longest prefix of the log that verifies,
copy the bytes after it into ``lost-found/``, zero them in the active segment (preallocated, it
keeps its size), reset the synced position to the kept head; the caller then runs recovery and
rebuilds the index, and reports each lost position. Damage anywhere but the end of the log is
never salvaged: it needs a backup.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ... import fileio, layout
from ...errors import StoreCorrupted
from ...format import segment as segfmt
from ...report import Report
from ...segments import take_back
from ...store import EventStore
from ...synced import SyncedState
from .context import MAX_FINDINGS_PER_CODE, Context
from .tail import TailState, plan_and_tail

# What salvage answers: a lost or damaged end of the log (and the index that saw it).
SALVAGED = {"synced-ahead", "synced-mismatch", "log-torn-tail", "log-bad-line", "log-uncommitted-tail",
            "index-checkpoint-ahead", "index-checkpoint-mismatch", "index-extra-entry", "index-missing-entry"}


@dataclass
class Loss:
    """What a check found lost at the end of the log: the head kept and the positions at stake."""

    head: int
    upto: int  # the last position the synced hint (or a committed record after the damage) names

    def positions(self) -> str:
        """``"9"`` or ``"9..10"``."""
        return str(self.head + 1) if self.upto == self.head + 1 else f"{self.head + 1}..{self.upto}"


def loss_at_end(ctx: Context) -> Loss | None:
    """The loss ``ctx`` (a finished check) found at the end of the log, if any."""
    tail = ctx.tail
    if not isinstance(tail, TailState):
        return None
    codes = {f.code for f in ctx.report.findings if f.severity == "error"}
    upto = tail.synced.position if tail.synced is not None else 0
    if upto > tail.head:
        return Loss(tail.head, upto)
    if codes & {"log-bad-line", "synced-mismatch"}:
        bad = [f.position for f in ctx.report.findings if f.code in ("log-bad-line", "synced-mismatch") and f.position]
        return Loss(tail.head, max([tail.head + 1, *bad]))
    return None


def other_damage(ctx: Context, log_damage: set[str]) -> set[str]:
    """Codes of damage salvage does not answer (mid-log damage, gaps, packs...)."""
    return {f.code for f in ctx.report.findings if f.severity != "info" and not f.repaired
            and f.code in log_damage and f.code not in SALVAGED}


def salvage(store: EventStore, loss: Loss, report: Report) -> str:
    """Under the append lock: cut the log after its longest verified prefix (what follows is
    copied into ``lost-found/`` first) and reset the synced position there; return the
    ``lost-found/`` folder ('' when nothing was left to copy). Raises StoreCorrupted when the
    log's end is not where the check found it."""
    root = store.path
    ctx = Context(root, Report("fsck", root), full=False)
    plan, tail = plan_and_tail(ctx)
    plan.close()
    if tail.segment == 0 or tail.head != loss.head:
        raise StoreCorrupted(f"the end of the log of {root} is not where the check found it (position {tail.head}, "
                             f"not {loss.head}); nothing was cut: run kroniko-ops fsck {root} again")
    name = segfmt.seg_name(tail.segment)
    path = os.path.join(store.layout.log_dir, name)
    fd = fileio.open_write(path, os.O_RDWR | os.O_NOFOLLOW)
    folder = ""
    try:
        # The segment is preallocated: what follows its records is zeros up to its size, so only
        # the bytes up to the last one that is not zero are copied, then zeroed (the file keeps
        # its size, and appends go on overwriting written space).
        size = segfmt.data_end(fd, None, tail.end)
        if size > tail.end:
            folder = layout.set_aside(
                root, "accepted-loss",
                f"Bytes {tail.end}..{size} of log/{name}, cut by fsck --repair --accept-loss: what the disk left of "
                f"positions {loss.positions()}, which had been acknowledged to writers (the synced position said so) "
                f"but no longer verify. The store keeps positions 1..{tail.head}.",
                copies={f"{name}.tail": (fd, tail.end, size)}, durable=store.durable)
            take_back(fd, tail.end, size, store.segment_bytes, name)
        store.syncer.file(fd, name)
    finally:
        os.close(fd)
    store.synced.reset(SyncedState(tail.head, tail.segment, tail.end, tail.head_chain))
    where = f"; what remained is in {os.path.relpath(folder, root)}" if folder else ""
    for pos in range(loss.head + 1, min(loss.upto, loss.head + MAX_FINDINGS_PER_CODE) + 1):
        report.add("acknowledged-lost", "error", f"log/{name}", f"position {pos} had been acknowledged but did not "
                   f"survive on disk; its loss was accepted (--accept-loss){where}", pos, repaired=True)
    if loss.upto > loss.head + MAX_FINDINGS_PER_CODE:
        report.add("acknowledged-lost", "error", f"log/{name}", f"and positions {loss.head + MAX_FINDINGS_PER_CODE + 1}"
                   f"..{loss.upto} likewise", loss.head + MAX_FINDINGS_PER_CODE + 1, repaired=True)
    return folder
