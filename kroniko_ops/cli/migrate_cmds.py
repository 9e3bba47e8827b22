"""Command: migrate a Ruby kroniko store (format 1) into a new format-3 store."""

from __future__ import annotations

import click

from ..legacy.migrate import migrate as migrate_store
from . import cli
from .output import json_option, print_report


@cli.command()
@click.argument("legacy", type=click.Path(file_okay=True, dir_okay=True))
@click.argument("target", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--dry-run", is_flag=True, help="Make and report every decision; write nothing.")
@json_option
def migrate(legacy: str, target: str, dry_run: bool, as_json: bool) -> None:
    """Copy the Ruby kroniko store LEGACY into a new store TARGET (missing or empty folder).

    Every committed event keeps its position, id, type and data, and gains a tag per scalar
    top-level data property (cart_id:cart-7). Damage is handled as recovery would and listed:
    a lost event keeps its position as a kroniko.LegacyEventLost placeholder, orphan files and a
    torn last log line go to TARGET/lost-found/. LEGACY is never modified. The new store is
    built under a temporary name beside TARGET and appears as TARGET only when complete and
    durable: an interrupted run leaves nothing under TARGET.

    Exit 0: migrated, nothing to report; 1: migrated, damage was found and handled (see the
    findings); 2: bad arguments (TARGET not empty, LEGACY not a Ruby store), nothing written;
    4: the legacy log grew during the run (stop the Ruby writers, migrate again); 8: operational
    error (nothing was published under TARGET: fix the cause and migrate again).
    """
    report = migrate_store(legacy, target, dry_run=dry_run, quiet=False)
    print_report(report, as_json)
    if report.exit_code:
        click.get_current_context().exit(report.exit_code)
