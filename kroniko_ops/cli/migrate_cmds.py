"""Commands: migrate (a Ruby kroniko store into a new format-3 store, or between a file store
and PostgreSQL), mirror (follow a file store into PostgreSQL)."""

from __future__ import annotations

import click

from ..ops.postgres.tools import migrate_target, mirror_target
from . import cli
from .contract import Run, command


@command(cli, "migrate", path="target", subject="legacy", metrics_file=True, examples_=(
    "kroniko-ops migrate /srv/old-ruby-store /srv/events --dry-run",
    "kroniko-ops migrate /srv/events 'postgresql://app@db.internal/shop'",
    "kroniko-ops migrate 'postgresql://app@db.internal/shop' /srv/events-back --json"))
@click.argument("legacy", type=click.Path(file_okay=True, dir_okay=True))
@click.argument("target", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--dry-run", is_flag=True, help="Make and report every decision; write nothing (legacy stores).")
def migrate(run: Run, legacy: str, target: str, dry_run: bool) -> None:
    """Copy the Ruby kroniko store LEGACY into a new store TARGET (missing or empty folder).

    Every committed event keeps its position, id, type and data, and gains a tag per scalar
    top-level data property (cart_id:cart-7). Damage is handled as recovery would and listed:
    a lost event keeps its position as a kroniko.LegacyEventLost placeholder, orphan files and a
    torn last log line go to TARGET/lost-found/. LEGACY is never modified. The new store is
    built under a temporary name beside TARGET and appears as TARGET only when complete and
    durable: an interrupted run leaves nothing under TARGET.

    With a postgresql:// URL on either side: `migrate STORE URL` copies a file store into an
    empty database schema (one transaction), `migrate URL STORE` copies a PostgreSQL store into a
    new folder; positions, ids, hashes and the chain are kept exactly (docs/POSTGRES.md).

    Exit 0: migrated, nothing to report; 1: migrated, damage was found and handled (see the
    findings); 2: bad arguments (TARGET not empty, LEGACY not a Ruby store), nothing written;
    4: the legacy log grew during the run (stop the Ruby writers, migrate again); 8: operational
    error (nothing was published under TARGET: fix the cause and migrate again).
    """
    run.finish(migrate_target(legacy, target, dry_run=dry_run, progress=run.progress))


@command(cli, "mirror", path="store", metrics_file=True, examples_=(
    "kroniko-ops mirror /srv/events 'postgresql://app@db.internal/shop' --once",
    "kroniko-ops mirror /srv/events 'postgresql://app@db.internal/shop' --interval 5"))
@click.argument("store", type=click.Path(file_okay=False, dir_okay=True))
@click.argument("url")
@click.option("--once", is_flag=True, help="Copy until caught up with STORE's head, then exit (the default "
              "follows STORE until interrupted).")
@click.option("--interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Seconds between looks at STORE when following.")
def mirror(run: Run, store: str, url: str, once: bool, interval: float) -> None:
    """Follow the file store STORE into the PostgreSQL store at URL (empty, or an earlier mirror
    of STORE): whole batches, one transaction each, verbatim (positions, ids, hashes, chain).
    A killed mirror resumes where the database is; running it again copies nothing twice.

    Exit 0 caught up (with --once), 2 URL holds other events (nothing copied), 8 could not run,
    130 interrupted while following.
    """
    run.finish(mirror_target(store, url, follow=not once, interval=interval))
