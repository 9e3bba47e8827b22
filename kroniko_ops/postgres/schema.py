"""The tables of a PostgreSQL store, created on first use and versioned (``docs/POSTGRES.md``).

All live in one PostgreSQL schema (``kroniko`` unless the URL says ``?schema=``):

- ``meta(key, value)``: ``version`` (:data:`VERSION`), ``max_event_bytes`` (fixed at creation,
  as the file store's FORMAT fixes it), ``append_fn``.
- ``head(one, position, chain, commit_us)``: a single row, locked ``FOR UPDATE`` by every append:
  the writers' serialisation point, the chain of the last event and the last commit time.
- ``events(position, id, type, tags, body, event_hash, chain, commit, commit_us)``: ``body`` is
  the event's canonical JSON (the bytes :func:`kroniko_ops.codec.encode_event` produces and the
  hash covers), ``commit`` marks the last event of a batch (as the file log's commit mark does),
  ``commit_us`` is the batch's commit time (microseconds since the Unix epoch, UTC; never
  decreasing along the log; 0 for events written by version 1).
- ``tags(tag, position)``: one row per distinct tag of an event, primary key ``(tag, position)``.
- ``synced(slot, position)``: one row per writer connection (its backend pid): the last position
  it made durable. Readers see events up to the largest (:mod:`.store` explains why); rows below
  the largest are pruned now and then (the largest says all they said).
- ``events_json``: a view with ``data`` and ``metadata`` as ``jsonb`` for SQL users, and
  ``committed_at`` as a ``timestamptz``.

Version 1 stores (no commit times) are upgraded in place on first use by this release.
- ``append(...)``: the whole append under the head lock in one statement (one round trip while
  the lock is held; :mod:`.store` calls it). The condition arrives as its query's items (JSON:
  ``[{"types": [...], "tags": [...]}]``) and is checked with static, plan-cached SQL: through the
  tag table when the item has tags, else the ``(type, position)`` index. The chain is computed
  here, from the head row.
"""

from __future__ import annotations

import hashlib
from typing import Any

from psycopg import sql

from .errors import SchemaMismatch

VERSION = 2
TABLES = {"meta", "head", "events", "tags", "synced"}

_FUNCTION = """
CREATE OR REPLACE FUNCTION {s}.append(p_ids text[], p_types text[], p_bodies bytea[], p_hashes bytea[],
        p_tag_of int[], p_tags text[], p_explicit boolean, p_after bigint, p_items jsonb, p_channel text)
    RETURNS TABLE (status text, pos bigint, detail text) LANGUAGE plpgsql AS $fn$
DECLARE
    h bigint; c bytea; n int := cardinality(p_ids); got bigint[]; k int; hit bigint; x bigint; chains bytea[];
    item jsonb; i_types text[]; i_tags text[]; t bigint;
BEGIN
    SELECT hd.position, hd.chain, hd.commit_us INTO h, c, t FROM {s}.head hd FOR UPDATE;
    IF p_explicit THEN
        SELECT array_agg(e.position ORDER BY u.ord) INTO got
            FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord) LEFT JOIN {s}.events e ON e.id = u.id;
        IF EXISTS (SELECT 1 FROM unnest(got) g WHERE g IS NOT NULL) THEN
            -- all ids committed in order at consecutive positions: an idempotent retry
            IF got[1] IS NOT NULL AND NOT EXISTS (SELECT 1 FROM generate_subscripts(got, 1) i
                                                  WHERE got[i] IS DISTINCT FROM got[1] + i - 1) THEN
                RETURN QUERY SELECT 'retry'::text, got[n], NULL::text; RETURN;
            END IF;
            SELECT i INTO k FROM generate_subscripts(got, 1) i WHERE got[i] IS NOT NULL ORDER BY i LIMIT 1;
            RETURN QUERY SELECT 'reused'::text, got[k], p_ids[k]; RETURN;
        END IF;
    END IF;
    IF p_items IS NOT NULL AND coalesce(p_after, 0) < h THEN
        FOR item IN SELECT * FROM jsonb_array_elements(p_items) LOOP
            i_types := ARRAY(SELECT jsonb_array_elements_text(item -> 'types'));
            i_tags := ARRAY(SELECT jsonb_array_elements_text(item -> 'tags'));
            IF cardinality(i_tags) > 0 THEN
                SELECT t.position INTO x FROM {s}.tags t JOIN {s}.events e ON e.position = t.position
                    WHERE t.tag = i_tags[1] AND t.position > coalesce(p_after, 0) AND e.tags @> i_tags
                      AND (cardinality(i_types) = 0 OR e.type = ANY(i_types))
                    ORDER BY t.position LIMIT 1;
            ELSIF cardinality(i_types) > 0 THEN
                SELECT min(e.position) INTO x FROM {s}.events e
                    WHERE e.type = ANY(i_types) AND e.position > coalesce(p_after, 0);
            ELSE
                x := coalesce(p_after, 0) + 1;  -- an item with neither matches every event
            END IF;
            IF x IS NOT NULL AND (hit IS NULL OR x < hit) THEN
                hit := x;
            END IF;
        END LOOP;
        IF hit IS NOT NULL THEN
            RETURN QUERY SELECT 'conflict'::text, hit, NULL::text; RETURN;
        END IF;
    END IF;
    chains := ARRAY[]::bytea[];
    FOR k IN 1..n LOOP
        c := sha256(c || p_hashes[k]);
        chains := chains || c;
    END LOOP;
    -- The batch's commit time: now, never earlier than the last one (commit times never decrease).
    t := greatest((extract(epoch FROM clock_timestamp()) * 1000000)::bigint, t);
    INSERT INTO {s}.events (position, id, type, tags, body, event_hash, chain, commit, commit_us)
        SELECT h + u.ord, u.id, u.type, coalesce(g.tags, ARRAY[]::text[]), u.body, u.hash, u.chain, u.ord = n, t
        FROM unnest(p_ids, p_types, p_bodies, p_hashes, chains) WITH ORDINALITY AS u(id, type, body, hash, chain, ord)
        LEFT JOIN (SELECT x.ev, array_agg(x.tag ORDER BY x.ord) AS tags
                   FROM unnest(p_tag_of, p_tags) WITH ORDINALITY AS x(ev, tag, ord) GROUP BY x.ev) g ON g.ev = u.ord;
    INSERT INTO {s}.tags (tag, position)
        SELECT DISTINCT x.tag, h + x.ev FROM unnest(p_tag_of, p_tags) AS x(ev, tag);
    UPDATE {s}.head SET position = h + n, chain = c, commit_us = t;
    PERFORM pg_notify(p_channel, (h + n)::text);
    RETURN QUERY SELECT 'ok'::text, h + n, NULL::text;
END
$fn$;
"""
# Stored in meta as append_fn: a store made by another release of the function gets this one.
FUNCTION_DIGEST = hashlib.sha256(_FUNCTION.encode()).hexdigest()[:16]

