"""``compact``: pack sealed segments, merge packs, tend the index, prune old lost-found/ entries."""

from __future__ import annotations

import click

from ..ops.compact import DEFAULT_PRUNE_DAYS
from ..ops.compact import compact as compact_store
from . import cli
from .contract import Run, command
from .params import FileStore


@command(cli, "compact", path="store", metrics_file=True, examples_=(
    "kroniko-ops compact /srv/events --dry-run",
    "kroniko-ops compact /srv/events --quiet --metrics-file /var/lib/node_exporter/kroniko-compact.prom",
    "kroniko-ops compact /srv/events --prune-age 0 --json"))
@click.argument("store", type=FileStore())
@click.option("--prune-age", "prune_age", type=click.FloatRange(min=0), default=DEFAULT_PRUNE_DAYS,
              show_default=True, metavar="DAYS",
              help="Delete lost-found/ entries set aside more than DAYS days ago (each one is named in the "
                   "report; lost-found/ is the last place set-aside bytes go, so pruning deletes them). "
                   "0 disables pruning.")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option("--lock-timeout", type=click.FloatRange(min=-1), default=30.0, show_default=True,
              help="Seconds to wait for another maintenance job (-1: forever).")
def compact(run: Run, store: str, prune_age: float, dry_run: bool, lock_timeout: float) -> None:
    """Compact STORE online, like git gc: sealed log segments go into compressed packs, small
    packs are merged geometrically, the index is checkpointed (and vacuumed when worth it), and
    old lost-found/ entries are pruned.

    Appends and reads carry on meanwhile; the active segment is never touched. Exit 0 when done
    (or planned, with --dry-run), 4 when something was found damaged and left alone (run
    kroniko-ops fsck), 8 when the store is missing or another maintenance job holds its lock.
    """
    run.finish(compact_store(store, prune_age=prune_age, dry_run=dry_run, lock_timeout=lock_timeout,
                             progress=run.progress))
