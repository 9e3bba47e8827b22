"""Building an index generation from the log: by the engine when its index describes another
history, and by ``reindex``. The new generation is written beside the current one and takes its
place by appearing under the next generation's name; then the old files go."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import fileio, layout
from .format import record as recfmt
from .index import Index, create_db, db_name, generations, remove_generation
from .writer import Tail, entry_of

if TYPE_CHECKING:
    from .store import EventStore  # the engine calls in here; only its type is needed

CHUNK = 20000  # entries per index transaction while rebuilding


def build_generation(store: EventStore, generation: int, upto: int) -> tuple[str, int, bytes]:
    """Write a new index database for positions ``1..upto`` under a temp name in ``index/``;
    return its path, the position and the chain it is valid to."""
    folder = store.layout.index
    tmp = os.path.join(folder, f"{layout.TMP_PREFIX}{os.getpid()}-{db_name(generation)}")
    for suffix in ("", "-wal", "-shm"):
        if os.path.lexists(tmp + suffix):
            fileio.unlink(tmp + suffix)
    con = create_db(tmp)
    con.execute("PRAGMA synchronous=OFF")  # made durable once, at the end
    con.close()
    new = Index.__new__(Index)
    new.folder, new.generation, new.path = folder, generation, tmp
    from .index import connect

    new.con = connect(tmp)
    new.con.execute("PRAGMA synchronous=OFF")
    new._terms = {}
    new._next = os.path.join(folder, db_name(generation + 1))
    chain = recfmt.GENESIS
    pos = 0
    batch: list = []
    try:
        if upto:
            for _first, raw in store.view.runs(1, upto):
                for rec in recfmt.iter_records(raw):
                    batch.append(entry_of(rec))
                    chain, pos = rec.chain, rec.position
                if len(batch) >= CHUNK:
                    new.add(batch, (pos, chain))
                    batch = []
        if batch:
            new.add(batch, (pos, chain))
        new.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        new.con.close()
    return tmp, pos, chain


def catch_up(index: Index, store: EventStore, tail: Tail) -> None:
    """Index the records between ``index``'s checkpoint and ``tail`` (under the writer lock)."""
    cp, _ = index.checkpoint()
    if cp >= tail.position:
        return
    batch = []
    for _first, raw in store.view.runs(cp + 1, tail.position):
        for rec in recfmt.iter_records(raw):
            batch.append(entry_of(rec))
            if len(batch) >= CHUNK:
                index.add(batch, (rec.position, rec.chain))
                batch = []
    if batch:
        index.add(batch, (tail.position, tail.chain))


def publish(store: EventStore, tmp: str, generation: int) -> None:
    """Give the built database its generation's name (fsynced first), then remove older ones."""
    folder = store.layout.index
    fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
    try:
        store.syncer.file(fd, tmp)
    finally:
        os.close(fd)
    fileio.rename(tmp, os.path.join(folder, db_name(generation)))
    store.syncer.dir(folder)
    for old in generations(folder):
        if old < generation:
            remove_generation(folder, old)
    store.index.reopen()


def rebuild_index(store: EventStore, tail: Tail) -> None:
    """Replace the index with one built from the log up to ``tail`` (caller holds the lock)."""
    gens = generations(store.layout.index)
    generation = (gens[-1] if gens else 0) + 1
    tmp, _pos, _chain = build_generation(store, generation, tail.position)
    publish(store, tmp, generation)
    store._writer.pending.clear()
    store._writer.tail = None
    store._writer.sync_tail(store.synced.read(), store.index.checkpoint())
