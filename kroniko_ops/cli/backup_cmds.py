"""Commands: backup, verify-backup, restore, backups, prune (see docs/RUNBOOK.md)."""

from __future__ import annotations

import click

from ..ops.backup import backup_into
from ..ops.backup import prune as run_prune
from ..ops.backup.sets import DEFAULT_FULL_EVERY_DAYS, listing
from ..ops.replicate import backup as run_backup
from ..ops.replicate import restore as run_restore
from ..ops.replicate import verify_backup as run_verify
from . import cli
from .contract import Run, command
from .output import emit_json
from .params import FileStore

PATH = click.Path(file_okay=True, dir_okay=True)
LOCK_TIMEOUT = click.option("--lock-timeout", type=click.FloatRange(min=-1), default=30.0, show_default=True,
                            help="Seconds to wait for another run on the same backup set (-1: forever).")


@command(cli, "backup", path="dest", subject="store", metrics_file=True, examples_=(
    "kroniko-ops backup /srv/events --into /backup/events   # full or incremental, named by time, latest -> it",
    "kroniko-ops backup /srv/events s3://acme-dr/snapshots/2026-12-06   # one snapshot into an empty prefix",
    "kroniko-ops backup /srv/events /backup/events-inc --incremental-from /backup/events-full --json"))
@click.argument("store", type=FileStore())
@click.argument("dest", type=PATH, required=False)
@click.option("--into", "root", type=click.Path(file_okay=False), default=None,
              help="Add a backup to the backup set ROOT instead of writing DEST: an incremental on its newest "
                   "backup (or a full one), named by the time it starts, then ROOT/latest points at it.")
@click.option("--full", is_flag=True, help="With --into: a full backup, whatever the set holds.")
@click.option("--full-every", type=click.FloatRange(min=0), default=DEFAULT_FULL_EVERY_DAYS, show_default=True,
              metavar="DAYS", help="With --into: start a new chain with a full backup once the current chain's "
                                   "full backup is this many days old.")
@click.option("--incremental-from", "base", type=PATH, default=None,
              help="A previous backup of STORE (full or incremental): files it already holds are referenced, "
                   "not copied.")
@click.option("--archive", is_flag=True, help="Write the backup as one uncompressed tar file instead of a folder.")
@LOCK_TIMEOUT
def backup(run: Run, store: str, dest: str | None, root: str | None, full: bool, full_every: float,
           base: str | None, archive: bool, lock_timeout: float) -> None:
    """Back up STORE into DEST (a new or empty folder, a new file with --archive, or an empty
    s3://BUCKET/PREFIX), or into the backup set ROOT with --into; online.

    The backup holds exactly positions 1..H, H being the synced head when it starts; writers and
    compaction may go on. The backup appears only once it is complete and durable (in object
    storage: its manifest is written last). Exit 2: DEST not empty or BASE not a backup of
    STORE; 4: STORE is damaged; 8: I/O error or the object store kept failing.
    """
    if (dest is None) == (root is None):
        raise click.UsageError("give DEST or --into ROOT (one of them)")
    if root is not None:
        if base is not None:
            raise click.UsageError("--incremental-from and --into do not mix: --into picks the base itself")
        run.path = root
        run.finish(backup_into(store, root, full=full, full_every_days=full_every, archive=archive,
                               lock_timeout=lock_timeout, progress=run.progress))
        return
    if full:
        raise click.UsageError("--full applies to --into (a backup to DEST is full unless --incremental-from)")
    run.finish(run_backup(store, dest, incremental_from=base, archive=archive, progress=run.progress))


@command(cli, "verify-backup", path="dest", metrics_file=True, examples_=(
    "kroniko-ops verify-backup /backup/events/latest",
    "kroniko-ops verify-backup /backup/events --all --metrics-file /var/lib/node_exporter/kroniko-verify.prom",
    "kroniko-ops verify-backup s3://acme-dr/events --json   # a replica (replicate) or an s3:// backup"))
@click.argument("dest", type=PATH)
@click.option("--all", "every", is_flag=True, help="DEST is a backup set: verify every backup in it.")
def verify_backup(run: Run, dest: str, every: bool) -> None:
    """Check the backup DEST against its manifest: every file's size and SHA-256, missing and
    extra files, the log's chain across its files, and for an incremental its bases. DEST may
    be a backup set (backup --into): its newest backup, or with --all every one; or a replica
    (s3://BUCKET/PREFIX or a folder written by replicate): every object against its manifest.

    Exit 0: intact; 2: a gzipped or otherwise compressed archive (decompress it first);
    4: problems (findings with codes backup-*); 8: DEST unreadable.
    """
    run.finish(run_verify(dest, every=every, progress=run.progress))


