"""A scratch SQLite database outside the store (in the system's temp folder), so that the checks
that need every id of the log (duplicates, references, an index that does not match) stay flat
in memory: rows go to disk, SQLite sorts and joins them. The store's index is attached to it
read-only, in one read transaction held for the whole check (one consistent snapshot while
writers go on appending)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

_SCHEMA = """
CREATE TABLE log_ids(eid TEXT NOT NULL, position INTEGER NOT NULL);
CREATE TABLE refs(src INTEGER NOT NULL, field TEXT NOT NULL, target TEXT NOT NULL);
CREATE TABLE bad(position INTEGER PRIMARY KEY);
CREATE TABLE exp_post(kind INTEGER NOT NULL, name TEXT NOT NULL, position INTEGER NOT NULL);
"""
FLUSH = 10_000  # rows buffered in memory before they go to the scratch database


class Spill:
    """The scratch database of one check run; :meth:`close` removes it."""

    def __init__(self, folder: str | None = None, name: str = "scratch") -> None:
        self.owned = folder is None  # a worker's database lives in the check's folder
        self.folder = tempfile.mkdtemp(prefix="kroniko-fsck-") if folder is None else folder
        self.path = os.path.join(self.folder, f"{name}.sqlite3")
        self.con = sqlite3.connect(self.path, isolation_level=None, uri=True, check_same_thread=False)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-16000"):
            self.con.execute(f"PRAGMA {pragma}")
        self.con.executescript(_SCHEMA)
        self.attached = False
        # Called with the error when SQLite fails while the index is attached: a damaged
        # database can fail any statement of the connection, even one about the scratch tables.
        self.on_index_error: Callable[[sqlite3.DatabaseError], None] | None = None
        self._kept: list[int] = []  # descriptors closed after the connection
        self._ids: list[tuple[str, int]] = []
        self._refs: list[tuple[int, str, str]] = []

    def attach_index(self, path: str) -> None:
        """Attach the index database at ``path`` read-only as ``idx`` and start the read
        transaction (the snapshot every later query of the check sees)."""
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        self.con.execute("ATTACH DATABASE ? AS idx", (uri,))
        self.attached = True

    def detach_index(self) -> None:
        """Stop using the index (it failed): end the snapshot, detach it, start a new
        transaction for the scratch tables. Never raises for the index's sake."""
        if not self.attached:
            return
        self.attached = False
        try:
            if self.con.in_transaction:
                self.con.execute("COMMIT")  # no journal: only a commit leaves the scratch rows defined
        except sqlite3.DatabaseError:
            pass
        try:
            self.con.execute("DETACH DATABASE idx")
        except sqlite3.DatabaseError:
            pass
        if not self.con.in_transaction:
            self.con.execute("BEGIN")

    def release_index(self) -> None:
        """Detach the index and end any transaction, so that another one may be attached."""
        self.detach_index()
        if self.con.in_transaction:
            self.con.execute("COMMIT")
        try:
            self.con.execute("DETACH DATABASE idx")
        except sqlite3.DatabaseError:
            pass  # ATTACH itself had failed: nothing to detach

    def _scratch(self, sql: str, rows: Callable[[], Iterable[Any]]) -> None:
        """Write the rows ``rows()`` gives to a scratch table; when the attached index makes the
        statement fail, report it, detach the index and write them again (a row written twice
        changes no verdict: every query reads these tables as sets)."""
        try:
            self.con.executemany(sql, rows())
        except sqlite3.DatabaseError as exc:
            if not self.attached:
                raise
            if self.on_index_error is not None:
                self.on_index_error(exc)
            self.detach_index()
            self.con.executemany(sql, rows())

    def begin(self) -> None:
        """Start the transaction that holds the index snapshot."""
        self.con.execute("BEGIN")

    def add_id(self, eid: str, position: int) -> None:
        """Keep one ``(id, position)`` of the log."""
        self._ids.append((eid, position))
        if len(self._ids) >= FLUSH:
            self.flush()

    def add_ref(self, src: int, field: str, target: str) -> None:
        """Keep one reference: position ``src`` names ``target`` in ``field``."""
        self._refs.append((src, field, target))
        if len(self._refs) >= FLUSH:
            self.flush()

    def add_bad(self, position: int) -> None:
        """Note a position whose record is damaged: the index is not judged there."""
        self._scratch("INSERT OR IGNORE INTO bad VALUES (?)", lambda: [(position,)])

    def add_bad_range(self, first: int, last: int) -> None:
        """Positions ``first..last`` are not judged against the index (their file could not be
        read again for the comparison; the walk read or reported them)."""
        self._scratch("INSERT OR IGNORE INTO bad VALUES (?)", lambda: ((p,) for p in range(first, last + 1)))

    def add_postings(self, rows: Iterable[tuple[int, str, int]]) -> None:
        """Keep ``(kind, name, position)`` rows the log implies for the index."""
        batch = list(rows)
        self._scratch("INSERT INTO exp_post VALUES (?, ?, ?)", lambda: batch)

    def flush(self) -> None:
        """Write the buffered rows."""
        if self._ids:
            self._scratch("INSERT INTO log_ids VALUES (?, ?)", lambda: self._ids)
            self._ids.clear()
        if self._refs:
            self._scratch("INSERT INTO refs VALUES (?, ?, ?)", lambda: self._refs)
            self._refs.clear()

    def absorb(self, path: str) -> None:
        """Copy the rows a worker process kept in its scratch database at ``path``."""
        self.flush()
        src = sqlite3.connect(path)
        try:
            for sql, select in (("INSERT INTO log_ids VALUES (?, ?)", "SELECT eid, position FROM log_ids"),
                                ("INSERT INTO refs VALUES (?, ?, ?)", "SELECT src, field, target FROM refs"),
                                ("INSERT OR IGNORE INTO bad VALUES (?)", "SELECT position FROM bad")):
                self._scratch(sql, lambda select=select: src.execute(select))  # type: ignore[misc]
        finally:
            src.close()

    def has_refs(self) -> bool:
        """Whether any reference was kept."""
        self.flush()
        return self.con.execute("SELECT 1 FROM refs LIMIT 1").fetchone() is not None

    def keep_open(self, fd: int) -> None:
        """Close ``fd`` only in :meth:`close`, after the connection (see ``index_check._header_pages``)."""
        self._kept.append(fd)

    def close(self) -> None:
        """End the snapshot and remove the scratch database."""
        try:
            if self.con.in_transaction:
                self.con.execute("ROLLBACK")
            self.con.close()
        finally:
            for fd in self._kept:
                os.close(fd)
            self._kept.clear()
            if self.owned:
                shutil.rmtree(self.folder, ignore_errors=True)
