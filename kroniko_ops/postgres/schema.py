"""The tables of a PostgreSQL store, created on first use and versioned (``docs/POSTGRES.md``).

All live in one PostgreSQL schema (``kroniko`` unless the URL says ``?schema=``):

- ``meta(key, value)``: ``version`` (:data:`VERSION`).
- ``head(one, position, chain)``: a single row, locked ``FOR UPDATE`` by every append: the
  writers' serialisation point and the chain of the last event.
- ``events(position, id, type, tags, body, event_hash, chain, commit)``: ``body`` is the event's
  canonical JSON (the bytes :func:`kroniko_ops.codec.encode_event` produces and the hash covers),
  ``commit`` marks the last event of a batch (as the file log's commit mark does).
- ``tags(tag, position)``: one row per distinct tag of an event, primary key ``(tag, position)``.
- ``synced(slot, position)``: one row per writer connection (its backend pid): the last position
  it made durable. Readers see events up to the largest (:mod:`.store` explains why).
- ``events_json``: a view with ``data`` and ``metadata`` as ``jsonb`` for SQL users.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from .errors import SchemaMismatch

VERSION = 1
TABLES = {"meta", "head", "events", "tags", "synced"}

_DDL = """
CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.head (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    position bigint NOT NULL,
    chain bytea NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.events (
    position bigint PRIMARY KEY CHECK (position > 0),
    id text NOT NULL UNIQUE,
    type text NOT NULL,
    tags text[] NOT NULL,
    body bytea NOT NULL,
    event_hash bytea NOT NULL,
    chain bytea NOT NULL,
    commit boolean NOT NULL);
CREATE INDEX IF NOT EXISTS events_type ON {s}.events (type, position);
CREATE TABLE IF NOT EXISTS {s}.tags (tag text NOT NULL, position bigint NOT NULL, PRIMARY KEY (tag, position));
CREATE TABLE IF NOT EXISTS {s}.synced (slot integer PRIMARY KEY, position bigint NOT NULL);
CREATE OR REPLACE VIEW {s}.events_json AS
    SELECT position, id, type, tags, (convert_from(body, 'UTF8')::jsonb) -> 'data' AS data,
           (convert_from(body, 'UTF8')::jsonb) -> 'metadata' AS metadata, event_hash, chain
    FROM {s}.events;
INSERT INTO {s}.head (one, position, chain) VALUES (true, 0, decode(repeat('00', 32), 'hex'))
    ON CONFLICT DO NOTHING;
"""


def ensure(conn: Any, schema: str, shown: str, create: bool = True) -> None:
    """Check the schema's version; create the tables when the schema is new or empty.

    Raises :class:`SchemaMismatch` for a schema holding other tables or a newer version (nothing
    written). Concurrent first uses serialise on an advisory lock.
    """
    s = sql.Identifier(schema)
    with conn.transaction():
        # Durable before "created" is said (the store's connections commit asynchronously).
        conn.execute("SET LOCAL synchronous_commit = on")
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"kroniko-schema:{schema}",))
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))}
        if "meta" in tables:
            row = conn.execute(sql.SQL("SELECT value FROM {}.meta WHERE key = 'version'").format(s)).fetchone()
            version = int(row[0]) if row and row[0].isdigit() else None
            if version is None:
                raise SchemaMismatch(f"schema {schema} of {shown} has a meta table without a kroniko version; "
                                     "it is not a kroniko store: choose another ?schema=")
            if version > VERSION:
                raise SchemaMismatch(f"schema {schema} of {shown} holds a kroniko store of version {version}, newer "
                                     f"than this kroniko-ops understands ({VERSION}); upgrade kroniko-ops")
            return
        other = tables - {"events_json"}
        if other:
            raise SchemaMismatch(f"schema {schema} of {shown} holds tables that are not a kroniko store "
                                 f"({', '.join(sorted(other))}); choose another with ?schema=NAME")
        if not create:
            from ..errors import StoreNotFound
            raise StoreNotFound(f"{shown} holds no kroniko store in schema {schema}")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
        conn.execute(sql.SQL(_DDL).format(s=s))
        conn.execute(sql.SQL("INSERT INTO {}.meta VALUES ('version', %s)").format(s), (str(VERSION),))
