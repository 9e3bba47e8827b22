"""The derived index: one SQLite database (WAL, ``synchronous=NORMAL``) mapping types, tags and
ids to positions, with the checkpoint (position and chain hash it is valid up to) updated in the
same transaction as its rows. Never fsynced on the commit path; always checked against the log.

Databases are ``index/<generation>.sqlite3``; the highest generation is the current one. A
rebuild writes generation N+1 beside N and then removes N, so a process still holding N reads a
consistent (if old) database and notices N+1 before it next writes (:meth:`Index.stale`).
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from . import fileio
from .errors import NothingWritten
from .format.record import GENESIS
from .indexdb import connect, create_db, db_name, generations, may_write, open_read_only
from .model import Query

Entry = tuple[int, str, str, Sequence[str]]  # position, id, type, tags
T = TypeVar("T")
TYPE, TAG = 0, 1
PAGE = 4096  # positions fetched per query page: a huge tag never sits in memory whole
TERM_CACHE = 200_000  # term ids a handle remembers (cleared beyond: they are looked up again in bulk)
MAX_COMPOUND = 400  # terms per compound SELECT (SQLite refuses more than 500)


def _using(method: Callable[..., T]) -> Callable[..., T]:
    """Run ``method`` holding the index's connection lock (see :meth:`Index.suspend`)."""
    @functools.wraps(method)
    def held(self: Index, *args: Any, **kwargs: Any) -> T:
        with self._use:
            return method(self, *args, **kwargs)
    return held


