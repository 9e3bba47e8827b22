"""``recover``: the crash recovery every writer does when it takes the append lock, on demand and
reported. Under the lock: the unsynced part of the log is re-read from disk (after a failed fsync
as after a reboot), a torn or uncommitted tail is cut into ``lost-found/``, an interrupted seal is
finished, everything committed is fsynced and the synced position reset (which clears the poison
flag), the index is caught up, and temp files of dead processes are set aside. All of it through
the engine (:meth:`EventStore.writable_tail`). Idempotent; damage to committed records is only
reported (exit 4): the engine refuses to cut it.
"""

from __future__ import annotations

import os
import sqlite3

from ... import fileio, rebuild
from ...errors import StoreCorrupted
from ...format import segment as segfmt
from ...progress import Meter
from ...report import Finding, Report
from ...store import EventStore
from ...synced import SyncedState
from ..fsck.context import Context
from ..fsck.tail import plan_and_tail
from .common import index_write_failed, open_store, require_store, set_aside_temps

RECOVERED = {"log-torn-tail", "log-uncommitted-tail", "store-poisoned", "synced-damaged",
             "segment-seal-unfinished", "segment-spare-dirty"}


def recover(path: str | os.PathLike[str], *, lock_timeout: float = 30.0, progress: bool = False) -> Report:
    """Recover the store at ``path`` after a crash or a failed fsync; return the report (exit 0
    nothing to do, 1 repaired, 4 damage remains that needs a person, 5 both). ``progress`` shows
    a bar of the index's catch-up on a terminal."""
    root = require_store(path)
    report = Report("recover", root)
    try:
        with open_store(root, lock_timeout, report) as store, store.locked():
            recover_locked(store, report, progress)
    except sqlite3.Error as exc:
        raise index_write_failed(root, "recover", exc) from exc
    return report.finish()


def tail_findings(root: str) -> tuple[list[Finding], int]:
    """The problems of the log's files and tail (no record walk), and the committed head."""
    ctx = Context(root, Report("recover", root), full=False)
    plan, tail = plan_and_tail(ctx)
    plan.close()
    head = tail.head
    return [f for f in ctx.report.findings if f.severity != "info"], head


def recover_locked(store: EventStore, report: Report, progress: bool = False) -> None:
    """The recovery steps; the caller holds the append lock (:meth:`EventStore.locked`)."""
    root = store.path
    before, _ = tail_findings(root)
    state = store.synced.read()
    if state is not None and state.poisoned:
        # Stamped with no boot id, the value is re-verified like after a reboot: the writer
        # re-reads everything past it and cuts what does not verify (its fsync failed).
        fresh = SyncedState(state.position, state.segment, state.end, state.chain, "", False)
        fileio.pwrite_all(store.synced.fd, fresh.encode(), 0, store.synced.path)
    cp_before = store.index.checkpoint()[0]
    try:
        tail = store.writable_tail()
    except StoreCorrupted as exc:
        report.findings.extend(before)
        report.add("recover-refused", "error", "log", f"{exc}")
        return
    fd = fileio.open_read(os.path.join(store.layout.log_dir, segfmt.seg_name(tail.segment)))
    try:
        store.syncer.file(fd, segfmt.seg_name(tail.segment))
    finally:
        os.close(fd)
    store.synced.reset(SyncedState(tail.position, tail.segment, tail.end, tail.chain))
    if cp_before > tail.position:
        report.add("index-checkpoint-ahead", "error", "index", f"the index checkpoint named position {cp_before} "
                   f"past the log's end {tail.position}: rows past the log dropped", tail.position, repaired=True)
    behind = tail.position - store.index.checkpoint()[0]
    if behind > 0:  # the long part, when the index is far behind: counted here, then flushed
        with Meter("recover: index", tail.position, progress=progress) as meter:
            rebuild.catch_up(store.index, store, tail, meter.to)
    store.flush_index()
    if behind > 0:
        report.add("index-behind", "info", "index", f"the index was {behind} position(s) behind the log; caught up")
    set_aside_temps(root, report, store.durable)
    store.drop_dirty_spare()
    after, head = tail_findings(root)
    still = {(f.code, f.path) for f in after}
    for f in before:
        if f.code in RECOVERED and (f.code, f.path) not in still:
            f.repaired = True
        report.findings.append(f)
    seen = {(f.code, f.path) for f in before}
    report.findings.extend(f for f in after if (f.code, f.path) not in seen)
    report.head = head
    report.figures["head"] = head
