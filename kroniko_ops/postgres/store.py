"""The DCB event store on PostgreSQL: the same API and contract as :class:`~kroniko_ops.EventStore`.

Locking (``docs/POSTGRES.md``): every append runs one transaction (one call of the schema's
``append`` function) that first locks the single row of ``head`` with ``SELECT ... FOR UPDATE``.
Writers on any connection or process therefore commit one after the other; the row holds the
last position and chain, so positions are gap-free (a rolled-back or killed writer changes
nothing; no sequence is involved) and the id and condition checks see everything committed
before. The row lock is released by the commit itself.

Group commit, as the file store does it (write under the lock, fsync after it): the append's
transaction commits with ``synchronous_commit = off``, so the lock is released without waiting
for the WAL flush; the writer then makes it durable by committing a small synchronous
transaction (an upsert of its row in ``synced``), whose flush covers every earlier commit record.
Writers waiting on one flush share it. Readers see events up to the largest ``synced`` position:
only durable ones (a reader finding the head past it, say after a writer died between its two
commits, makes the head durable itself). Conditions are checked against every committed event,
and a conflict is raised only once the conflicting event is durable, so the caller can read it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.types.json import Jsonb

from ..codec import DEFAULT_MAX_EVENT_BYTES, decode_run, encode_event
from ..errors import AppendConditionFailed, InvalidArgument, InvalidEvent, StoreLocked
from ..model import AppendCondition, Event, Query, SequencedEvent, read_arguments, read_bounds
from . import schema as pgschema
from .copying import Row, copy_rows
from .errors import CommitUnknown, ServerUnavailable
from .query import check_query, check_text, select
from .url import parse, scrub

PAGE = 512  # rows one keyset page fetches at most
PRUNE_EVERY = 1000  # synchronous commits between two prunings of the synced table


def connect(url: str, password: str | None, shown: str, **kwargs: Any) -> psycopg.Connection:
    """A connection, or :class:`ServerUnavailable` naming the server without its password."""
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.Error as exc:
        raise ServerUnavailable(f"cannot connect to {shown}: {scrub(str(exc).strip(), password)}") from None


class PgReadResult:
    """The events of one read for the head fixed when it started (``.head``); re-iterable."""

    def __init__(self, store: PostgresEventStore, query: Query, lo: int, hi: int, backwards: bool,
                 limit: int | None, head: int) -> None:
        self.head = head
        self._args = (store, query, lo, hi, backwards, limit)

    def __iter__(self) -> Iterator[SequencedEvent]:
        store, query, lo, hi, backwards, limit = self._args
        return store._iter(query, lo, hi, backwards, limit)


class PostgresEventStore:
    """A DCB event store in a PostgreSQL database (schema created on first use).

    ``url`` is ``postgresql://user:password@host:port/database`` (``?schema=NAME`` picks the
    PostgreSQL schema, ``kroniko`` by default). ``durable=False`` turns ``synchronous_commit`` off
    for this connection (tests and bulk loads only). ``lock_timeout`` bounds the wait for the
    writers' lock (:class:`StoreLocked` after it).
    """

    def __init__(self, url: str, *, durable: bool = True, create: bool = True, lock_timeout: float = 30.0,
                 max_event_bytes: int | None = None, schema: str | None = None) -> None:
        parsed = parse(url, schema)
        self.url, self.path, self.schema = parsed.shown, parsed.shown, parsed.schema
        self._conninfo, self._password = parsed.conninfo, parsed.password
        self.durable = durable
        self.lock_timeout = lock_timeout
        self._mutex = threading.RLock()
        self._pid = os.getpid()
        self._syncs = 0  # synchronous commits of this handle (the synced table is pruned now and then)
        self._conn = self._connect()
        try:
            stored = pgschema.ensure(self._conn, self.schema, self.url, create,
                                     max_event_bytes or DEFAULT_MAX_EVENT_BYTES)
            # As the file store: the handle's limit if given, else the one fixed at creation.
            self.max_event_bytes = max_event_bytes or stored or DEFAULT_MAX_EVENT_BYTES
        except psycopg.Error as exc:
            self._conn.close()
            raise ServerUnavailable(f"preparing {self.url}: {scrub(str(exc), self._password)}") from None
        except BaseException:
            self._conn.close()
            raise
        s = sql.Identifier(self.schema)
        self._t = {name: sql.SQL("{}.{}").format(s, sql.Identifier(name)) for name in pgschema.TABLES}
        self.channel = pgschema.channel_name(self.schema)
        # Called inside an append's transaction just before COMMIT (the harness kills there).
        self.before_commit: Callable[[], None] | None = None

    def _connect(self) -> psycopg.Connection:
        conn = connect(self._conninfo, self._password, self.url, autocommit=True)
        # Appends commit without waiting for the WAL flush (see the module's docstring: _sync
        # waits for it, outside the head lock); lock_timeout bounds the wait for that lock.
        # Read committed whatever the database's default: the head row's lock must make a writer
        # wait for the one before, never fail it with a serialization error.
        conn.execute(f"SET synchronous_commit = off; SET lock_timeout = '{max(1, int(self.lock_timeout * 1000))}ms'; "
                     "SET default_transaction_isolation = 'read committed'")
        return conn

    # -- life cycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (a forked child that never used the handle leaves the parent's
        connection alone: see :meth:`_forked`)."""
        if self._pid != os.getpid():
            return
        with self._mutex:
            if not self._conn.closed and not self._conn.broken:
                try:
                    self._prune()
                except psycopg.Error:
                    pass  # housekeeping only: the next handle prunes
            self._conn.close()

    def _prune(self) -> None:
        """Delete the ``synced`` rows below the largest (readers take the largest, so the others
        say nothing more; without this every connection ever made would leave a row). Rows
        another writer is updating right now are skipped, never waited for."""
        t = self._t["synced"]
        self._conn.execute(sql.SQL("DELETE FROM {} WHERE slot IN (SELECT slot FROM {} WHERE position < "
                                   "(SELECT max(position) FROM {}) FOR UPDATE SKIP LOCKED)").format(t, t, t))

    def _forked(self) -> bool:
        """In a child forked after this handle connected: the connection it holds is the
        parent's (one socket, one server session). Using it would mix both processes'
        statements and results; closing it would end the parent's session (libpq says goodbye
        on the socket). So the child drops it unclosed (psycopg never finishes a connection in
        a process that did not open it) and connects anew on first use."""
        if self._pid == os.getpid():
            return False
        self._pid = os.getpid()
        self._mutex = threading.RLock()  # another thread of the parent may have held it at fork
        self._conn = self._connect()
        return True

    def __enter__(self) -> PostgresEventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresEventStore({self.url!r}, schema={self.schema!r})"

    def _live(self) -> psycopg.Connection:
        """The connection, opened again when the last one broke (a server restart, a network cut)
        or when this process is a fork of the one that opened it."""
        if self._forked():
            return self._conn
        if self._conn.broken:
            self._conn.close()
            self._conn = self._connect()
        elif self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._conn.rollback()  # a multi-statement call cut short left its transaction open
        return self._conn

    def table(self, name: str) -> sql.Composed:
        """The qualified name of one of the store's tables (for the tools' own SQL)."""
        return self._t[name]

    def connection(self) -> psycopg.Connection:
        """The store's connection (autocommit; the tools open their own transactions on it)."""
        return self._live()

    def _run(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        with self._mutex:
            try:
                return self._live().execute(query, params).fetchall()
            except psycopg.OperationalError as exc:
                raise ServerUnavailable(f"{self.url}: {scrub(str(exc), self._password)}") from None

    # -- reading ---------------------------------------------------------------------------

    def head(self) -> int:
        """The last durable committed position (0 when the store is empty): what reads see."""
        head, synced = self._run(sql.SQL("SELECT h.position, (SELECT coalesce(max(position), 0) FROM {}) "
                                         "FROM {} h").format(self._t["synced"], self._t["head"]))[0]
        if synced < head:
            # A writer is flushing, or died before it could: make it durable (always with a
            # synchronous commit, whatever this handle's ``durable``: others read what it marks).
            self._sync(int(head), durable=True)
        return int(head)

    def _sync(self, position: int, durable: bool | None = None) -> None:
        """Make every commit up to ``position`` durable and visible to readers: a synchronous
        commit of this connection's ``synced`` row (its WAL flush covers all commits before).
        ``durable=False`` (the handle's, after its own appends) skips the wait for the flush."""
        # One round trip (a simple query of several statements); the position is an int we made.
        on = "on" if (self.durable if durable is None else durable) else "off"
        with self._mutex:
            try:
                self._live().execute(sql.SQL(
                    "BEGIN; SET LOCAL synchronous_commit = {}; INSERT INTO {} AS s (slot, position) VALUES "
                    "(pg_backend_pid(), {}) ON CONFLICT (slot) DO UPDATE SET position = greatest(s.position, "
                    "excluded.position); COMMIT").format(sql.SQL(on), self._t["synced"], sql.Literal(int(position))))
            except psycopg.Error as exc:
                self._abandon()
                raise CommitUnknown(f"{self.url}: {scrub(str(exc), self._password)}; an append may or may not be "
                                    "durable: retry it with the same ids") from None
            self._syncs += 1
            if self._syncs % PRUNE_EVERY == 0:
                try:
                    self._prune()
                except psycopg.Error:
                    self._abandon()  # housekeeping only: the append is durable either way

    def _abandon(self) -> None:
        """Leave no transaction open after a failed call (the next call would fail on it)."""
        try:
            if not self._conn.broken and self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self._conn.rollback()
        except psycopg.Error:
            pass  # broken now: _live opens a new connection

    def head_chain(self) -> tuple[int, bytes]:
        """The last committed position and its chain hash (for the tools: durable or not)."""
        pos, chain = self._run(sql.SQL("SELECT position, chain FROM {}").format(self._t["head"]))[0]
        return int(pos), bytes(chain)

    def read(self, query: Query | None = None, *, start: int | None = None, backwards: bool = False,
             limit: int | None = None) -> PgReadResult:
        """Events matching ``query`` (all when None) up to the head as of now (``.head``);
        ``start`` inclusive (a maximum going backwards), ``limit`` caps the count. Pages of
        :data:`PAGE` rows are fetched by position (keyset), never the whole result at once."""
        query = read_arguments(query, start, limit)
        check_query(query)
        head = self.head()
        lo, hi = read_bounds(head, start, backwards)
        return PgReadResult(self, query, lo, hi, backwards, limit, head)

    def _select(self, query: Query, lo: int, hi: int, backwards: bool, limit: int,
                columns: str = "e.position, e.body") -> tuple[Any, list[Any]]:
        return select(self._t["events"], self._t["tags"], query, lo, hi, backwards, limit, columns)

    def _iter(self, query: Query, lo: int, hi: int, backwards: bool, limit: int | None) -> Iterator[SequencedEvent]:
        left = limit
        size = 16  # grows to PAGE: a read stopped early (limit=1) fetches little
        while lo <= hi and (left is None or left > 0):
            want = size if left is None else min(size, left)
            size = min(size * 4, PAGE)
            rows = self._run(*self._select(query, lo, hi, backwards, want,
                                           "e.position, e.body, e.commit, e.commit_us"))
            for pos, body, commit, commit_us in rows:
                yield from decode_run(pos, [bytes(body)], self.url, [(0, commit_us, commit)])
            if left is not None:
                left -= len(rows)
            if len(rows) < want:
                return
            if backwards:
                hi = rows[-1][0] - 1
            else:
                lo = rows[-1][0] + 1

    def rows(self, lo: int, hi: int) -> Iterator[Row]:
        """The stored rows of positions ``lo..hi`` in order (for the tools)."""
        while lo <= hi:
            got = self._run(sql.SQL("SELECT position, id, body, event_hash, chain, commit, commit_us FROM {} WHERE "
                                    "position BETWEEN %s AND %s ORDER BY position LIMIT %s").format(self._t["events"]),
                            (lo, hi, PAGE * 4))
            if not got:
                return
            for pos, eid, body, h, chain, commit, commit_us in got:
                yield Row(pos, eid, bytes(body), bytes(h), bytes(chain), commit, commit_us)
            lo = got[-1][0] + 1

    def records(self, lo: int, hi: int) -> Iterator[Row]:
        """The stored rows of ``lo..hi`` (the harness reads the log through this, as it does
        :meth:`kroniko_ops.EventStore.records`)."""
        return self.rows(lo, hi)

    def subscribe(self, query: Query | None = None, *, after: int = 0, wait: float = 1.0,
                  poll_interval: float | None = None, max_interval: float | None = None) -> Iterator[SequencedEvent]:
        """Yield matching events after ``after``, then wait for new ones (woken by
        ``LISTEN/NOTIFY``, re-checking every ``wait`` seconds anyway), forever. Close the
        generator to stop; it holds a connection of its own for the notifications.
        ``max_interval`` (the file store's keyword) sets ``wait``; ``poll_interval`` is accepted
        for the same API and unused: notifications wake the subscriber."""
        wait = max_interval if max_interval is not None else wait
        listen = self._connect()
        try:
            listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            pos = after
            while True:
                result = self.read(query, start=pos + 1)
                yield from result
                pos = max(pos, result.head)
                while self.head() <= pos:
                    for _ in listen.notifies(timeout=wait, stop_after=1):
                        pass
        finally:
            listen.close()

    # -- appending -------------------------------------------------------------------------

    def append(self, events: Event | Iterable[Event], condition: AppendCondition | None = None) -> int:
        """Append one event or a batch atomically; return the last position written.

        Raises :class:`AppendConditionFailed`, :class:`InvalidEvent` (nothing written; also for
        an id committed before other than in an exact retry of its batch), :class:`StoreLocked`.
        """
        batch = [events] if isinstance(events, Event) else list(events)
        if not batch:
            raise InvalidEvent("an append needs at least one event; the batch is empty")
        if condition is not None and not isinstance(condition, AppendCondition):
            raise InvalidArgument("condition must be an AppendCondition or None")
        encoded = [encode_event(e, self.max_event_bytes) for e in batch]
        for e in batch:
            check_text(e.type, "event type", InvalidEvent)
            for tag in e.tags:
                check_text(tag, "tag", InvalidEvent)
        if condition is not None:
            check_query(condition.fail_if_events_match)
        ids = [eid for eid, _ in encoded]
        if len(set(ids)) != len(ids):
            raise InvalidEvent("the batch holds the same event id twice")
        explicit = any(e.id is not None for e in batch)
        hashes = [hashlib.sha256(raw).digest() for _, raw in encoded]
        with self._mutex:
            try:
                self._live()
                try:
                    done = self._commit(batch, encoded, ids, hashes, explicit, condition)
                except AppendConditionFailed:
                    try:
                        self._sync(self.head_chain()[0], durable=True)  # the conflict is durable before we say so
                    except (CommitUnknown, ServerUnavailable):
                        pass  # nothing of ours was written either way: the rejection stands
                    raise
                self._sync(done)  # the acknowledgement waits for the WAL flush (shared with other writers)
                return done
            except pgerrors.LockNotAvailable:
                raise StoreLocked(f"the writers' lock of {self.url} was not free within {self.lock_timeout}s") from None
            except pgerrors.UniqueViolation as exc:  # only a writer bypassing the head lock gets here
                detail = exc.diag.message_detail
                raise InvalidEvent(f"an event id of the batch is already committed ({detail})") from None
            except psycopg.OperationalError as exc:
                raise CommitUnknown(f"appending to {self.url}: {scrub(str(exc), self._password)}; the append "
                                    "may or may not be committed: retry it with the same ids") from None

    def _commit(self, batch: list[Event], encoded: list[tuple[str, bytes]], ids: list[str], hashes: list[bytes],
                explicit: bool, condition: AppendCondition | None) -> int:
        """One call of the schema's ``append`` function: lock, id and condition checks, insert and
        head update on the server, so the head lock is held for one statement, not a round trip
        per step."""
        conn = self._conn
        tag_of = [i + 1 for i, e in enumerate(batch) for _ in e.tags]
        tags = [t for e in batch for t in e.tags]
        items = None
        after = condition.after or 0 if condition is not None else 0
        if condition is not None:
            items = Jsonb([{"types": list(i.types), "tags": list(i.tags)}
                           for i in condition.fail_if_events_match.items] or [{"types": [], "tags": []}])
        call = sql.SQL("SELECT status, pos, detail FROM {}.append(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)").format(
            sql.Identifier(self.schema))
        args = (ids, [e.type for e in batch], [raw for _, raw in encoded], hashes, tag_of, tags, explicit, after,
                items, self.channel)
        if self.before_commit is None:
            status, pos, detail = conn.execute(call, args).fetchone()  # autocommit: its own transaction
        else:
            with conn.transaction():
                status, pos, detail = conn.execute(call, args).fetchone()
                self.before_commit()  # the harness SIGKILLs its own process here: mid-append, lock held
        if status == "conflict":
            raise AppendConditionFailed(int(pos))
        if status == "reused":
            raise InvalidEvent(f"event id {detail} is already committed at position {pos}; a retry must repeat the "
                               "whole batch in order, anything else needs new ids")
        return int(pos)

    # -- for the tools ---------------------------------------------------------------------

    def import_rows(self, rows: Iterable[Row], expect_head: int | None = None) -> int:
        """Append rows copied from another store verbatim (positions, ids, bodies, hashes, chain
        and batch marks) in one transaction under the writers' lock, streamed; they must continue
        the head exactly (and the head must be ``expect_head`` when given), else nothing is
        written (:class:`InvalidArgument`). Returns the new head."""
        with self._mutex:
            try:
                head = copy_rows(self, rows, expect_head)
            except pgerrors.LockNotAvailable:
                raise StoreLocked(f"the writers' lock of {self.url} was not free within {self.lock_timeout}s; "
                                  "nothing was copied") from None
            except psycopg.OperationalError as exc:
                raise ServerUnavailable(f"copying into {self.url}: {scrub(str(exc), self._password)}; nothing "
                                        "was copied (one transaction)") from None
        self._sync(head, durable=True)
        return head
