"""The read-only check of a format-3 store, in the order that keeps it consistent while writers
append: the layout, the log's files (listed ``log/`` before ``packs/``), the index checkpoint
(read before the tail, so the log already holds what it covers), the tail, then, at the full
level, every record. Never takes the append lock and never writes inside the store."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence

from ... import fileio
from ...layout import parse_format
from ...progress import Meter
from ...report import Report
from . import parallel
from .context import Context, StopChecking
from .coverage import Plan
from .index_check import IndexCheck
from .refs import RefCheck, parse_fields
from .spill import Spill
from .tail import plan_and_tail
from .tree import FORMAT_MISSING, FORMAT_OK, check_format, check_tree


def check_store(root: str, *, full: bool = True, max_errors: int | None = None, ref_fields: Sequence[str] = (),
                refs_only: bool = False, progress: bool = False, jobs: int | None = None) -> Context:
    """Check the store at ``root``; return the context (its report and the repairs it allows).

    ``refs_only``: only the references are reported (``dangling-reference``), the store's
    structure is used but not judged (fast, for CI). ``jobs``: worker processes for the full
    walk (default: one per CPU, see :mod:`.parallel`).
    """
    parse_fields(ref_fields)  # bad usage is refused before anything is read
    report = Report("fsck", root)
    level = "refs" if refs_only else "full" if full else "quick"
    report.figures.update(level=level, events_checked=0)
    ctx = Context(root, report, full and not refs_only, max_errors)
    # In refs-only mode everything but the references goes to a report nobody reads.
    sctx = Context(root, Report("fsck", root)) if refs_only else ctx
    plan: Plan | None = None
    spill: Spill | None = None
    try:
        fmt = check_format(sctx)
        if fmt not in (FORMAT_OK, FORMAT_MISSING):
            return ctx
        # What this store means by a reference (recorded at init), and what the caller adds.
        fields = parse_fields([*_store_ref_fields(ctx), *ref_fields])
        report.figures["ref_fields"] = ",".join(path for path, _keys in fields)
        if not refs_only:
            check_tree(ctx)
        if not os.path.isdir(ctx.layout.log_dir):
            return ctx
        # Read in this order while writers append: the index checkpoint and the synced position
        # first, then the listing of the log's files, which therefore holds all they name.
        spill = Spill()
        index = IndexCheck(sctx, spill, ctx.full)
        index.open()
        plan, tail = plan_and_tail(sctx)
        ctx.tail = tail
        report.head = tail.head
        report.figures.update(synced=tail.synced.position if tail.synced is not None else 0,
                              unsynced=tail.unsynced, chain_at_head=tail.head_chain.hex())
        index.judge_checkpoint(plan, tail.head)
        if ctx.full or refs_only:
            refs = RefCheck(ctx, spill, fields)
            with Meter(f"fsck {level}", tail.head, progress=progress) as meter:
                report.figures["events_checked"] = parallel.walk(
                    sctx, plan.parts, tail.head, index, refs, spill, not refs_only, jobs,
                    meanwhile=lambda: _meanwhile(ctx, index), meter=meter)
            if refs_only:
                index.spill.flush()
                spill.con.execute("CREATE INDEX log_ids_eid ON log_ids(eid)")
            else:
                index.finish(plan.parts)
            _finish_refs(refs, index, plan)
    except StopChecking:
        ctx.add("stopped", "info", "", f"stopped after {ctx.problems} problem(s) (--max-errors)")
    finally:
        if spill is not None:
            spill.close()
        if plan is not None:
            plan.close()
    report.finish()
    return ctx


def _store_ref_fields(ctx: Context) -> tuple[str, ...]:
    """The reference fields the store's FORMAT records (none when it records none or is unreadable:
    check_format has said so)."""
    try:
        return parse_format(fileio.read_small(ctx.layout.format_file, 4096)).ref_fields
    except (OSError, ValueError, UnicodeDecodeError):
        return ()


def _finish_refs(refs: RefCheck, index: IndexCheck, plan: Plan) -> None:
    """Name dangling references, through the index's ids where it vouches for them; if SQLite
    fails on the index meanwhile, it is reported and the log's own ids are used instead."""
    upto = index.index_for_refs()
    try:
        refs.finish(upto)
    except sqlite3.DatabaseError as exc:
        if upto <= 0 or not index.spill.attached:
            raise
        index.fail(exc)
        index.walk_trusted = max(index.walk_trusted, upto)
        index.respill(plan.parts)
        refs.finish(0)


def _meanwhile(ctx: Context, index: IndexCheck) -> None:
    """The index's own checks, run while the walk's workers read the log."""
    if ctx.full:
        index.quick_check()
        index.index_sums()
