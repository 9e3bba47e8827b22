"""The index against the log: its checkpoint (``index-checkpoint-ahead``, a chain hash that
differs from the log's at that position), SQLite's own ``quick_check`` (``index-corrupt``) and,
at the full level, every row recomputed from the log (``index-missing-entry`` /
``index-extra-entry``) and every id unique (``log-duplicate-id``).

The comparison is cheap while the index is right: both sides are summed as order-independent
digests (the sum of Python hashes of ``(kind, name, position)`` and ``(id, position)`` tuples;
SQLite streams the index side). Equal sums and counts mean equal multisets, and as the index
holds each id once, no id of the log repeats. Only when they differ are the log's rows spilled
to the scratch database and the differences named by SQL.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from ...errors import StoreCorrupted
from ...format import pack as packfmt
from ...format import record as recfmt
from ...index import TAG, TYPE
from ...indexdb import check_files, db_name, generations, may_write
from .context import MAX_FINDINGS_PER_CODE, REINDEX, Context
from .coverage import Plan
from .reread import iter_docs
from .spill import Spill

# The index vouches for positions up to its checkpoint only (readers use it no further), so only
# its rows at or below the checkpoint are compared with the log: ``{t}`` is that position.
_INDEX_POSTINGS = ("SELECT t.kind, t.name, p.position FROM idx.postings p JOIN idx.terms t ON t.id = p.term "
                   "WHERE p.position <= {t}")
_GOOD = "position NOT IN (SELECT position FROM bad)"  # damaged records are reported, not compared


RELISTS = 5  # listings of index/ tried while rebuilds keep replacing the generation just listed
SETTLE_CHECKS, SETTLE_SECONDS = 5, 0.05  # how long a file longer than its database may take to be cut


def _header_pages(path: str, spill: Spill) -> int:
    """The database size in pages that the file's header records (offset 28, valid when the
    counters at offsets 24 and 92 agree), 0 when unknown. The descriptor stays open until the
    check ends (:meth:`Spill.keep_open`): closing any descriptor of a file drops every POSIX
    lock this process holds on it, SQLite's on the attached index included, and another
    process could then take itself for the index's last user and checkpoint it under the
    snapshot this check reads."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    spill.keep_open(fd)
    try:
        head = os.pread(fd, 100, 0)
    except OSError:
        return 0
    if len(head) < 100 or head[24:28] != head[92:96]:
        return 0
    return int.from_bytes(head[28:32], "big")


