"""``fsck`` of a PostgreSQL store: the file fsck's invariants, checked in the database.

Read-only, and safe while writers append: everything is read in one ``REPEATABLE READ``
transaction, a snapshot in which the head row and the events agree. The finding codes and
exit bits are the file fsck's (``docs/FSCK.md``, ``docs/POSTGRES.md``):

- ``segment-gap``: positions 1..head missing from ``events`` (the file fsck's "held by no file");
- ``synced-ahead`` / ``log-uncommitted-tail`` / ``synced-mismatch``: the head row names a
  position past the last event, events lie past the head row, or its chain differs;
- ``log-position-mismatch``: an event past the head row's end of a batch without a commit mark;
- ``event-hash-mismatch``, ``chain-mismatch``, ``event-unreadable`` (the body is no event, or its
  id, type or tags differ from the row's columns): full level only;
- ``index-missing-entry`` / ``index-extra-entry``: the ``tags`` table against the events' tags;
- ``dangling-reference``: as in the file fsck (``metadata.causation_id`` and each ``ref_fields``
  path, such as ``metadata.correlation_id``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from psycopg import sql

from ...codec import decode_event
from ...errors import InvalidArgument
from ...format.record import GENESIS, chain_of
from ...postgres.store import PostgresEventStore
from ...report import Report
from ..fsck.refs import parse_fields

MAX_PER_CODE = 10_000  # as the file fsck: a badly damaged store must not make the report grow with it
PAGE = 4096


class _Findings:
    """The report plus the file fsck's caps (per code, and ``max_errors`` problems in all)."""

    def __init__(self, report: Report, max_errors: int | None) -> None:
        self.report, self.max_errors = report, max_errors
        self.per_code: dict[str, int] = {}
        self.stopped = False

    def add(self, code: str, where: str, message: str, position: int | None = None,
            severity: str = "error") -> None:
        if self.stopped or self.per_code.get(code, 0) >= MAX_PER_CODE:
            return
        self.per_code[code] = self.per_code.get(code, 0) + 1
        self.report.add(code, severity, where, message, position)
        if self.max_errors is not None and len(self.report.problems) >= self.max_errors:
            self.stopped = True
            self.report.add("stopped", "info", "", f"stopped after {self.max_errors} problem(s) (--max-errors)")


def fsck(url: str, *, quick: bool = False, max_errors: int | None = None, ref_fields: Sequence[str] = (),
         refs_only: bool = False) -> Report:
    """Check the PostgreSQL store at ``url``; return a report (exit 0 clean, 4 problems remain).

    Raises :class:`~kroniko_ops.errors.StoreNotFound` (exit 8) when the database holds no store,
    :class:`~kroniko_ops.postgres.errors.SchemaMismatch` (exit 2) for another schema.
    """
    if max_errors is not None and (isinstance(max_errors, bool) or max_errors < 1):
        raise InvalidArgument(f"max_errors must be a positive number, got {max_errors!r}")
    fields = parse_fields(ref_fields)
    with PostgresEventStore(url, create=False, durable=False) as store:
        report = Report("fsck", store.url)
        found = _Findings(report, max_errors)
        conn = store.connection()
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            top = sql.SQL("SELECT position, chain FROM {}").format(store.table("head"))
            head, head_chain = conn.execute(top).fetchone()
            report.head = head
            if not refs_only:
                _check_positions(store, conn, head, bytes(head_chain), found, full=not quick)
                _check_tags(store, conn, found)
            if not quick or refs_only:
                _check_refs(store, conn, fields, found)
        report.figures.update(level="refs" if refs_only else "quick" if quick else "full", events_checked=head)
    return report.finish()


def _check_positions(store: PostgresEventStore, conn: Any, head: int, head_chain: bytes, found: _Findings,
                     full: bool) -> None:
    """Positions gap-free and matching the head row; in full, each event's hash, chain and body."""
    t = store.table("events")
    top = conn.execute(sql.SQL("SELECT max(position), count(*) FROM {}").format(t)).fetchone()
    last, count = int(top[0] or 0), int(top[1])
    if last > head:
        found.add("log-uncommitted-tail", "events", f"events lie past the head row ({head}): positions up to "
                  f"{last}", head + 1)
    if count != last:
        # Name each missing run, in SQL: no position list in memory.
        gaps = conn.execute(sql.SQL(
            "SELECT prev + 1, position - 1 FROM (SELECT position, coalesce(lag(position) OVER (ORDER BY position), 0) "
            "AS prev FROM {}) g WHERE position > prev + 1 ORDER BY position LIMIT %s").format(t), (MAX_PER_CODE,))
        for lo, hi in gaps:
            found.add("segment-gap", "events", f"positions {lo}..{hi} are missing from the events table", lo)
    if last < head:
        found.add("synced-ahead", "head", f"the head row names position {head} but the last event is at {last}: "
                  "acknowledged events are gone", head)
    if not full:
        if last == head and head:
            one = sql.SQL("SELECT chain, commit FROM {} WHERE position = %s").format(t)
            row = conn.execute(one, (head,)).fetchone()
            _check_head(found, head, head_chain, bytes(row[0]), row[1])
        return
    chain, expected, commit = GENESIS, 1, True
    q = sql.SQL("SELECT position, id, type, tags, body, event_hash, chain, commit FROM {} WHERE position >= %s "
                "ORDER BY position LIMIT %s").format(t)
    while not found.stopped:
        rows = conn.execute(q, (expected, PAGE)).fetchall()
        for pos, eid, type_, tags, body, h, ch, mark in rows:
            body, h, ch, commit = bytes(body), bytes(h), bytes(ch), mark
            if pos != expected:  # a gap, reported above: the chain starts again from the row's own
                chain = ch
            else:
                chain = chain_of(chain, h)
                if chain != ch:
                    found.add("chain-mismatch", "events", f"the chain hash at {pos} does not follow from the "
                              "previous event's", pos)
                    chain = ch
            if hashlib.sha256(body).digest() != h:
                found.add("event-hash-mismatch", "events", f"the body at {pos} differs from its SHA-256", pos)
            _check_body(found, pos, eid, type_, tags, body)
            expected = pos + 1
        if len(rows) < PAGE:
            break
    if last == head and head and not found.stopped:
        _check_head(found, head, head_chain, chain, commit)


