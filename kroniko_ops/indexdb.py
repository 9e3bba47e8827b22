"""The index's database files: ``index/<generation>.sqlite3`` named and listed, checked before
they are opened (never through a link, never a FIFO), opened with the settings every user of
them shares, created with the schema, opened read-only, removed. The queries and writes on them
are :mod:`.index`'s."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import time
import urllib.parse

from . import fileio
from .errors import StoreCorrupted
from .format.record import GENESIS

SCHEMA_VERSION = 1
_NAME_RE = re.compile(r"\A(\d{6})\.sqlite3\Z")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoint(k INTEGER PRIMARY KEY CHECK (k = 0), position INTEGER NOT NULL,
                                      chain BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS terms(id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, name TEXT NOT NULL,
                                 UNIQUE(kind, name));
CREATE TABLE IF NOT EXISTS postings(term INTEGER NOT NULL, position INTEGER NOT NULL,
                                    PRIMARY KEY(term, position)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ids(eid TEXT PRIMARY KEY, position INTEGER NOT NULL) WITHOUT ROWID;
"""


def db_name(generation: int) -> str:
    """The file name of an index generation."""
    return f"{generation:06d}.sqlite3"


def generations(folder: str) -> list[int]:
    """The index generations present in ``folder``, oldest first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _NAME_RE.match(n)))


def check_files(path: str) -> None:
    """Raise :class:`StoreCorrupted` when the index database at ``path`` or its ``-wal`` or
    ``-shm`` is a symbolic link or not a regular file: SQLite follows links (it would write
    outside the store) and opens a FIFO blocking (it would hang). Checked with ``lstat`` by
    :func:`connect`, and before any other connection to a store's index; a missing file is fine."""
    for suffix in ("", "-wal", "-shm"):
        try:
            mode = os.lstat(path + suffix).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise StoreCorrupted(
                f"{path + suffix} is {kind}; the index is derived data: move it away and run "
                f"kroniko-ops reindex {os.path.dirname(os.path.dirname(path))}")


def connect(path: str) -> sqlite3.Connection:
    """Open an index database with the settings every user of it shares (after
    :func:`check_files`: never through a link, never blocking on a FIFO)."""
    check_files(path)
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60.0)
    for attempt in range(1000):
        try:
            con.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            # Processes opening a new database at once: the switch to WAL answers "locked"
            # at once instead of waiting like other statements do.
            if "locked" not in str(exc) or attempt == 999:
                con.close()
                raise
            time.sleep(0.005)
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA busy_timeout=60000")
    return con


def create_db(path: str) -> sqlite3.Connection:
    """Create an empty index database at ``path`` (checkpoint 0)."""
    con = connect(path)
    con.execute("BEGIN IMMEDIATE")  # the write lock first: concurrent creators wait, not fail
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            con.execute(statement)
    con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
    con.execute("INSERT OR IGNORE INTO checkpoint VALUES (0, 0, ?)", (GENESIS,))
    con.execute("COMMIT")
    return con


def may_write(path: str) -> bool:
    """Whether this process may write the database at ``path`` and create files beside it
    (its ``-wal`` and ``-shm``)."""
    folder = os.path.dirname(path) or "."
    if not (os.access(path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK)):
        return False
    try:
        return os.statvfs(folder).f_bavail > 0  # a full disk: SQLite cannot create -shm either
    except OSError:
        return True


def open_read_only(path: str) -> sqlite3.Connection:
    """A read-only connection to the index database at ``path`` for a user who may not write
    it. SQLite reads a WAL database read-only when its ``-wal`` and ``-shm`` exist (a writer has
    it open); otherwise it would have to create them, so an empty in-memory index (checkpoint
    0) stands in: readers then find every event in the log, which is slower but never wrong.
    (``immutable=1`` is not used: a writer's checkpoint may change the file under the read.)"""
    check_files(path)
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    con: sqlite3.Connection | None = None
    try:
        con = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=60.0)
        con.execute("PRAGMA busy_timeout=60000")
        con.execute("SELECT position FROM checkpoint WHERE k = 0").fetchone()
        return con
    except sqlite3.DatabaseError:  # cannot read it read-only (or damaged: fsck says so): the log answers
        if con is not None:
            con.close()
        con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        con.executescript(_SCHEMA)
        con.execute("INSERT INTO checkpoint VALUES (0, 0, ?)", (GENESIS,))
        return con


def remove_generation(folder: str, generation: int) -> None:
    """Remove an old generation's files (derived data: the log rebuilds it)."""
    base = os.path.join(folder, db_name(generation))
    for suffix in ("", "-wal", "-shm"):
        try:
            fileio.unlink(base + suffix)
        except FileNotFoundError:
            pass
