"""``fsck``: find every way a store can be damaged, the way ``git fsck`` does for a repository.

Read-only by default and safe while writers append: the log's head is fixed when the check
starts, and only what that head covers is judged (see :func:`check_store`). ``repair=True``
hands over to :mod:`kroniko_ops.ops.repair`. Checks live in the ``checks_*`` modules, one per
mechanism: layout, log, events, references, index.

Memory stays flat in the number of events: the log and every index file are streamed in chunks,
and set comparisons (log ids against ``events/``, the index against the log) are digests, with a
disk-backed partitioned comparison only when the digests differ (see ``checks_common``).
"""

from __future__ import annotations

import os
import time

from ..errors import InvalidArgument, KronikoError, StoreNotFound
from ..layout import Layout, is_legacy
from ..log import ZERO_CHAIN
from ..packs import check_packs
from ..report import Report, write_metrics
from .checks_common import LOG_PATH, Context, StopChecking
from .checks_events import check_events, iter_entries
from .checks_index import check_index, checkpoint_findings, read_checkpoint, trusted_upto
from .checks_layout import FORMAT_OTHER, check_format, check_layout
from .checks_log import LogScanner
from .checks_refs import list_events, reconcile
from .checks_tail import DAMAGED, report_tail, snapshot

LEVELS = ("full", "quick")
METRICS_PREFIX = "kroniko_fsck"