_VIEW = """
CREATE OR REPLACE VIEW {s}.events_json AS
    SELECT position, id, type, tags, (convert_from(body, 'UTF8')::jsonb) -> 'data' AS data,
           (convert_from(body, 'UTF8')::jsonb) -> 'metadata' AS metadata, event_hash, chain, commit,
           CASE WHEN commit_us > 0 THEN to_timestamp(commit_us / 1000000.0) END AS committed_at
    FROM {s}.events;
"""

_DDL = """
CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.head (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    position bigint NOT NULL,
    chain bytea NOT NULL,
    commit_us bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS {s}.events (
    position bigint PRIMARY KEY CHECK (position > 0),
    id text NOT NULL UNIQUE,
    type text NOT NULL,
    tags text[] NOT NULL,
    body bytea NOT NULL,
    event_hash bytea NOT NULL,
    chain bytea NOT NULL,
    commit boolean NOT NULL,
    commit_us bigint NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS events_type ON {s}.events (type, position);
CREATE TABLE IF NOT EXISTS {s}.tags (tag text NOT NULL, position bigint NOT NULL, PRIMARY KEY (tag, position));
CREATE TABLE IF NOT EXISTS {s}.synced (slot integer PRIMARY KEY, position bigint NOT NULL);
INSERT INTO {s}.head (one, position, chain) VALUES (true, 0, decode(repeat('00', 32), 'hex'))
    ON CONFLICT DO NOTHING;
""" + _VIEW

# Version 1 to 2: commit times (0: unknown, as the file store's version 1 records say).
_UPGRADE_1 = """
ALTER TABLE {s}.head ADD COLUMN IF NOT EXISTS commit_us bigint NOT NULL DEFAULT 0;
ALTER TABLE {s}.events ADD COLUMN IF NOT EXISTS commit_us bigint NOT NULL DEFAULT 0;
DROP VIEW IF EXISTS {s}.events_json;
""" + _VIEW


def ensure(conn: Any, schema: str, shown: str, create: bool = True, max_event_bytes: int | None = None) -> int | None:
    """Check the schema's version (upgrading an older one); create the tables when the schema is
    new or empty (recording ``max_event_bytes``). Return the store's ``max_event_bytes`` (None
    for a store that never recorded one).

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
            meta = dict(conn.execute(sql.SQL("SELECT key, value FROM {}.meta").format(s)).fetchall())
            raw = meta.get("version", "")
            version = int(raw) if raw.isdigit() else None
            if version is None:
                raise SchemaMismatch(f"schema {schema} of {shown} has a meta table without a kroniko version; "
                                     "it is not a kroniko store: choose another ?schema=")
            if version > VERSION:
                raise SchemaMismatch(f"schema {schema} of {shown} holds a kroniko store of version {version}, newer "
                                     f"than this kroniko-ops understands ({VERSION}); upgrade kroniko-ops")
            if version < VERSION:
                conn.execute(sql.SQL(_UPGRADE_1).format(s=s))
                conn.execute(sql.SQL("UPDATE {}.meta SET value = %s WHERE key = 'version'").format(s), (str(VERSION),))
            if meta.get("append_fn") != FUNCTION_DIGEST or version < VERSION:
                _install_function(conn, s)
            raw_max = meta.get("max_event_bytes", "")
            return int(raw_max) if raw_max.isdigit() else None
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
        if max_event_bytes is not None:
            conn.execute(sql.SQL("INSERT INTO {}.meta VALUES ('max_event_bytes', %s)").format(s),
                         (str(int(max_event_bytes)),))
        _install_function(conn, s)
        return max_event_bytes


def _install_function(conn: Any, s: sql.Identifier) -> None:
    """Create or replace the ``append`` function and record which one is installed."""
    conn.execute(sql.SQL(_FUNCTION).format(s=s))
    conn.execute(sql.SQL("INSERT INTO {}.meta VALUES ('append_fn', %s) ON CONFLICT (key) DO UPDATE SET value = "
                         "excluded.value").format(s), (FUNCTION_DIGEST,))


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema's store: within PostgreSQL's 63-byte identifiers
    (a long schema name is shortened with a hash, the same on every side)."""
    name = f"kroniko_{schema}"
    return name if len(name) <= 63 else f"kroniko_{schema[:38]}_{hashlib.sha256(schema.encode()).hexdigest()[:16]}"
