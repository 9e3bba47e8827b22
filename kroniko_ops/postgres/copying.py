"""Copying stored rows into a PostgreSQL store verbatim (``migrate STORE URL``, ``mirror``):
positions, ids, bodies, hashes, chain, batch marks and commit times as the source has them, in
one transaction under the writers' lock, streamed with ``COPY``. :class:`Row` is one stored
event as the tools see it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg import sql

from ..codec import decode_event
from ..errors import InvalidArgument
from ..format.record import chain_of
from .query import check_text

if TYPE_CHECKING:
    from .store import PostgresEventStore


@dataclass(frozen=True)
class Row:
    """One stored event as the tools see it (migrate, mirror, fsck)."""

    position: int
    event_id: str
    body: bytes
    event_hash: bytes
    chain: bytes
    commit: bool
    commit_us: int = 0  # the batch's commit time (microseconds since the epoch; 0 unknown)


def copy_rows(store: PostgresEventStore, rows: Iterable[Row], expect_head: int | None) -> int:
    """:meth:`PostgresEventStore.import_rows`' transaction (the caller holds the handle's mutex);
    returns the new head."""
    conn, t = store.connection(), {name: store.table(name) for name in ("head", "events", "tags")}
    with conn.transaction():
        lock = sql.SQL("SELECT position, chain, commit_us FROM {} FOR UPDATE").format(t["head"])
        start, chain, stamp = conn.execute(lock).fetchone()
        if expect_head is not None and start != expect_head:
            raise InvalidArgument(f"{store.url} is at position {start}, not {expect_head}: another writer "
                                  "appended meanwhile; nothing was copied")
        head, chain = start, bytes(chain)
        with conn.cursor() as cur:
            copy = sql.SQL("COPY {} (position, id, type, tags, body, event_hash, chain, commit, commit_us) "
                           "FROM STDIN")
            with cur.copy(copy.format(t["events"])) as cp:
                for r in rows:
                    head += 1
                    chain = chain_of(chain, r.event_hash)
                    if r.position != head or chain != r.chain or hashlib.sha256(r.body).digest() != r.event_hash:
                        raise InvalidArgument(f"the event at {r.position} does not continue {store.url} at {head} "
                                              "with a matching hash and chain; nothing was copied")
                    event = decode_event(r.body)
                    for value in (event.type, *event.tags):
                        check_text(value, f"the type or tag of the event at {r.position},", InvalidArgument)
                    stamp = max(stamp, r.commit_us)  # kept as the source had it; never decreasing
                    cp.write_row((r.position, r.event_id, event.type, list(event.tags), r.body, r.event_hash,
                                  r.chain, r.commit, stamp if r.commit_us else 0))
        # The tag rows, from the rows just copied, by the server: nothing held in memory here.
        conn.execute(sql.SQL("INSERT INTO {} (tag, position) SELECT DISTINCT u.tag, e.position FROM {} e, "
                             "unnest(e.tags) AS u(tag) WHERE e.position > %s").format(t["tags"], t["events"]),
                     (start,))
        conn.execute(sql.SQL("UPDATE {} SET position = %s, chain = %s, commit_us = %s").format(t["head"]),
                     (head, chain, stamp))
        conn.execute("SELECT pg_notify(%s, %s)", (store.channel, str(head)))
    return head

