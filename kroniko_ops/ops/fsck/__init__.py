"""``fsck``: find every way a store can be damaged, the way ``git fsck`` does for a repository.

Read-only unless ``repair``, and safe while writers append: it never takes the append lock,
reads records up to the committed head and only looks at the active segment's bytes past it.
The checks live in one module per mechanism (:mod:`.tree`, :mod:`.coverage`, :mod:`.tail`,
:mod:`.records`, :mod:`.index_check`, :mod:`.refs`; :mod:`.parts` keeps a bounded number of the
log's files open); :mod:`.check` runs them, :mod:`.repair`
repairs what is safe. ``docs/FSCK.md`` lists every finding code.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence

from ...errors import InvalidArgument, KronikoError, StoreNotFound
from ...layout import Layout, is_legacy
from ...report import Report
from .check import check_store
from .refs import parse_fields

__all__ = ["fsck"]


def fsck(path: str | os.PathLike[str], *, quick: bool = False, repair: bool = False, dry_run: bool = False,
         max_errors: int | None = None, ref_fields: Sequence[str] = (), refs_only: bool = False,
         lock_timeout: float = 30.0, progress: bool = False, metrics_file: str | None = None,
         jobs: int | None = None, accept_loss: bool = False) -> Report:
    """Check the store at ``path`` and return a :class:`~kroniko_ops.report.Report`.

    ``quick`` checks the structure only (layout, files, offset indexes, coverage, tail, index
    checkpoint); the full level also reads every record (checksums, hashes, chain, JSON, ids),
    compares the whole index with the log and checks references (``metadata.causation_id``, the
    fields the store's FORMAT records, and each ``ref_fields`` path such as
    ``data.order_event_id`` or ``metadata.correlation_id``).
    ``refs_only`` runs only the reference check. ``repair`` then repairs what is safe without a
    person (recovery, reindex, the last sealed segment's offset index, stale temp and stray files
    into ``lost-found/``) under the maintenance lock, waiting up to ``lock_timeout`` seconds;
    with ``dry_run`` it only says what it would do. ``max_errors`` stops after that many
    problems; ``metrics_file`` records the run in Prometheus text format (:mod:`kroniko_ops.metrics`); ``progress``
    shows a bar on a terminal; ``jobs`` sets the worker processes of the full walk (default: one
    per CPU on a big store). ``accept_loss`` (with ``repair`` only) salvages a store whose disk
    lost acknowledged records at the end of the log: every record that verifies is kept, the rest
    is copied into ``lost-found/``, the synced position is reset, the index rebuilt, and each
    lost position reported (``acknowledged-lost``); without it ``repair`` refuses that and names
    the positions at stake (``accept-loss-needed``).

    The report's ``exit_code``: 0 clean, 1 everything found was repaired, 4 problems remain, 5
    both. Raises a :class:`~kroniko_ops.errors.KronikoError` (exit 2 or 8) when it cannot run.
    """
    if max_errors is not None and (isinstance(max_errors, bool) or max_errors < 1):
        raise InvalidArgument(f"max_errors must be a positive number, got {max_errors!r}")
    if jobs is not None and (isinstance(jobs, bool) or jobs < 1):
        raise InvalidArgument(f"jobs must be a positive number, got {jobs!r}")
    if accept_loss and not repair:
        raise InvalidArgument("accept_loss (--accept-loss) only goes with repair (--repair); nothing was written")
    if isinstance(ref_fields, str):
        raise InvalidArgument("ref_fields is a list of paths, not one string")
    parse_fields(ref_fields)
    root = os.fspath(path)
    level = "refs" if refs_only else "quick" if quick else "full"
    started = time.monotonic()
    try:
        _require_store(root)
        if is_legacy(root):
            report = _check_legacy(root, level, repair, progress)
        elif repair and not dry_run:
            from .repair import repair_store  # recovery imports the checks: import it only to repair

            report = repair_store(root, full=not quick, max_errors=max_errors, ref_fields=ref_fields,
                                  refs_only=refs_only, lock_timeout=lock_timeout, progress=progress,
                                  accept_loss=accept_loss)
        else:
            ctx = check_store(root, full=not quick, max_errors=max_errors, ref_fields=ref_fields,
                              refs_only=refs_only, progress=progress, jobs=jobs)
            report = ctx.report
            if dry_run:
                from .repair import annotate_plan, judge_loss

                annotate_plan(ctx)
                loss = judge_loss(ctx, accept_loss, "--repair --dry-run")
                if loss is not None:
                    report.add("accept-loss-needed", "info", "log", f"--repair --accept-loss would keep positions "
                               f"1..{loss.head}, set aside what is left of {loss.positions()} into lost-found/, reset "
                               "the synced position and rebuild the index")
    except KronikoError as exc:
        if metrics_file:
            from ... import metrics  # prometheus_client costs ~30 ms to import: only when asked for

            metrics.write_run(metrics_file, "fsck", root, exit_code=exc.exit_code, seconds=time.monotonic() - started)
        raise
    if metrics_file:
        from ... import metrics

        metrics.write_run(metrics_file, "fsck", root, exit_code=report.exit_code, seconds=report.seconds,
                          report=report)
    return report


_STORE_FILE = re.compile(r"\A\d{12}\.(seg|idx)\Z|\A\d{12}-\d{12}\.pack\Z")


def _holds_store_files(lay: Layout) -> bool:
    """True when ``log/`` or ``packs/`` holds a file named like a segment, offset index or pack."""
    for folder in (lay.log_dir, lay.packs):
        if os.path.isdir(folder) and not os.path.islink(folder):
            if any(_STORE_FILE.match(n) for n in os.listdir(folder)):
                return True
    return False


def _require_store(root: str) -> None:
    """Refuse, before anything is read or written, what is not a store: a missing path (exit
    8), a file or a folder with neither FORMAT nor a log (exit 2)."""
    if not os.path.exists(root):
        raise StoreNotFound(f"no store at {root}")
    if not os.path.isdir(root):
        raise InvalidArgument(f"{root} is a file, not a store folder")
    lay = Layout(root)
    if not is_legacy(root) and not os.path.lexists(lay.format_file) and not _holds_store_files(lay):
        # A log/ of someone else's files is no store that lost its FORMAT: --repair would move
        # those files into a lost-found/ it creates.
        raise InvalidArgument(f"{root} is not a kroniko-ops store (no FORMAT file, and no segment or pack in "
                              "log/ or packs/); nothing was written")


def _check_legacy(root: str, level: str, repair: bool, progress: bool) -> Report:
    """A format-1 (Ruby kroniko) store: checked by the legacy package, never written."""
    from ...legacy.check import check_legacy

    report = Report("fsck", root)
    if repair:
        report.add("legacy-store", "info", "", "a legacy (format 1) store is never written: --repair changed "
                   f"nothing; migrate it with kroniko-ops migrate {root} NEW_STORE")
    check_legacy(root, report, "quick" if level == "quick" else "full", not progress)
    return report.finish()
