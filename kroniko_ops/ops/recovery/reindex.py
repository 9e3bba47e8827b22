"""``reindex``: a new index generation built from the log beside the current one, online.

Outside the append lock the new database is built up to the synced position
(:func:`rebuild.build_generation`); under the lock it is caught up to the committed tail and
published under the next generation's name (:func:`rebuild.publish`), so readers and writers
go on meanwhile and see the old index or the new one, never half of one. A run first removes
what an interrupted earlier run left (``index/.tmp-*`` of a dead process: derived data), and a
run that fails or is interrupted (Ctrl-C) removes its own half-built database.
"""

from __future__ import annotations

import os
import sqlite3

from ... import fileio, layout, rebuild
from ...index import Index
from ...indexdb import generations
from ...layout import stale_temp
from ...progress import Meter
from ...report import Report
from ...store import EventStore
from ...writer import Tail
from .common import index_write_failed, maintenance_lock, open_store, require_store


def reindex(path: str | os.PathLike[str], *, lock_timeout: float = 30.0, progress: bool = False) -> Report:
    """Rebuild the index of the store at ``path``; return the report (exit 0). Holds the
    maintenance lock for the whole run and the append lock only to catch up and publish;
    ``progress`` shows a bar of the events indexed on a terminal."""
    root = require_store(path)
    report = Report("reindex", root)
    try:
        with maintenance_lock(root, lock_timeout):
            with open_store(root, lock_timeout, report) as store:
                reindex_store(store, report, progress)
    except sqlite3.Error as exc:
        raise index_write_failed(root, "reindex", exc) from exc
    return report.finish()


def _leftovers(store: EventStore, report: Report) -> None:
    """Remove the temp databases (and their ``-wal``/``-shm``) an interrupted index build left in
    ``index/``: only an index build writes ``.tmp-*`` there, and an index is derived data,
    rebuilt from the log at will, so they are deleted rather than set aside (a copy of a large
    index in ``lost-found/`` would only fill the disk)."""
    folder = store.layout.index
    stale = sorted(os.path.join(folder, n) for n in os.listdir(folder) if stale_temp(n, os.path.join(folder, n)))
    for p in stale:
        if os.path.isdir(p) and not os.path.islink(p):
            # Not a file an index build writes: set aside, never deleted.
            layout.set_aside(store.path, "index-leftovers", f"{os.path.basename(p)}, a folder found in index/ under "
                             "a temp name of a process that is gone; not part of the store.", move=[p],
                             durable=store.durable)
            done = "set aside into lost-found/"
        else:
            fileio.unlink(p)
            done = "removed (derived data, rebuilt from the log)"
        report.add("stale-temp-file", "warning", os.path.relpath(p, store.path),
                   f"left by an interrupted index rebuild: {done}", repaired=True)
    if stale:
        store.syncer.dir(folder)


def reindex_store(store: EventStore, report: Report, progress: bool = False) -> None:
    """The body of :func:`reindex` (the caller holds the maintenance lock)."""
    _leftovers(store, report)
    try:
        with Meter("reindex", store.synced_state().position, progress=progress) as meter:
            tail, built_to, generation = _build_and_publish(store, meter)
    except BaseException:
        # Ctrl-C, an I/O error, a damaged log: the half-built database is of no use to anyone.
        # (A SIGKILL leaves it to the next run's _leftovers.)
        _remove_own_temps(store)
        raise
    report.head = tail.position
    report.figures.update(head=tail.position, events_indexed=tail.position, built_outside_lock=built_to,
                          generation=generation)


def _build_and_publish(store: EventStore, meter: Meter) -> tuple[Tail, int, int]:
    folder = store.layout.index
    state = store.synced_state()
    store.view.refresh()
    if store.view.active is not None and store.view.active.first == state.segment:
        store.view.active.extend(state.end)
    gens = generations(folder)
    generation = (gens[-1] if gens else 0) + 1
    tmp, built_to, _chain = rebuild.build_generation(store, generation, state.position, meter.to)
    with store.locked():
        tail = store.writable_tail()
        store.view.refresh()
        if store.view.active is not None and store.view.active.first == tail.segment:
            store.view.active.extend(tail.end)
        built = Index.at(tmp)
        try:
            rebuild.catch_up(built, store, tail, meter.to)
            built.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            built.close()
        gens = generations(folder)
        generation = max(generation, (gens[-1] if gens else 0) + 1)
        rebuild.publish(store, tmp, generation)
    return tail, built_to, generation


def _remove_own_temps(store: EventStore) -> None:
    """Remove this process's temp databases in ``index/`` (a build that did not finish)."""
    folder = store.layout.index
    prefix = f"{layout.TMP_PREFIX}{os.getpid()}-"
    try:
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name.startswith(prefix) and not os.path.isdir(path):
                fileio.unlink(path)
    except OSError:
        pass  # the next reindex (or recover) clears it: it is a temp of a process that is gone by then
