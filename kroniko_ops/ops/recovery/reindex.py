"""``reindex``: a new index generation built from the log beside the current one, online.

Outside the append lock the new database is built up to the synced position
(:func:`rebuild.build_generation`); under the lock it is caught up to the committed tail and
published under the next generation's name (:func:`rebuild.publish`), so readers and writers
go on meanwhile and see the old index or the new one, never half of one. A run first sets
aside what an interrupted earlier run left (``index/.tmp-*`` of a dead process).
"""

from __future__ import annotations

import os

from ... import layout, rebuild
from ...index import Index, generations
from ...layout import Layout, stale_temp
from ...locking import held
from ...report import Report
from ...store import EventStore
from .common import open_store, require_store


def reindex(path: str | os.PathLike[str], *, lock_timeout: float = 30.0) -> Report:
    """Rebuild the index of the store at ``path``; return the report (exit 0). Holds the
    maintenance lock for the whole run and the append lock only to catch up and publish."""
    root = require_store(path)
    report = Report("reindex", root)
    with held(Layout(root).maintenance_lock, lock_timeout, "maintenance"):
        with open_store(root, lock_timeout, report) as store:
            reindex_store(store, report)
    return report.finish()


def _leftovers(store: EventStore, report: Report) -> None:
    folder = store.layout.index
    stale = sorted(os.path.join(folder, n) for n in os.listdir(folder) if stale_temp(n, os.path.join(folder, n)))
    if stale:
        layout.set_aside(store.path, "index-leftovers", "Files of an index rebuild that was interrupted (its "
                         "process is gone). An index is derived data: these are safe to delete.", move=stale,
                         durable=store.durable)
        for p in stale:
            report.add("stale-temp-file", "warning", os.path.relpath(p, store.path), "left by an interrupted "
                       "index rebuild: set aside into lost-found/", repaired=True)


def reindex_store(store: EventStore, report: Report) -> None:
    """The body of :func:`reindex` (the caller holds the maintenance lock)."""
    _leftovers(store, report)
    folder = store.layout.index
    state = store.synced_state()
    store.view.refresh()
    if store.view.active is not None and store.view.active.first == state.segment:
        store.view.active.extend(state.end)
    gens = generations(folder)
    generation = (gens[-1] if gens else 0) + 1
    tmp, built_to, _chain = rebuild.build_generation(store, generation, state.position)
    with store.locked():
        tail = store.writable_tail()
        store.view.refresh()
        if store.view.active is not None and store.view.active.first == tail.segment:
            store.view.active.extend(tail.end)
        built = Index.at(tmp)
        try:
            rebuild.catch_up(built, store, tail)
            built.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            built.close()
        gens = generations(folder)
        generation = max(generation, (gens[-1] if gens else 0) + 1)
        rebuild.publish(store, tmp, generation)
    report.head = tail.position
    report.figures.update(head=tail.position, events_indexed=tail.position, built_outside_lock=built_to,
                          generation=generation)
