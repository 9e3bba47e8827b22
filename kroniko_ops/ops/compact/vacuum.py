"""Index upkeep during ``compact``: ``PRAGMA optimize``, a WAL checkpoint that truncates the WAL
file, and a ``VACUUM`` of the current generation when SQLite's own freelist holds a large share
of its pages. Never swaps generations (``reindex`` does that). Safe with readers and writers
running: SQLite serialises the checkpoint and the vacuum with their transactions."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

from ... import indexdb

VACUUM_SHARE = 0.25  # vacuum when free pages are at least this share of the file...
VACUUM_MIN_PAGES = 256  # ...and at least this many
VACUUM_MAX_BYTES = 128 << 20  # bigger: VACUUM would hold appends' indexing too long; reindex instead
BUSY_MS = 5000  # how long to wait for a writer's transaction before giving up this step


@dataclass
class IndexUpkeep:
    """What was found and done to the index."""

    generation: int = 0
    pages: int = 0
    free_pages: int = 0
    wal_frames: int = 0
    checkpoint_busy: bool = False
    dry_run: bool = False
    vacuumed: bool = False
    too_big: bool = False
    error: str = ""
    busy: bool = False  # the error was SQLite being busy or locked: nothing is wrong with the index

    def summary(self) -> str:
        """One line for the report."""
        if self.error:
            return f"index generation {self.generation}: upkeep skipped ({self.error})"
        if self.dry_run:
            action = "vacuum" if self.free_pages >= max(VACUUM_MIN_PAGES, VACUUM_SHARE * self.pages) else "no vacuum"
            return (f"index generation {self.generation}: {self.pages} pages, {self.free_pages} free; would optimize, "
                    f"checkpoint the WAL ({action} needed)")
        done = "checkpointed" + (", vacuumed" if self.vacuumed else "")
        if self.too_big:
            done += (f" (not vacuumed: over {VACUUM_MAX_BYTES >> 20} MiB, run kroniko-ops reindex to rebuild it "
                     "compactly)")
        if self.checkpoint_busy:
            done += " (WAL still in use by a reader: not truncated)"
        return (f"index generation {self.generation}: {self.pages} pages, {self.free_pages} free, "
                f"WAL {self.wal_frames} frames; optimized, {done}")


def upkeep(folder: str, dry_run: bool) -> IndexUpkeep | None:
    """Tend the current index generation in ``folder``; None when there is none yet."""
    gens = indexdb.generations(folder)
    if not gens:
        return None
    out = IndexUpkeep(generation=gens[-1], dry_run=dry_run)
    path = os.path.join(folder, indexdb.db_name(gens[-1]))
    try:
        con = indexdb.connect(path)
    except sqlite3.Error as exc:
        out.error = str(exc)
        return out
    try:
        con.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        out.pages = con.execute("PRAGMA page_count").fetchone()[0]
        out.free_pages = con.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        if dry_run:
            return out
        con.execute("PRAGMA optimize")
        worth = out.free_pages >= max(VACUUM_MIN_PAGES, VACUUM_SHARE * out.pages)
        out.too_big = worth and out.pages * page_size > VACUUM_MAX_BYTES
        out.vacuumed = worth and not out.too_big
        if out.vacuumed:
            con.execute("VACUUM")  # holds the write lock meanwhile: appends wait to index, never fail
        busy, frames, _done = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        out.checkpoint_busy, out.wal_frames = bool(busy), frames
    except sqlite3.Error as exc:  # derived data: a busy or damaged index is not compaction's failure
        out.error = str(exc)
        out.busy = isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))
        out.vacuumed = False
    finally:
        con.close()
    return out
