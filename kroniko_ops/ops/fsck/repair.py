"""``fsck --repair``: what is safe to repair without a person, and nothing else.

Under the maintenance lock: check, repair, check again. A finding is marked repaired only when
the second check no longer sees it, so the report says what is true, not what was attempted.
Nothing is deleted: what is moved goes to ``lost-found/``. Damage to committed records (mid-log
lines, hashes, chain, gaps, packs) is left for a person (restore from a backup), and while it is
there the index is not rebuilt from that log either.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence

from ... import fileio, layout
from ...errors import StoreCorrupted
from ...format import segment as segfmt
from ...layout import Layout, check_no_symlinks
from ...locking import held
from ...report import Finding, Report
from ..recovery.common import open_store
from ..recovery.recover import recover_locked
from ..recovery.reindex import reindex_store
from .check import check_store
from .context import ACTIONS, MAKE_DIR, RECOVER, REINDEX, RESEAL, SET_ASIDE, Context
from .salvage import SALVAGED, Loss, loss_at_end, other_damage, salvage

LOG_DAMAGE = {"log-bad-line", "log-position-mismatch", "chain-mismatch", "log-duplicate-id", "event-hash-mismatch",
              "event-unreadable", "segment-gap", "segment-overlap", "pack-corrupt", "synced-ahead",
              "synced-mismatch", "format-missing", "format-unknown", "layout-missing", "layout-symlink",
              "layout-special-file", "layout-wrong-kind"}
UNOPENABLE = {"format-missing", "format-unknown", "layout-wrong-kind", "layout-missing"}
HARMLESS = {"layout-symlink", "layout-special-file"}  # reported, but the log itself reads fine


def planned(ctx: Context) -> list[tuple[Finding, str]]:
    """The repairs ``--repair`` would make: each finding's action, unless damage elsewhere makes
    it unsafe (an index rebuilt from a damaged log would be wrong again; a store without a
    readable FORMAT cannot be opened by the engine)."""
    with_action = {id(f) for f, _a in ctx.actions}
    damage = {f.code for f in ctx.report.findings if f.severity != "info" and not f.repaired
              and (f.code in LOG_DAMAGE or (f.code == "segment-corrupt" and id(f) not in with_action))
              and not (f.code == "layout-missing" and f.severity != "error")}  # only a missing log/ is damage
    unopenable = bool(damage & UNOPENABLE)
    out = []
    for finding, action in ctx.actions:
        if unopenable and action not in (SET_ASIDE, MAKE_DIR):
            continue
        if action == REINDEX and damage - HARMLESS:
            continue
        out.append((finding, action))
    return out


def annotate_plan(ctx: Context) -> None:
    """``--dry-run``: append to each finding what ``--repair`` would do; write nothing."""
    for finding, action in planned(ctx):
        finding.message += f" [--repair would {ACTIONS[action]}]"


def judge_loss(ctx: Context, accept_loss: bool, doing: str = "--repair") -> Loss | None:
    """The loss at the end of the log that ``--accept-loss`` may salvage (None when there is
    none, or it is not allowed); says why not, naming the flag and the positions at stake."""
    loss = loss_at_end(ctx)
    if loss is None:
        return None
    root = ctx.root
    if not accept_loss:
        ctx.report.add("accept-loss-needed", "info", "log", f"{doing} does not cut acknowledged records: positions "
                       f"{loss.positions()} are at stake (acknowledged, but the log verifies only up to {loss.head}). "
                       f"Restore them from a backup, or accept their loss and keep 1..{loss.head}: "
                       f"kroniko-ops fsck {root} --repair --accept-loss")
        return None
    others = other_damage(ctx, LOG_DAMAGE)
    if others:
        ctx.report.add("accept-loss-refused", "info", "log", f"--accept-loss salvages only a log whose end was lost; "
                       f"this store is also damaged elsewhere ({', '.join(sorted(others))}): restore it from a backup")
        return None
    return loss


def repair_store(root: str, *, full: bool, max_errors: int | None, ref_fields: Sequence[str], refs_only: bool,
                 lock_timeout: float, progress: bool, accept_loss: bool = False) -> Report:
    """Check, repair what is safe, check again; return the merged report. ``accept_loss``
    also salvages a log whose end the disk lost (:mod:`.salvage`)."""
    def check() -> Context:
        return check_store(root, full=full, max_errors=max_errors, ref_fields=ref_fields, refs_only=refs_only,
                           progress=progress)

    try:
        check_no_symlinks(root)
    except StoreCorrupted:
        # A linked folder would take writes outside the store, the maintenance lock's file
        # first: only check (the report names each link as layout-symlink) and repair nothing.
        return check().report
    with held(Layout(root).maintenance_lock, lock_timeout, "maintenance"):
        first = check()
        loss = judge_loss(first, accept_loss)
        todo = planned(first)
        if not todo and loss is None:
            return first.report
        actions = {a for _f, a in todo}
        scratch = Report("repair", root)
        if loss is not None:
            with open_store(root, lock_timeout, scratch) as store:
                with store.locked():
                    salvage(store, loss, scratch)
                    recover_locked(store, scratch)
                reindex_store(store, scratch)
            second = check()
            merged = _merge(first.report, second.report, {f.code for f, _a in todo} | SALVAGED)
            merged.findings.extend(f for f in scratch.findings if f.code == "acknowledged-lost")
            return merged
        for f, a in todo:
            if a == MAKE_DIR:
                fileio.makedirs(os.path.join(root, f.path))
        _move_strays(root, [f.path for f, a in todo if a == SET_ASIDE])
        if actions & {RECOVER, REINDEX, RESEAL}:
            try:
                store = open_store(root, lock_timeout, scratch)
            except StoreCorrupted:
                store = None  # the engine refuses this store: the second check says why
            if store is not None:
                with store:
                    with store.locked():
                        for f, a in todo:
                            if a == RESEAL:
                                _reseal(store.path, f.position or 0, store.syncer)
                        recover_locked(store, scratch)
                    if REINDEX in actions:
                        reindex_store(store, scratch)
        second = check()
    return _merge(first.report, second.report, {f.code for f, _a in todo})


def _reseal(root: str, first: int, syncer: fileio.Syncer) -> None:
    """Write the offset index of the last sealed segment from its records (the writer's own
    sealing steps: temp file, fsync, rename, folder fsync); a torn one goes to lost-found/."""
    log_dir = Layout(root).log_dir
    idx = os.path.join(log_dir, segfmt.idx_name(first))
    fd = fileio.open_read(os.path.join(log_dir, segfmt.seg_name(first)))
    try:
        data = segfmt.build_seal(fd, first, segfmt.data_end(fd))
    finally:
        os.close(fd)
    if os.path.lexists(idx):
        layout.set_aside(root, "torn-seal", f"log/{segfmt.idx_name(first)}: an offset index that did not verify; "
                         "fsck --repair rebuilt it from the segment's records.", move=[idx], durable=syncer.durable)
    tmp = os.path.join(log_dir, f"{layout.TMP_PREFIX}{os.getpid()}-{segfmt.idx_name(first)}")
    out = fileio.open_write(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW)
    try:
        fileio.write_all(out, data, tmp)
        syncer.file(out, tmp)
    finally:
        os.close(out)
    fileio.rename(tmp, idx)
    syncer.dir(log_dir)


def _move_strays(root: str, rel_paths: list[str]) -> None:
    """Move stray files into lost-found/, one folder per place they were found (names stay unique)."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for rel in rel_paths:
        path = os.path.join(root, rel)
        if os.path.lexists(path):
            by_folder[os.path.dirname(rel) or "."].append(path)
    for folder, paths in sorted(by_folder.items()):
        layout.set_aside(root, "stray-files", f"Files found in {folder}/ that the store layout does not know, "
                         "moved here by fsck --repair. They were never part of the store.", move=sorted(paths))


def _merge(first: Report, second: Report, attempted: set[str]) -> Report:
    """The first report's findings, each marked repaired when the second check no longer sees it,
    plus whatever the second check found anew; figures and head from the second."""
    def key(f: Finding) -> tuple[str, str, int | None]:
        return f.code, f.path, f.position

    after = {key(f) for f in second.findings}
    before = {key(f) for f in first.findings}
    merged = Report("fsck", first.path, head=second.head, figures=second.figures, started=first.started)
    for f in first.findings:
        if f.code in attempted and f.severity != "info" and key(f) not in after:
            f.repaired = True
        merged.findings.append(f)
    merged.findings.extend(f for f in second.findings if key(f) not in before and f.severity != "info")
    return merged.finish()
