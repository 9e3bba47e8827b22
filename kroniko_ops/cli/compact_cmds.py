"""``compact``: pack loose events, merge packs, prune old dangling events (like ``git gc``)."""

from __future__ import annotations

import click

from ..errors import InvalidArgument
from ..ops.compact import DEFAULT_MAX_PACKS, DEFAULT_MIN_LOOSE
from ..ops.compact import compact as compact_store
from ..ops.compact_plan import parse_age
from . import cli
from .output import json_option, print_report


def _age(_ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return parse_age(value)
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param=param) from None


@cli.command()
@click.argument("store", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option("--prune-after", "prune_after", default="2w", show_default=True, metavar="AGE", callback=_age,
              help="Set aside dangling events older than AGE into lost-found/ (2w, 3d, 12h, 30m, 0, never). "
                   "0 is safe only when no append is running, like git's --prune=now.")
@click.option("--min-loose", type=click.IntRange(min=1), default=DEFAULT_MIN_LOOSE, show_default=True,
              help="Write a new pack only when at least N committed events are loose (for cron jobs).")
@click.option("--max-packs", type=click.IntRange(min=1), default=DEFAULT_MAX_PACKS, show_default=True,
              help="Merge small packs when there are more than N (like git's gc.autoPackLimit).")
@click.option("--reindex", is_flag=True, help="Also rebuild the index (done anyway when fsck finds it damaged).")
@click.option("--lock-timeout", type=click.FloatRange(min=-1), default=30.0, show_default=True,
              help="Seconds to wait for another maintenance job (-1: forever).")
@click.option("--quiet", "-q", is_flag=True, help="Only problems and the summary line; no progress bar.")
@json_option
def compact(store: str, dry_run: bool, prune_after: float, min_loose: int, max_packs: int,
            reindex: bool, lock_timeout: float, quiet: bool, as_json: bool) -> None:
    """Pack STORE's committed loose events, online, like git gc.

    Appends and reads carry on meanwhile. Exit 0 when done (or planned, with --dry-run), 4 when
    fsck --quick finds damage (nothing is changed then: run kroniko-ops fsck), 8 when the store is
    missing or another maintenance job holds its lock.
    """
    report = compact_store(store, dry_run=dry_run, prune_after=prune_after, min_loose=min_loose,
                           max_packs=max_packs, reindex=reindex, lock_timeout=lock_timeout, quiet=quiet or as_json)
    print_report(report, as_json, quiet)
    if report.exit_code:
        click.get_current_context().exit(report.exit_code)
