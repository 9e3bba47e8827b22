"""The commands' one door to either kind of store: a folder goes to the file tools, a
``postgresql://`` (or ``postgres://``) URL to this package's. The command line calls these and
never tells the two apart itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import InvalidArgument
from ...postgres.url import is_url
from ...report import Report


def fsck_target(target: str, *, quick: bool = False, repair: bool = False, dry_run: bool = False,
                max_errors: int | None = None, ref_fields: Sequence[str] = (), refs_only: bool = False,
                lock_timeout: float = 30.0, progress: bool = False, metrics_file: str | None = None,
                accept_loss: bool = False) -> Report:
    """``fsck`` of a folder (:func:`kroniko_ops.fsck`) or of a PostgreSQL store (:mod:`.fsck`)."""
    if not is_url(target):
        from ..fsck import fsck

        return fsck(target, quick=quick, repair=repair, dry_run=dry_run, max_errors=max_errors,
                    ref_fields=ref_fields, refs_only=refs_only, lock_timeout=lock_timeout, progress=progress,
                    metrics_file=metrics_file, accept_loss=accept_loss)
    if repair or metrics_file or accept_loss:
        raise InvalidArgument("--repair and --metrics-file apply to file stores; a PostgreSQL store is only checked "
                              "(the server rolls back a dead writer's transaction: there is nothing to recover)")
    from .fsck import fsck as pg_fsck

    return pg_fsck(target, quick=quick, max_errors=max_errors, ref_fields=ref_fields, refs_only=refs_only)


def migrate_target(source: str, target: str, *, dry_run: bool = False, progress: bool = False) -> Report:
    """``migrate``: a folder to a URL, a URL to a folder, or (neither a URL) a legacy Ruby store
    to a new file store (:func:`kroniko_ops.migrate`)."""
    if is_url(source) and is_url(target):
        raise InvalidArgument("migrate copies between a folder and a database; for database to database use "
                              "PostgreSQL's own tools (pg_dump)")
    if not is_url(source) and not is_url(target):
        from ...legacy.migrate import migrate

        return migrate(source, target, dry_run=dry_run, quiet=not progress)
    if dry_run:
        raise InvalidArgument("--dry-run applies to migrating a legacy store")
    from .transfer import from_postgres, to_postgres

    return to_postgres(source, target) if is_url(target) else from_postgres(source, target)


def mirror_target(store: str, url: str, *, follow: bool = False, interval: float = 1.0) -> Report:
    """``mirror``: follow the file store ``store`` into the PostgreSQL store at ``url``
    (:func:`kroniko_ops.ops.postgres.transfer.mirror`)."""
    if is_url(store) or not is_url(url):
        raise InvalidArgument("mirror copies a file store (a folder) into a postgresql:// URL: mirror STORE URL")
    from .transfer import mirror

    return mirror(store, url, follow=follow, interval=interval)


@dataclass
class PgStats:
    """What a PostgreSQL store holds and how much the server stores for it."""

    path: str
    schema: str
    version: int
    head: int
    events: int
    batches: int
    types: int
    tag_rows: int
    events_bytes: int
    tags_bytes: int

    def as_dict(self) -> dict[str, object]:
        """The report as a plain dict (for JSON and for printing)."""
        return asdict(self)


def stats_target(target: str) -> Any:
    """``stats`` of a folder (:func:`kroniko_ops.ops.stats.stats`) or a :class:`PgStats`."""
    if not is_url(target):
        from ..stats import stats

        return stats(target)
    from psycopg import sql

    from ...postgres.schema import VERSION
    from ...postgres.store import PostgresEventStore

    with PostgresEventStore(target, create=False, durable=False) as s:
        ev, tg = s.table("events"), s.table("tags")
        conn = s.connection()
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            head = int(conn.execute(sql.SQL("SELECT position FROM {}").format(s.table("head"))).fetchone()[0])
            events, batches, types = conn.execute(sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE commit), count(DISTINCT type) FROM {}").format(ev)).fetchone()
            tag_rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(tg)).fetchone()[0]
            sizes = conn.execute("SELECT pg_total_relation_size(%s::regclass), pg_total_relation_size(%s::regclass)",
                                 (ev.as_string(conn), tg.as_string(conn))).fetchone()
        return PgStats(s.url, s.schema, VERSION, head, int(events), int(batches), int(types), int(tag_rows),
                       int(sizes[0]), int(sizes[1]))
