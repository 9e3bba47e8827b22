"""Commands: fsck, recover, reindex. Each parses, calls one library function, prints its report."""

from __future__ import annotations

import click

from ..ops.postgres.tools import fsck_target
from ..ops.recovery import recover as run_recover
from ..ops.recovery import reindex as run_reindex
from . import cli
from .contract import Run, command
from .params import FileStore

STORE = click.argument("store", type=click.Path(file_okay=True, dir_okay=True))
FILE_STORE = click.argument("store", type=FileStore())
LOCK_TIMEOUT = click.option("--lock-timeout", type=click.FloatRange(min=-1), default=30.0, show_default=True,
                            help="Seconds to wait for a lock held by another process before giving up (exit 8); "
                            "-1: forever, as for compact, backup and prune.")


@command(cli, "fsck", path="store", metrics_file=True, examples_=(
    "kroniko-ops fsck /srv/events --quick --metrics-file /var/lib/node_exporter/kroniko-fsck.prom",
    "kroniko-ops fsck /srv/events --json | jq -c 'select(.kind == \"finding\")'",
    "kroniko-ops fsck /srv/events --repair --dry-run"))
@STORE
@click.option("--quick", is_flag=True, help="Structure only: layout, segment and pack files, offset indexes, "
              "coverage, the tail, the index checkpoint. No record is hashed.")
@click.option("--repair", is_flag=True, help="Repair what is safe without a person: recovery, reindex, the last "
              "sealed segment's offset index, stale temp and stray files into lost-found/. Never deletes.")
@click.option("--accept-loss", is_flag=True, help="With --repair: when the disk lost acknowledged records at the end "
              "of the log, keep every record that verifies, copy the rest into lost-found/, reset the synced "
              "position, rebuild the index and report each lost position (exit 1). Never the default.")
@click.option("--dry-run", is_flag=True, help="Say what --repair would do; write nothing.")
@click.option("--max-errors", type=click.IntRange(min=1), default=None, help="Stop after N problems.")
@click.option("--ref-field", "ref_fields", multiple=True, metavar="PATH",
              help="Also check this field as a reference to an event id (e.g. data.order_event_id); repeatable. "
              "metadata.causation_id, and the fields the store recorded at init, are always checked; "
              "metadata.correlation_id only when named.")
@click.option("--refs-only", is_flag=True, help="Only check references (dangling-reference): fast, for CI.")
@LOCK_TIMEOUT
def fsck(run: Run, store: str, quick: bool, repair: bool, accept_loss: bool, dry_run: bool, max_errors: int | None,
         ref_fields: tuple[str, ...], refs_only: bool, lock_timeout: float) -> None:
    """Check STORE for damage, like git fsck; with --repair, fix what is safe. STORE may be a
    postgresql:// URL (checked only: positions, hashes, chain, tag table, references).

    Exit codes are bits: 0 clean, 1 problems were found and all repaired, 4 problems remain
    (5: some repaired, some remain), 2 bad usage or not a store, 8 the check could not run
    (missing store, lock held past --lock-timeout, I/O error).
    """
    run.finish(fsck_target(store, quick=quick, repair=repair, dry_run=dry_run, max_errors=max_errors,
                           ref_fields=ref_fields, refs_only=refs_only, lock_timeout=lock_timeout,
                           progress=run.progress, accept_loss=accept_loss))


@command(cli, "recover", path="store", metrics_file=True, examples_=(
    "kroniko-ops recover /srv/events",
    "kroniko-ops recover /srv/events --json --metrics-file /var/lib/node_exporter/kroniko-recover.prom"))
@FILE_STORE
@LOCK_TIMEOUT
def recover(run: Run, store: str, lock_timeout: float) -> None:
    """Crash recovery: re-read the unsynced part of the log, cut a torn or uncommitted tail into
    lost-found/, finish an interrupted seal, clear the poison flag of a failed fsync, catch the
    index up, set aside temp files of dead writers. Idempotent.

    Exit 0 nothing to do, 1 recovered, 4 damage remains that needs a backup, 8 could not run.
    """
    run.finish(run_recover(store, lock_timeout=lock_timeout, progress=run.progress))


@command(cli, "reindex", path="store", metrics_file=True, examples_=(
    "kroniko-ops reindex /srv/events",
    "kroniko-ops reindex /srv/events --json --metrics-file /var/lib/node_exporter/kroniko-reindex.prom"))
@FILE_STORE
@LOCK_TIMEOUT
def reindex(run: Run, store: str, lock_timeout: float) -> None:
    """Build a new index generation of STORE from the log, online, and publish it.

    Exit 0 done, 8 could not run.
    """
    run.finish(run_reindex(store, lock_timeout=lock_timeout, progress=run.progress))