def _check_head(found: _Findings, head: int, head_chain: bytes, chain: bytes, commit: bool) -> None:
    if head_chain != chain:
        found.add("synced-mismatch", "head", f"the head row's chain differs from the event's at {head}", head)
    if not commit:
        found.add("log-uncommitted-tail", "events", f"the event at {head} ends no batch (no commit mark)", head)


def _check_body(found: _Findings, pos: int, eid: str, type_: str, tags: list[str], body: bytes) -> None:
    try:
        event = decode_event(body)
    except ValueError as exc:
        found.add("event-unreadable", "events", f"the body at {pos} is not an event: {exc}", pos)
        return
    if (event.id, event.type, list(event.tags)) != (eid, type_, list(tags)):
        found.add("event-unreadable", "events", f"the id, type or tags columns at {pos} differ from its body", pos)


def _check_tags(store: PostgresEventStore, conn: Any, found: _Findings) -> None:
    """The tag lookup table against the events' own tags, both ways, in SQL."""
    ev, tg = store.table("events"), store.table("tags")
    implied = sql.SQL("SELECT DISTINCT u.tag, e.position FROM {} e, unnest(e.tags) AS u(tag)").format(ev)
    missing = sql.SQL("SELECT tag, position FROM ({}) i EXCEPT SELECT tag, position FROM {} "
                      "ORDER BY 2 LIMIT %s").format(implied, tg)
    for tag, pos in conn.execute(missing, (MAX_PER_CODE,)):
        found.add("index-missing-entry", "tags", f"the tag row ({tag!r}, {pos}) the event implies is missing", pos)
    extra = sql.SQL("SELECT tag, position FROM {} EXCEPT SELECT tag, position FROM ({}) i "
                    "ORDER BY 2 LIMIT %s").format(tg, implied)
    for tag, pos in conn.execute(extra, (MAX_PER_CODE,)):
        found.add("index-extra-entry", "tags", f"the tag row ({tag!r}, {pos}) matches no event's tags", pos)


def _check_refs(store: PostgresEventStore, conn: Any, fields: list[tuple[str, tuple[str, ...]]],
                found: _Findings) -> None:
    """References to an id absent from the store or at a later position (a warning)."""
    ev = store.table("events")
    q = sql.SQL(
        "SELECT r.src, r.target, d.position FROM ("
        " SELECT e.position AS src, CASE jsonb_typeof(x.v) WHEN 'string' THEN x.v #>> '{{}}' END AS one, x.v"
        " FROM {ev} e, LATERAL (SELECT convert_from(e.body, 'UTF8')::jsonb #> %s::text[] AS v) x"
        " WHERE jsonb_typeof(x.v) IN ('string', 'array')) s,"
        " LATERAL (SELECT s.src, t AS target FROM (SELECT s.one AS t WHERE s.one IS NOT NULL UNION ALL"
        "  SELECT a #>> '{{}}' FROM jsonb_array_elements(CASE WHEN jsonb_typeof(s.v) = 'array' THEN s.v"
        "  ELSE '[]'::jsonb END) a WHERE jsonb_typeof(a) = 'string') tt) r"
        " LEFT JOIN {ev} d ON d.id = r.target"
        " WHERE d.position IS NULL OR d.position > r.src ORDER BY r.src LIMIT %s").format(ev=ev)
    count = 0
    for path, keys in fields:
        for src, target, at in conn.execute(q, (list(keys), MAX_PER_CODE)):
            count += 1
            where = "is in no event of the store" if at is None else f"is the id of a later event (position {at})"
            found.add("dangling-reference", "events", f"the event at position {src} names {target!r} in {path}, "
                      f"which {where}", src, severity="warning")
    found.report.figures["dangling_references"] = count
