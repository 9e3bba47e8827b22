"""Commands: backup, verify-backup, restore (see docs/RUNBOOK.md)."""

from __future__ import annotations

import click

from ..ops.backup import backup as run_backup
from ..ops.backup import verify_backup as run_verify
from ..ops.restore import restore as run_restore
from . import cli
from .output import json_option, print_report

PATH = click.Path(file_okay=True, dir_okay=True)
METRICS = click.option("--metrics-file", type=click.Path(dir_okay=False), default=None,
                       help="Also write Prometheus metrics (node_exporter textfile format) to this file.")


def _end(report: object, as_json: bool) -> None:
    print_report(report, as_json)
    code = report.exit_code  # type: ignore[attr-defined]
    if code:
        click.get_current_context().exit(code)


@cli.command()
@click.argument("store", type=PATH)
@click.argument("dest", type=PATH)
@click.option("--incremental-from", "base", type=PATH, default=None,
              help="A previous backup of STORE (full or incremental): copy only the positions after its head.")
@click.option("--archive", is_flag=True, help="Write DEST as one uncompressed .tar file instead of a folder.")
@click.option("--no-fsync", is_flag=True, help="Skip the final flush (tests only; never for a real backup).")
@json_option
@METRICS
def backup(store: str, dest: str, base: str | None, archive: bool, no_fsync: bool, as_json: bool,
           metrics_file: str | None) -> None:
    """Back up STORE into DEST (a new or empty folder, or a new file with --archive), online.

    The backup holds exactly positions 1..H (or base+1..H), H being the head when it starts;
    writers may keep appending. DEST appears only once the backup is complete and durable.
    Exit 2: DEST not empty or BASE not a backup of STORE; 4: STORE is damaged; 8: I/O error.
    """
    _end(run_backup(store, dest, incremental_from=base, archive=archive, quiet=False,
                    metrics_file=metrics_file, durable=not no_fsync), as_json)


@cli.command("verify-backup")
@click.argument("dest", type=PATH)
@click.option("--base", type=PATH, default=None,
              help="Where the base of an incremental is (default: the path its manifest records, "
                   "relative to DEST's folder).")
@json_option
@METRICS
def verify_backup(dest: str, base: str | None, as_json: bool, metrics_file: str | None) -> None:
    """Check the backup DEST against its manifest: every file's size and SHA-256, missing and
    extra files, the log's chain, and for an incremental that its bases are present and match.

    Exit 0: intact; 4: problems (findings with codes backup-*); 8: DEST unreadable.
    """
    _end(run_verify(dest, base, quiet=False, metrics_file=metrics_file), as_json)


@cli.command()
@click.argument("backup", type=PATH)
@click.argument("target", type=PATH)
@click.option("--incremental", "incrementals", multiple=True, type=PATH,
              help="An incremental to apply after BACKUP (repeat, in the order they were made).")
@click.option("--to-position", type=click.IntRange(min=0), default=None,
              help="Restore positions 1..N only (a batch boundary): point-in-time restore.")
@click.option("--dry-run", is_flag=True, help="Verify and say what would be restored; write nothing.")
@click.option("--no-fsync", is_flag=True, help="Skip the flushes (tests only).")
@json_option
@METRICS
def restore(backup: str, target: str, incrementals: tuple[str, ...], to_position: int | None, dry_run: bool,
            no_fsync: bool, as_json: bool, metrics_file: str | None) -> None:
    """Restore BACKUP (and its incrementals) into TARGET, a new or empty folder.

    When BACKUP is an incremental, its bases are found through the paths their manifests
    record. Every backup is verified first; the new store is built beside TARGET, checked with
    a full fsck and renamed into place. Exit 2: TARGET not empty, bad position or unsafe
    archive; 4: a backup does not verify (nothing written); 8: I/O error.
    """
    _end(run_restore(backup, target, to_position, dry_run=dry_run, incrementals=incrementals, quiet=False,
                     durable=not no_fsync, metrics_file=metrics_file), as_json)