class IndexCheck:
    """One check of the current index generation, read through ``spill``'s snapshot."""

    def __init__(self, ctx: Context, spill: Spill, full: bool) -> None:
        self.ctx, self.spill, self.full = ctx, spill, full
        self.rel = "index"
        self.usable = False
        self.cp, self.cp_chain = 0, recfmt.GENESIS
        self.trusted = 0  # positions 1..trusted are compared with the index; later ones are not in it
        self.post_sum = self.post_count = self.ids_sum = self.ids_count = 0
        self.ids_ok = False  # the index's ids table equals the log's (after :meth:`finish`)
        self.index_side: tuple[int, int, int, int] | None = None
        self.missing = False
        self.walk_trusted = 0  # ``trusted`` when the walk began (a failing index lowers ``trusted`` later)
        self.failed = False  # SQLite failed on the index: reported once, never used again
        self.spilled_upto = 0  # the log's ids of positions 1..spilled_upto are in the scratch database
        spill.on_index_error = self.fail

    def fail(self, exc: sqlite3.DatabaseError) -> None:
        """SQLite failed on the index database (any error: it is derived data, so this is a
        finding, never a crash): report ``index-corrupt`` once and stop using the index."""
        first = not self.failed
        self.failed, self.usable, self.trusted, self.ids_ok, self.index_side = True, False, 0, False, None
        self.spill.detach_index()
        if first:
            self.ctx.add("index-corrupt", "error", self.rel, f"the index database does not read ({exc}): it is "
                         "derived data, rebuild it (reindex, or fsck --repair)", action=REINDEX)

    def respill(self, parts: Sequence[Any]) -> None:
        """The index turned out unreadable after the walk began: spill the log's ids it was to
        vouch for, so that duplicates and references are still judged without it."""
        if self.spilled_upto < self.walk_trusted:
            for pos, eid, _doc in iter_docs(parts, self.spilled_upto + 1, self.walk_trusted):
                self.spill.add_id(eid, pos)
            self.spill.flush()
            self.spilled_upto = self.walk_trusted

    def open(self) -> None:
        """Attach the newest generation and read its checkpoint (before the log's tail is read,
        so that everything the checkpoint covers is already in the log)."""
        folder = self.ctx.layout.index
        for attempt in range(RELISTS):
            gens = generations(folder)
            if not gens:
                self.missing = True  # judged with the log's head (an empty store needs none yet)
                self.spill.begin()
                return
            path = os.path.join(folder, db_name(gens[-1]))
            self.rel = f"index/{db_name(gens[-1])}"
            try:
                check_files(path)
            except StoreCorrupted as exc:
                # Never handed to SQLite: it follows links and blocks opening a FIFO.
                self.ctx.add("index-corrupt", "error", self.rel, str(exc), action=REINDEX)
                self.spill.begin()
                return
            try:
                self.spill.attach_index(path)
                self.spill.begin()
                row = self.spill.con.execute("SELECT position, chain FROM idx.checkpoint WHERE k = 0").fetchone()
                break
            except sqlite3.DatabaseError as exc:
                if not os.path.lexists(path) and attempt < RELISTS - 1:
                    # A rebuild published the next generation and removed this one meanwhile.
                    self.spill.release_index()
                    continue
                if isinstance(exc, sqlite3.OperationalError) and not may_write(path):
                    # Read-only, SQLite must still write a WAL database's -shm unless a writer has
                    # it open: this user cannot check the index, which says nothing about it.
                    self.spill.detach_index()
                    self.ctx.add("index-unchecked", "info", self.rel, f"the index cannot be read by this user "
                                 f"without writing to index/ ({exc}); it was not checked (the log was): run fsck as "
                                 "a user who may write the store, or while a writer has the store open")
                    if not self.spill.con.in_transaction:
                        self.spill.begin()
                    return
                self.fail(exc)
                if not self.spill.con.in_transaction:
                    self.spill.begin()
                return
        for old in gens[:-1]:
            self.ctx.add("index-superseded", "info", f"index/{db_name(old)}", "an older index generation that a "
                         "rebuild left behind (reindex removes it)")
        if row is None:
            self.ctx.add("index-corrupt", "error", self.rel, "the index has no checkpoint row", action=REINDEX)
            return
        self.cp, self.cp_chain, self.usable = int(row[0]), bytes(row[1]), True
        try:
            self._trailing(path)
        except sqlite3.DatabaseError as exc:
            self.fail(exc)
        self.ctx.report.figures["index_checkpoint"] = self.cp

    def _trailing(self, path: str) -> None:
        """Bytes past the database's last page (in this read snapshot, WAL included): SQLite never
        reads them, so ``quick_check`` calls such a file clean; an index SQLite wrote ends at a
        page. The file may still be longer than this snapshot's database for a moment: a VACUUM
        shrank it in the WAL and no checkpoint has cut the file yet (the file's own header says
        how many pages its last checkpoint left). Only bytes past both, for a while, are garbage."""
        page_size = self.spill.con.execute("PRAGMA idx.page_size").fetchone()[0]
        pages = self.spill.con.execute("PRAGMA idx.page_count").fetchone()[0]
        for attempt in range(SETTLE_CHECKS):
            size = os.lstat(path).st_size
            end = page_size * max(pages, _header_pages(path, self.spill))
            if size <= end:
                return
            if attempt < SETTLE_CHECKS - 1:
                time.sleep(SETTLE_SECONDS)
        self.ctx.add("index-trailing-garbage", "error", self.rel,
                     f"{size - end} bytes past the database's last page (it is {size} bytes, its "
                     f"{end // page_size} pages of {page_size} end at byte {end}): not written by SQLite",
                     action=REINDEX)

    def judge_checkpoint(self, plan: Plan, head: int) -> None:
        """The checkpoint must name a position of the log, with the log's chain hash there."""
        if self.missing:
            if head > 0:
                self.ctx.add("index-missing", "warning", "index", "there is no index database (the next writer "
                             "starts an empty one and catches it up)", action=REINDEX)
            else:
                self.ctx.add("index-missing", "info", "index", "no index database yet (the store is empty)")
        if not self.usable:
            return
        if self.cp > head:
            self.ctx.add("index-checkpoint-ahead", "error", self.rel, f"the index checkpoint names position "
                         f"{self.cp} but the log ends at {head} (a power cut took back records the index had "
                         "seen)", self.cp, action=REINDEX)
            return
        if self.cp > 0:
            part = plan.find(self.cp)
            try:
                chain = part.record_at(self.cp).chain if part is not None else None
            except (recfmt.RecordError, packfmt.PackError, OSError, IndexError):
                chain = None
            if chain != self.cp_chain:
                self.ctx.add("index-checkpoint-mismatch", "error", self.rel, f"the index checkpoint's chain hash "
                             f"at position {self.cp} differs from the log's: the index describes another history",
                             self.cp, action=REINDEX)
                return
        if self.cp < head:
            self.ctx.add("index-behind", "info", self.rel, f"the index covers positions up to {self.cp} of {head} "
                         "(the next writer catches it up)")
        self.trusted = self.walk_trusted = self.cp

    def quick_check(self) -> None:
        """SQLite's structural check of the index database (``PRAGMA quick_check``)."""
        if not self.spill.attached:
            return
        try:
            rows = [r[0] for r in self.spill.con.execute("PRAGMA idx.quick_check(20)")]
        except sqlite3.DatabaseError as exc:
            self.fail(exc)
            return
        if rows != ["ok"]:
            self.fail(sqlite3.DatabaseError(f"SQLite finds it damaged: {'; '.join(rows[:3])}"))

    # -- the log side, record by record (a sink of the walker) -----------------------------

    def sink(self, rows: list[tuple[int, str, dict[str, Any]]]) -> None:
        """Add a run's sound records of the log."""
        trusted = self.walk_trusted
        if rows and rows[-1][0] > trusted:
            for pos, eid, _doc in rows:
                if pos > trusted:
                    self.spill.add_id(eid, pos)
            rows = [r for r in rows if r[0] <= trusted]
        if not self.full or not rows:
            return
        post = [(TYPE, doc["type"], pos) for pos, _eid, doc in rows]
        add = post.append
        for pos, _eid, doc in rows:
            tags = doc["tags"]
            if len(tags) == 1:
                add((TAG, tags[0], pos))
            elif tags:
                post.extend([(TAG, tag, pos) for tag in set(tags)])
        self.post_sum += sum(map(hash, post))
        self.post_count += len(post)
        self.ids_sum += sum(map(hash, [(eid, pos) for pos, eid, _doc in rows]))
        self.ids_count += len(rows)

    # -- the verdict -----------------------------------------------------------------------

    def index_sums(self) -> None:
        """The index side of the digests (SQLite streams every row; run while the walk's
        workers are busy)."""
        if self.trusted <= 0 or self.index_side is not None or not self.spill.attached:
            return
        con = self.spill.con
        try:
            t = int(self.trusted)
            ids = "SELECT eid, position FROM idx.ids WHERE position <= ?"
            self.index_side = (sum(map(hash, con.execute(_INDEX_POSTINGS.format(t=t)))),
                               con.execute("SELECT count(*) FROM idx.postings WHERE position <= ?", (t,)).fetchone()[0],
                               sum(map(hash, con.execute(ids, (t,)))),
                               con.execute("SELECT count(*) FROM idx.ids WHERE position <= ?", (t,)).fetchone()[0])
        except sqlite3.DatabaseError as exc:
            self.fail(exc)

    def finish(self, parts: Sequence[Any]) -> None:
        """Compare both sides; name the differences and duplicate ids."""
        self.spill.flush()
        self.ids_ok = False
        self.index_sums()
        if self.trusted > 0 and self.index_side is not None:
            post_sum, post_count, ids_sum, ids_count = self.index_side
            same_posts = (post_sum, post_count) == (self.post_sum, self.post_count)
            self.ids_ok = (ids_sum, ids_count) == (self.ids_sum, self.ids_count)
            if not (same_posts and self.ids_ok):
                try:
                    self._exact(parts)
                except sqlite3.DatabaseError as exc:
                    if self.spill.attached:
                        self.fail(exc)
                    else:
                        raise
        if self.trusted < self.walk_trusted:
            self.respill(parts)
        self.spill.con.execute("CREATE INDEX log_ids_eid ON log_ids(eid)")
        try:
            self._duplicates()
        except sqlite3.DatabaseError as exc:
            if not self.ids_ok or not self.spill.attached:
                raise
            self.fail(exc)
            self.respill(parts)
            self._duplicates()

    def _exact(self, parts: Sequence[Any]) -> None:
        """Spill the log's side of positions ``1..trusted`` and let SQL name the differences."""
        rows: list[tuple[int, str, int]] = []
        upto = self.trusted
        for pos, eid, doc in iter_docs(parts, 1, upto, self.spill.add_bad_range):
            rows.append((TYPE, doc["type"], pos))
            rows.extend((TAG, t, pos) for t in set(doc["tags"]))
            self.spill.add_id(eid, pos)
            if len(rows) >= 10_000:
                self.spill.add_postings(rows)
                rows = []
        self.spill.add_postings(rows)
        self.spill.flush()
        self.spilled_upto = upto
        if not self.spill.attached:  # the index failed while the rows were written (reported)
            return
        con, limit, t = self.spill.con, MAX_FINDINGS_PER_CODE + 1, int(self.trusted)
        kinds = {TYPE: "type", TAG: "tag"}
        queries = (
            ("index-missing-entry", f"SELECT kind, name, position FROM exp_post EXCEPT {_INDEX_POSTINGS.format(t=t)} "
             f"ORDER BY 3 LIMIT {limit}", "the log's event at position {p} has {k} {n!r}, which the index lacks"),
            ("index-extra-entry", f"{_INDEX_POSTINGS.format(t=t)} AND p.{_GOOD} EXCEPT SELECT kind, name, position "
             f"FROM exp_post ORDER BY 3 LIMIT {limit}", "the index lists position {p} under {k} {n!r}, but the log's "
             "event there does not have it"),
        )
        for code, sql, text in queries:
            for kind, name, p in con.execute(sql).fetchall():
                self.ctx.add(code, "error", self.rel, text.format(p=p, k=kinds.get(kind, f"kind {kind}"), n=name),
                             p, action=REINDEX)
        for eid, p in con.execute("SELECT eid, position FROM log_ids WHERE position <= ? EXCEPT "
                                  f"SELECT eid, position FROM idx.ids ORDER BY 2 LIMIT {limit}", (t,)).fetchall():
            self.ctx.add("index-missing-entry", "error", self.rel, f"the index lacks the id {eid!r} of position {p}",
                         p, action=REINDEX)
        for eid, p in con.execute(f"SELECT eid, position FROM idx.ids WHERE position <= ? AND {_GOOD} EXCEPT SELECT "
                                  f"eid, position FROM log_ids WHERE position <= ? ORDER BY 2 LIMIT {limit}",
                                  (t, t)).fetchall():
            self.ctx.add("index-extra-entry", "error", self.rel, f"the index maps the id {eid!r} to position {p}, "
                         "where the log holds another event", p, action=REINDEX)

    def _duplicates(self) -> None:
        """Ids named at two positions: among the rows spilled, and (when the index's ids equal
        the log's) between those and the index."""
        con, limit = self.spill.con, MAX_FINDINGS_PER_CODE + 1
        sql = ("SELECT a.eid, min(b.position), a.position FROM log_ids a JOIN log_ids b ON b.eid = a.eid "
               f"AND b.position < a.position GROUP BY a.eid, a.position ORDER BY a.position LIMIT {limit}")
        found = list(con.execute(sql))
        if self.ids_ok:
            found += list(con.execute(
                "SELECT l.eid, i.position, l.position FROM log_ids l JOIN idx.ids i ON i.eid = l.eid "
                f"WHERE i.position <= ? AND i.position < l.position ORDER BY l.position LIMIT {limit}",
                (self.trusted,)))
        for eid, first, later in sorted(found, key=lambda r: r[2]):
            self.ctx.add("log-duplicate-id", "error", "log", f"event id {eid!r} is at positions {first} and {later}; "
                         "ids are unique in a store: never repaired, restore the log from a backup", later)

    def index_for_refs(self) -> int:
        """Up to which position references may be resolved through the index's ids table."""
        return self.trusted if self.ids_ok or not self.full else 0

