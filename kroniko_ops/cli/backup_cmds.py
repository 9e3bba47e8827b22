"""Commands: backup, verify-backup, restore (see docs/RUNBOOK.md)."""

from __future__ import annotations

import sys

import click

from ..ops.replicate import backup as run_backup
from ..ops.replicate import restore as run_restore
from ..ops.replicate import verify_backup as run_verify
from . import cli
from .output import json_option, print_report

PATH = click.Path(file_okay=True, dir_okay=True)


def _end(report: object, as_json: bool) -> None:
    print_report(report, as_json)
    code = report.exit_code  # type: ignore[attr-defined]
    if code:
        click.get_current_context().exit(code)


@cli.command()
@click.argument("store", type=PATH)
@click.argument("dest", type=PATH)
@click.option("--incremental-from", "base", type=PATH, default=None,
              help="A previous backup of STORE (full or incremental): files it already holds are referenced, "
                   "not copied.")
@click.option("--archive", is_flag=True, help="Write DEST as one uncompressed tar file instead of a folder.")
@json_option
def backup(store: str, dest: str, base: str | None, archive: bool, as_json: bool) -> None:
    """Back up STORE into DEST (a new or empty folder, a new file with --archive, or an empty
    s3://BUCKET/PREFIX), online.

    The backup holds exactly positions 1..H, H being the synced head when it starts; writers and
    compaction may go on. DEST appears only once the backup is complete and durable (in S3: its
    manifest is written last). Exit 2: DEST not empty or BASE not a backup of STORE; 4: STORE is
    damaged; 8: I/O error or the object store kept failing.
    """
    _end(run_backup(store, dest, incremental_from=base, archive=archive, progress=sys.stderr.isatty()), as_json)


@cli.command("verify-backup")
@click.argument("dest", type=PATH)
@json_option
def verify_backup(dest: str, as_json: bool) -> None:
    """Check the backup or replica DEST (a folder, an archive, or s3://BUCKET/PREFIX) against
    its manifest: every file's (or object's) size and SHA-256, missing and extra files, the log's
    chain across its files, and for an incremental its bases.

    Exit 0: intact; 4: problems (findings with codes backup-*); 8: DEST unreadable.
    """
    _end(run_verify(dest), as_json)


@cli.command()
@click.argument("backup", type=PATH)
@click.argument("target", type=PATH)
@click.option("--to-position", type=click.IntRange(min=0), default=None,
              help="Restore positions 1..N only (N must end a batch): point-in-time restore.")
@click.option("--to-time", default=None, metavar="TIMESTAMP",
              help="Restore up to the last batch committed at or before TIMESTAMP (ISO 8601 with Z or an offset, "
                   "e.g. 2026-12-06T02:15:00Z).")
@json_option
def restore(backup: str, target: str, to_position: int | None, to_time: str | None, as_json: bool) -> None:
    """Restore BACKUP (a folder or archive, with its bases for an incremental, or a replica:
    s3://BUCKET/PREFIX or a replica folder) into TARGET, a new or empty folder.

    The backup is verified first; the new store is built beside TARGET, checked with fsck and
    renamed into place. Exit 2: TARGET not empty, N inside a batch, a bad TIMESTAMP or an unsafe
    archive; 4: the backup does not verify (nothing written); 8: I/O error.
    """
    _end(run_restore(backup, target, to_position=to_position, to_time=to_time, progress=sys.stderr.isatty()),
         as_json)
