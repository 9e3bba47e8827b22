"""Commands: backup, verify-backup, restore (see docs/RUNBOOK.md)."""

from __future__ import annotations

import click

from ..ops.backup import backup as run_backup
from ..ops.backup import restore as run_restore
from ..ops.backup import verify_backup as run_verify
from . import cli
from .contract import Run, command

PATH = click.Path(file_okay=True, dir_okay=True)


@command(cli, "backup", path="dest", subject="store", metrics_file=True, examples_=(
    "kroniko-ops backup /srv/events /backup/events-full",
    "kroniko-ops backup /srv/events /backup/events-inc --incremental-from /backup/events-full",
    "kroniko-ops backup /srv/events /backup/events.tar --archive --json"))
@click.argument("store", type=PATH)
@click.argument("dest", type=PATH)
@click.option("--incremental-from", "base", type=PATH, default=None,
              help="A previous backup of STORE (full or incremental): files it already holds are referenced, "
                   "not copied.")
@click.option("--archive", is_flag=True, help="Write DEST as one uncompressed tar file instead of a folder.")
def backup(run: Run, store: str, dest: str, base: str | None, archive: bool) -> None:
    """Back up STORE into DEST (a new or empty folder, or a new file with --archive), online.

    The backup holds exactly positions 1..H, H being the synced head when it starts; writers and
    compaction may go on. DEST appears only once the backup is complete and durable.
    Exit 2: DEST not empty or BASE not a backup of STORE; 4: STORE is damaged; 8: I/O error.
    """
    run.finish(run_backup(store, dest, incremental_from=base, archive=archive, progress=run.progress))


@command(cli, "verify-backup", path="dest", metrics_file=True, examples_=(
    "kroniko-ops verify-backup /backup/events-full",
    "kroniko-ops verify-backup /backup/events.tar --json --metrics-file /var/lib/node_exporter/kroniko-verify.prom"))
@click.argument("dest", type=PATH)
def verify_backup(run: Run, dest: str) -> None:
    """Check the backup DEST against its manifest: every file's size and SHA-256, missing and
    extra files, the log's chain across its files, and for an incremental its bases.

    Exit 0: intact; 4: problems (findings with codes backup-*); 8: DEST unreadable.
    """
    run.finish(run_verify(dest, progress=run.progress))


@command(cli, "restore", path="target", subject="backup", metrics_file=True, examples_=(
    "kroniko-ops restore /backup/events-full /srv/events.restored",
    "kroniko-ops restore /backup/events-inc /scratch/drill --to-position 1000 --json"))
@click.argument("backup", type=PATH)
@click.argument("target", type=PATH)
@click.option("--to-position", type=click.IntRange(min=0), default=None,
              help="Restore positions 1..N only (N must end a batch): point-in-time restore.")
def restore(run: Run, backup: str, target: str, to_position: int | None) -> None:
    """Restore BACKUP (with its bases, for an incremental) into TARGET, a new or empty folder.

    The backup is verified first; the new store is built beside TARGET, checked with fsck and
    renamed into place. Exit 2: TARGET not empty, N inside a batch or an unsafe archive;
    4: the backup does not verify (nothing written); 8: I/O error.
    """
    run.finish(run_restore(backup, target, to_position=to_position, progress=run.progress))