@command(cli, "restore", path="target", subject="backup", metrics_file=True, examples_=(
    "kroniko-ops restore /backup/events /srv/events.restored      # the set's newest backup",
    "kroniko-ops restore /backup/events/latest /scratch/drill --to-position 1000 --json",
    "kroniko-ops restore s3://acme-dr/events /srv/events.restored --to-time 2026-12-06T02:15:00Z"))
@click.argument("backup", type=PATH)
@click.argument("target", type=PATH)
@click.option("--to-position", type=click.IntRange(min=0), default=None,
              help="Restore positions 1..N only (N must end a batch): point-in-time restore.")
@click.option("--to-time", default=None, metavar="TIMESTAMP",
              help="Restore up to the last batch committed at or before TIMESTAMP (ISO 8601 with Z or an offset, "
                   "e.g. 2026-12-06T02:15:00Z).")
def restore(run: Run, backup: str, target: str, to_position: int | None, to_time: str | None) -> None:
    """Restore BACKUP (with its bases, for an incremental; for a backup set, its newest backup;
    or a replica: s3://BUCKET/PREFIX or a folder written by replicate) into TARGET, a new or
    empty folder.

    The backup is verified first; the new store is built beside TARGET, checked with fsck and
    renamed into place. Exit 2: TARGET not empty, N inside a batch (the nearest batch ends are
    named), a bad TIMESTAMP or an unsafe archive; 4: the backup does not verify (nothing
    written); 8: I/O error or the object store kept failing.
    """
    run.finish(run_restore(backup, target, to_position=to_position, to_time=to_time, progress=run.progress))


@command(cli, "backups", path="root", examples_=(
    "kroniko-ops backups /backup/events",
    "kroniko-ops backups /backup/events --json | jq -c 'select(.kind == \"backup\") | {name, head, chain}'"))
@click.argument("root", type=click.Path(file_okay=False))
def backups(run: Run, root: str) -> None:
    """List the backups of the set ROOT (backup --into), oldest first: when each was started,
    its head, its chain down to a full backup, its size, its base, and whether it can be restored.

    Exit 0 listed (even when some cannot be restored: they say why), 2 ROOT is not a backup set,
    8 ROOT missing.
    """
    entries = listing(root)
    for e in entries:
        if run.as_json:
            emit_json(e.as_json())
        else:
            doc = e.as_json()
            mark = "" if e.restorable else f"  NOT RESTORABLE: {e.problem}"
            click.echo(f"{e.name}  {doc['time']}  head {doc['head']}  {e.kind:<11}  {doc['bytes']:>12} bytes  "
                       f"base {e.base or '-'}  chain of {len(e.chain)}{mark}")
    restorable = sum(e.restorable for e in entries)
    if not run.as_json and not run.quiet:
        click.echo(f"{len(entries)} backup(s) in {root}, {restorable} restorable")
    run.done(0, backups=len(entries), restorable=restorable,
             head=max((e.manifest.head for e in entries if e.manifest), default=0))


@command(cli, "prune", path="root", metrics_file=True, examples_=(
    "kroniko-ops prune /backup/events --keep-daily 7 --keep-weekly 5 --dry-run",
    "kroniko-ops prune /backup/events --keep-last 3 --keep-daily 14 --json"))
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--keep-last", type=click.IntRange(min=0), default=0, metavar="N", help="Keep the N newest backups.")
@click.option("--keep-daily", type=click.IntRange(min=0), default=0, metavar="N",
              help="Keep the newest backup of each of the last N days that have one (UTC).")
@click.option("--keep-weekly", type=click.IntRange(min=0), default=0, metavar="N",
              help="Keep the newest backup of each of the last N ISO weeks that have one.")
@click.option("--keep-monthly", type=click.IntRange(min=0), default=0, metavar="N",
              help="Keep the newest backup of each of the last N months that have one.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; delete nothing.")
@LOCK_TIMEOUT
def prune(run: Run, root: str, keep_last: int, keep_daily: int, keep_weekly: int, keep_monthly: int,
          dry_run: bool, lock_timeout: float) -> None:
    """Delete the backups of the set ROOT that no --keep-* rule keeps and no kept backup needs
    (the bases of a kept incremental, down to its full backup, are always kept), like restic's
    forget --prune. Each removed backup is named.

    Exit 0 done, 2 no --keep-* rule given or ROOT not a backup set (nothing deleted), 8 ROOT
    missing or another run holds its lock.
    """
    run.finish(run_prune(root, keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly,
                         keep_monthly=keep_monthly, dry_run=dry_run, lock_timeout=lock_timeout))