class Index:
    """One handle's connection to the current index generation of a store."""

    def __init__(self, folder: str) -> None:
        # Held around every use of the connection: a fork closes it (see :meth:`suspend`) and must
        # never do so under a query of another thread. Kept when the connection is reopened.
        self.__dict__.setdefault("_use", threading.RLock())
        self.folder = folder
        gens = generations(folder)
        self.generation = gens[-1] if gens else 1
        self.path = os.path.join(folder, db_name(self.generation))
        if not gens:
            try:
                fileio.makedirs(folder)  # derived data: a deleted index folder is made again, then caught up
            except PermissionError:
                pass  # a user who may not write the store: it reads without an index (below)
        try:
            self.con = create_db(self.path) if not gens else connect(self.path)
            if gens and self.con.execute("SELECT 1 FROM sqlite_master WHERE name = 'checkpoint'").fetchone() is None:
                # Another process created the file a moment ago and has not run the schema yet; it
                # is idempotent, so run it here too rather than read a database without tables.
                self.con.close()
                self.con = create_db(self.path)
        except sqlite3.DatabaseError as exc:
            if not may_write(self.path):
                # A user who may read the store but not write it (or a full disk): read the
                # index read-only, or, where SQLite cannot (a WAL database needs to write its
                # -shm unless a writer has it open), answer from the log alone (checkpoint 0).
                self.con, self.read_only = open_read_only(self.path), True
                self._terms = {}
                self._next = os.path.join(folder, db_name(self.generation + 1))
                return
            if isinstance(exc, sqlite3.OperationalError):  # busy, locked, I/O: not damage
                raise
            # Not a database any more (damaged): derived data, so start the next generation
            # empty; the writer catches it up from the log, and reindex removes the old one.
            self.generation += 1
            self.path = os.path.join(folder, db_name(self.generation))
            self.con = create_db(self.path)
        self._terms: dict[tuple[int, str], int] = {}
        self._next = os.path.join(folder, db_name(self.generation + 1))  # checked on every read

    _complete = False  # whether ``_terms`` holds every term of the database (see :meth:`at`)
    read_only = False  # opened by a user who may not write the index (see :func:`open_read_only`)
    _conn: sqlite3.Connection | None = None
    _use: threading.RLock  # see __init__

    @property
    def con(self) -> sqlite3.Connection:
        """The connection; opened again on first use after :meth:`suspend`."""
        con = self._conn
        if con is None:
            with self._use:
                if self._conn is None:
                    if self.generation == 0:  # a rebuild's database (see :meth:`at`), not a generation
                        self._conn = connect(self.path)
                    else:
                        self.__init__(self.folder)  # type: ignore[misc]
                con = self._conn
                assert con is not None
        return con

    @con.setter
    def con(self, value: sqlite3.Connection) -> None:
        self._conn = value

    def suspend(self) -> None:
        """Close the connection until its next use. Before ``fork()``: SQLite keeps per-process
        lock state that a child inherits, so a connection the child opens beside an inherited
        one takes no real locks, and the parent's last close then deletes the WAL under it."""
        with self._use:
            con, self._conn = self._conn, None
            if con is not None:
                con.close()

    @classmethod
    def at(cls, path: str) -> Index:
        """A handle on the database at ``path`` that a rebuild is writing (a temp name in the
        index folder, not a generation: never :meth:`stale`); created empty when missing."""
        self = cls.__new__(cls)
        self._use = threading.RLock()
        self.folder, self.generation, self.path = os.path.dirname(path), 0, path
        self._complete = not os.path.exists(path)  # the cache holds every term of a database it creates
        self.con = create_db(path) if self._complete else connect(path)
        self._terms = {}
        self._next = os.path.join(self.folder, db_name(0))  # generations start at 1: never there
        return self

    def close(self) -> None:
        """Close the connection."""
        self.suspend()

    def stale(self) -> bool:
        """Whether a rebuild has published a newer generation (reopen before writing)."""
        return os.path.exists(self._next)

    def reopen(self) -> None:
        """Switch to the newest generation."""
        with self._use:
            self.suspend()
            self.__init__(self.folder)  # type: ignore[misc]

    def _writable(self) -> None:
        if self.read_only:
            raise NothingWritten(f"the index {self.path} cannot be written by this process (no write permission, "
                                 "or the disk is full); nothing was written")

    # -- the checkpoint --------------------------------------------------------------------

    @_using
    def checkpoint(self) -> tuple[int, bytes]:
        """``(position, chain)`` the index is valid up to."""
        row = self.con.execute("SELECT position, chain FROM checkpoint WHERE k = 0").fetchone()
        return (0, GENESIS) if row is None else (row[0], bytes(row[1]))

    # -- writing (under the writer lock) ---------------------------------------------------

    def _term_ids(self, cur: sqlite3.Cursor, kind: int, names: Iterable[str]) -> dict[str, int]:
        """The ids of the terms ``(kind, name)`` for ``names`` (inside the caller's write
        transaction), new terms given the next ids: two queries per 500 new terms, not one per
        term. The cache is bounded: a store of a million entities must not hold them all."""
        terms = self._terms
        if len(terms) > TERM_CACHE:
            terms.clear()
            self._complete = False
        names = list(names)
        keys = [(kind, name) for name in names]
        known = list(map(terms.get, keys))
        missing = [name for name, tid in zip(names, known, strict=True) if tid is None]
        if not missing:
            return dict(zip(names, known, strict=True))  # type: ignore[arg-type]
        out: dict[str, int] = {name: tid for name, tid in zip(names, known, strict=True) if tid is not None}
        # Another process may have added some (not to a database this handle created and fills alone).
        for i in range(0, 0 if self._complete else len(missing), 500):
            chunk = missing[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out.update(cur.execute(f"SELECT name, id FROM terms WHERE kind = {int(kind)} AND name IN ({marks})",
                                   chunk))
        new = [name for name in missing if name not in out]
        if new:
            # The transaction holds the write lock: nobody else takes an id until it ends.
            top = cur.execute("SELECT coalesce(max(id), 0) FROM terms").fetchone()[0]
            fresh = range(top + 1, top + 1 + len(new))
            cur.executemany("INSERT INTO terms(id, kind, name) VALUES (?, ?, ?)",
                            zip(fresh, [kind] * len(new), new, strict=True))
            out.update(zip(new, fresh, strict=True))
        terms.update(zip([(kind, name) for name in missing], map(out.__getitem__, missing), strict=True))
        return out

    @_using
    def add(self, entries: Sequence[Entry] | Callable[[], Sequence[Entry]], checkpoint: tuple[int, bytes],
            wait: bool = True) -> bool:
        """Index ``entries`` (positions right after the current checkpoint) and move the
        checkpoint to ``checkpoint``, in one transaction. With ``wait=False``, return False at
        once (nothing done) when another connection is writing. ``entries`` may be a function
        that makes them, called only when the index has not reached ``checkpoint`` yet (with
        several writers all but one find it done, and need not parse anything)."""
        self._writable()
        cur = self.con.cursor()
        if not wait:
            self.con.execute("PRAGMA busy_timeout=0")
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    return False
                raise
            finally:
                self.con.execute("PRAGMA busy_timeout=60000")
        else:
            cur.execute("BEGIN IMMEDIATE")
        try:
            at = cur.execute("SELECT position FROM checkpoint WHERE k = 0").fetchone()[0]
            if checkpoint[0] <= at:  # another writer got here first: never move the checkpoint back
                cur.execute("COMMIT")
                return True
            if callable(entries):
                entries = entries()
            if not entries or entries[0][0] <= at:
                entries = [e for e in entries if e[0] > at]
            if not entries or entries[0][0] != at + 1:
                raise ValueError(f"index entries start at {entries[0][0] if entries else None}, "
                                 f"not right after the checkpoint {at}")
            type_id = self._term_ids(cur, TYPE, {e[2] for e in entries})
            tag_id = self._term_ids(cur, TAG, {t for e in entries for t in e[3]})
            rows = [(type_id[e[2]], e[0]) for e in entries]
            add = rows.append
            for pos, _eid, _type, etags in entries:
                if len(etags) == 1:
                    add((tag_id[etags[0]], pos))
                elif etags:
                    rows.extend([(tag_id[t], pos) for t in set(etags)])
            cur.executemany("INSERT OR IGNORE INTO postings VALUES (?, ?)", rows)
            cur.executemany("INSERT OR REPLACE INTO ids VALUES (?, ?)", [(e[1], e[0]) for e in entries])
            cur.execute("UPDATE checkpoint SET position = ?, chain = ? WHERE k = 0", checkpoint)
            cur.execute("COMMIT")
            return True
        except BaseException:
            self._terms.clear()  # ids assigned in the rolled-back transaction are void
            self._complete = False
            if self.con.in_transaction:
                cur.execute("ROLLBACK")
            raise

    @_using
    def truncate(self, position: int, chain: bytes) -> None:
        """Drop every row past ``position`` and set the checkpoint there (the log was found
        shorter than the index: a power cut took back records the index had already seen)."""
        self._writable()
        cur = self.con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute("DELETE FROM postings WHERE position > ?", (position,))
            cur.execute("DELETE FROM ids WHERE position > ?", (position,))
            cur.execute("UPDATE checkpoint SET position = ?, chain = ? WHERE k = 0", (position, chain))
            cur.execute("COMMIT")
        except BaseException:
            if self.con.in_transaction:
                cur.execute("ROLLBACK")
            raise

    # -- reading ---------------------------------------------------------------------------

    @_using
    def id_positions(self, ids: Sequence[str]) -> dict[str, int]:
        """The indexed positions of those ``ids`` that are indexed."""
        out: dict[str, int] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out.update(self.con.execute(f"SELECT eid, position FROM ids WHERE eid IN ({marks})", chunk))
        return out

    @_using
    def _term(self, kind: int, name: str) -> int | None:
        key = (kind, name)
        tid = self._terms.get(key)
        if tid is None:
            row = self.con.execute("SELECT id FROM terms WHERE kind = ? AND name = ?", key).fetchone()
            if row is None:
                return None
            tid = self._terms[key] = row[0]
        return tid

    def _item_sql(self, types: Sequence[str], tags: Sequence[str]) -> str | None:
        """SQL selecting the positions of one query item in ``:lo..:hi``, or None when it can
        match nothing (a tag or every type never indexed). Term ids are our own integers."""
        parts: list[str] = []
        tag_ids = [self._term(TAG, tag) for tag in tags]
        if None in tag_ids:
            return None
        for tid in tag_ids:
            parts.append(f"SELECT position FROM postings WHERE term = {tid} AND position BETWEEN :lo AND :hi")
        if len(parts) > MAX_COMPOUND:  # too many to intersect in one statement: count them instead
            unique = sorted(set(tag_ids))  # type: ignore[type-var]
            parts = [f"SELECT position FROM postings WHERE term IN ({','.join(map(str, unique))}) AND position "
                     f"BETWEEN :lo AND :hi GROUP BY position HAVING count(*) = {len(unique)}"]
        if types:
            tids = [t for t in (self._term(TYPE, ty) for ty in types) if t is not None]
            if not tids:
                return None
            marks = ",".join(str(t) for t in tids)
            parts.append(f"SELECT position FROM postings WHERE term IN ({marks}) AND position BETWEEN :lo AND :hi")
        return "SELECT position FROM (" + " INTERSECT ".join(parts) + ")"

    def positions(self, query: Query, lo: int, hi: int, backwards: bool = False,
                  limit: int | None = None) -> Iterator[int]:
        """Positions in ``lo..hi`` matching ``query`` (not ``Query.all()``), in order, fetched a
        page at a time: the first page ``limit`` positions when the caller will take no more
        (a read with a limit, a condition's first match), then pages doubling up to PAGE."""
        selects = [sql for item in query.items if (sql := self._item_sql(item.types, item.tags)) is not None]
        if not selects:
            return
        while len(selects) > MAX_COMPOUND:  # nest the unions: one compound SELECT takes 500 terms at most
            selects = ["SELECT position FROM (" + " UNION ".join(selects[i:i + MAX_COMPOUND]) + ")"
                       for i in range(0, len(selects), MAX_COMPOUND)]
        order = "DESC" if backwards else "ASC"
        sql = " UNION ".join(selects) + f" ORDER BY position {order} LIMIT :page"
        size = PAGE if limit is None else max(1, min(PAGE, limit))
        while lo <= hi:
            with self._use:
                page = [r[0] for r in self.con.execute(sql, {"lo": lo, "hi": hi, "page": size})]
            yield from page
            if len(page) < size:
                return
            if backwards:
                hi = page[-1] - 1
            else:
                lo = page[-1] + 1
            size = min(PAGE, 2 * size)

    def first_match(self, query: Query, lo: int, hi: int) -> int | None:
        """The first position in ``lo..hi`` matching ``query``, or None."""
        return next(self.positions(query, lo, hi, limit=1), None)

    @_using
    def counts(self) -> dict[str, int]:
        """Row counts, for ``stats``."""
        return {
            "terms": self.con.execute("SELECT count(*) FROM terms").fetchone()[0],
            "postings": self.con.execute("SELECT count(*) FROM postings").fetchone()[0],
            "ids": self.con.execute("SELECT count(*) FROM ids").fetchone()[0],
        }