def fsck(path: str | os.PathLike[str], level: str = "full", repair: bool = False, *, dry_run: bool = False,
         max_errors: int | None = None, quiet: bool = True, metrics_file: str | None = None,
         lock_timeout: float = 30.0) -> Report:
    """Check the store at ``path`` and return a :class:`~kroniko_ops.report.Report`.

    ``level="quick"`` checks structure only (log framing, tail, positions, that events exist,
    the index checkpoint and file names); ``"full"`` also hashes every event, walks the chain
    and compares every index line with what the log implies. ``repair=True`` then repairs what
    is safe without a person (recovery, reindex, quarantine of old dangling events and stray
    files into ``lost-found/``), holding the maintenance lock and the append lock (waiting up to
    ``lock_timeout`` seconds, then raising :class:`~kroniko_ops.errors.StoreLocked`); with
    ``dry_run`` it only says what it would do. ``max_errors`` stops after that many problems.
    ``metrics_file`` receives the summary in the Prometheus text format.

    The report's ``exit_code``: 0 clean, 1 everything found was repaired, 4 problems remain.
    Raises a :class:`~kroniko_ops.errors.KronikoError` (exit 8 or 2) when the check cannot run.
    """
    if level not in LEVELS:
        raise InvalidArgument(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    if max_errors is not None and (isinstance(max_errors, bool) or max_errors < 1):
        raise InvalidArgument(f"max_errors must be a positive number, got {max_errors!r}")
    root = os.fspath(path)
    try:
        _require_store(root)
        if is_legacy(root):
            report = _check_legacy(root, level, repair, quiet)
        elif repair and not dry_run:
            from .repair import repair_store

            report = repair_store(root, level == "full", quiet, max_errors, lock_timeout)
        else:
            report = check_store(root, level == "full", quiet, max_errors)
            if dry_run:
                from .repair import annotate_plan

                annotate_plan(report)
    except KronikoError as exc:
        if metrics_file:
            _write_metrics(metrics_file, root, level, {"up": 0, "exit_code": exc.exit_code})
        raise
    if metrics_file:
        values: dict[str, float | int] = {
            "up": 1, "exit_code": report.exit_code, "problems": len(report.problems),
            "repaired": sum(f.repaired for f in report.findings), "findings": len(report.findings),
            "events_checked": report.figures.get("events_checked", 0), "head": report.head,
            "seconds": round(report.seconds, 3),
        }
        for code, count in sorted(report.counts().items()):
            values["findings_" + code.replace("-", "_")] = count
        _write_metrics(metrics_file, root, level, values)
    return report


def _write_metrics(metrics_file: str, root: str, level: str, values: dict[str, float | int]) -> None:
    values = {**values, "last_run_timestamp_seconds": int(time.time())}
    write_metrics(metrics_file, METRICS_PREFIX, values, {"store": os.path.abspath(root), "level": level})


def _require_store(root: str) -> None:
    if not os.path.exists(root):
        raise StoreNotFound(f"no store at {root}")
    if not os.path.isdir(root):
        raise InvalidArgument(f"{root} is a file, not a store folder")
    lay = Layout(root)
    if not any(os.path.lexists(p) for p in (lay.format_file, lay.log, lay.events)):
        raise InvalidArgument(f"{root} is not a kroniko-ops store (no FORMAT, log/append.log or events/)")


def _check_legacy(root: str, level: str, repair: bool, quiet: bool) -> Report:
    """A format-1 (Ruby kroniko) store: checked by the legacy package, never written."""
    try:
        from ..legacy.check import check_legacy
    except ImportError:
        raise KronikoError(f"{root} is a legacy Ruby kroniko store and this build cannot check it") from None
    report = Report("fsck", root)
    if repair:
        report.add("legacy-store", "info", "",
                   "a legacy (format 1) store is never written: --repair changed nothing; migrate it with "
                   f"kroniko-ops migrate {root} NEW_STORE")
    check_legacy(root, report, level, quiet)
    return report.finish()


def check_store(root: str, full: bool = True, quiet: bool = True, max_errors: int | None = None,
                writer_may_be_live: bool = True) -> Report:
    """The read-only check of a format-2 store (the body of :func:`fsck` without repair).

    ``writer_may_be_live=False`` when the caller holds the append lock itself.
    """
    report = Report("fsck", root)
    report.figures.update(level="full" if full else "quick", events_checked=0, chain_at_head=ZERO_CHAIN)
    ctx = Context(root, report, full, quiet, max_errors)
    fd = -1
    try:
        if check_format(ctx) == FORMAT_OTHER:
            return report.finish()
        lay = ctx.layout
        # The checkpoint is read before the head: whatever it covers is then at or below that head.
        cp, cp_problem = read_checkpoint(lay.index)
        try:
            fd = os.open(lay.log, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            ctx.add("log-missing", "error", LOG_PATH,
                    "the commit log is missing: nothing can be read; restore the store from a backup")
            check_layout(ctx)
            return report.finish()
        state = snapshot(fd, lay.append_lock, writer_may_be_live)
        report.head = state.head
        report.figures.update(head=state.head, chain_at_head=state.chain, tail=state.tail)
        report_tail(ctx, state)
        checkpoint_findings(ctx, cp, cp_problem, state.head)
        upto = trusted_upto(cp, state.head)
        scanner = LogScanner(ctx, fd, state.last_named, state.head, chain=full)
        events = check_events(ctx, scanner, upto)
        report.figures.update(events_checked=events.checked, chain_at_head=scanner.chain_at_head)
        if events.packs_unreadable:
            ctx.add("packs-unreadable", "info", "packs/", "this build cannot read packs: events missing "
                    "from events/ may be packed")
        check_layout(ctx)
        listed = list_events(ctx)
        if listed != events.loose or events.packed or events.packs_unreadable:
            reconcile(ctx, fd, state.last_named, find_missing=not full,
                      log_damaged=scanner.unreadable > 0 or state.tail == DAMAGED)
        _check_packs(ctx, full, state.head)
        expected = events.index if full and not scanner.bad_overflow else None
        if full and scanner.bad_overflow:
            ctx.add("index-unchecked", "info", "index/", "too many damaged lines and events to compare the "
                    "index with the log: deal with them first, then check again")
        check_index(ctx, lay.index, upto, expected, scanner.bad,
                    lambda: iter_entries(root, fd, 1, upto, skip=scanner.bad))
    except StopChecking:
        ctx.add("stopped", "info", "", f"stopped after {ctx.problems} problem(s) (--max-errors)")
    finally:
        if fd >= 0:
            os.close(fd)
    return report.finish()


def _check_packs(ctx: Context, full: bool, head: int) -> None:
    try:
        check_packs(ctx.root, ctx.report, full, head)
    except NotImplementedError:
        ctx.add("packs-unchecked", "info", "packs/", "this build cannot verify packs yet")
