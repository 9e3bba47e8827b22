"""Commands: fsck, recover, reindex. Each parses, calls one library function, prints its report."""

from __future__ import annotations

import click

from ..ops.fsck import fsck as run_fsck
from ..ops.recover import recover as run_recover
from ..ops.reindex import reindex as run_reindex
from . import cli
from .output import json_option, print_report

STORE = click.argument("store", type=click.Path(file_okay=True, dir_okay=True))
LOCK_TIMEOUT = click.option("--lock-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
                            help="Seconds to wait for a lock held by another process before giving up (exit 8).")


def _finish(report: object, as_json: bool, quiet: bool = False) -> None:
    print_report(report, as_json, quiet)
    code = report.exit_code  # type: ignore[attr-defined]
    if code:
        click.get_current_context().exit(code)


@cli.command()
@STORE
@click.option("--quick", is_flag=True, help="Structure only: log framing, tail, positions, that events exist, "
              "the index checkpoint. No hashing.")
@click.option("--repair", is_flag=True, help="Repair what is safe without a person: recovery, reindex, set old "
              "dangling events and stray files aside into lost-found/. Never deletes.")
@click.option("--dry-run", is_flag=True, help="Say what --repair would do; write nothing.")
@click.option("--max-errors", type=click.IntRange(min=1), default=None, help="Stop after N problems.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar; hide info-only findings.")
@click.option("--metrics-file", type=click.Path(dir_okay=False), default=None,
              help="Also write the summary in Prometheus text format (for a node_exporter textfile collector).")
@LOCK_TIMEOUT
@json_option
def fsck(store: str, quick: bool, repair: bool, dry_run: bool, max_errors: int | None, quiet: bool,
         metrics_file: str | None, lock_timeout: float, as_json: bool) -> None:
    """Check STORE for damage, like git fsck; with --repair, fix what is safe.

    Exit codes are bits: 0 clean, 1 problems were found and all repaired, 4 problems remain,
    8 the check could not run (missing store, lock held past --lock-timeout, I/O error).
    """
    report = run_fsck(store, "quick" if quick else "full", repair, dry_run=dry_run, max_errors=max_errors,
                      quiet=quiet, metrics_file=metrics_file, lock_timeout=lock_timeout)
    _finish(report, as_json, quiet)


@cli.command()
@STORE
@LOCK_TIMEOUT
@json_option
def recover(store: str, lock_timeout: float, as_json: bool) -> None:
    """Crash recovery: cut a torn or uncommitted log tail into lost-found/, catch the index up,
    set aside temp files of dead writers. Idempotent.

    Exit 0 nothing to do, 1 recovered, 4 damage remains that needs a backup, 8 could not run.
    """
    _finish(run_recover(store, lock_timeout=lock_timeout), as_json)


@cli.command()
@STORE
@LOCK_TIMEOUT
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def reindex(store: str, lock_timeout: float, quiet: bool, as_json: bool) -> None:
    """Rebuild every index of STORE from the log and the events, and swap it in atomically.

    Exit 0 done, 4 some events could not be read (left out of the index), 8 could not run.
    """
    _finish(run_reindex(store, lock_timeout=lock_timeout, quiet=quiet), as_json)
