"""Building an index generation from the log: by the engine when its index describes another
history, and by ``reindex``. The new generation is written beside the current one and takes its
place by appearing under the next generation's name; then the old files go."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import orjson

from . import fileio, layout
from .errors import StoreCorrupted
from .format import record as recfmt
from .index import Entry, Index
from .indexdb import db_name, generations, remove_generation
from .writer import Tail, entry_of

if TYPE_CHECKING:
    from .store import EventStore  # the engine calls in here; only its type is needed

CHUNK = 100_000  # entries per index transaction while rebuilding
BUILD_CACHE_KIB = 131_072  # SQLite page cache of a build (the file is rewritten whole, then fsynced)


def _entries(store: EventStore, lo: int, hi: int) -> Iterator[list[Entry]]:
    """The index entries of positions ``lo..hi`` in lists of about CHUNK, read in bulk: each
    span's events (a run of a segment, a block of a pack) parsed by one orjson call. A span that
    does not parse so is read again record by record (which names the damage: StoreCorrupted)."""
    batch: list[Entry] = []
    expect = lo
    for first, bodies, _commits, array in store.view.spans(lo, hi):
        entries = _bulk(first, bodies, array) if first == expect else None
        if entries is None:
            raw = b"".join(r for _f, r in store.view.runs(first, first + len(bodies) - 1))
            entries = _one_by_one(store, first, raw)
        batch += entries
        expect = first + len(entries)
        if len(batch) >= CHUNK:
            yield batch
            batch = []
    if expect != hi + 1:
        raise StoreCorrupted(f"the log of {store.path} holds positions {lo}..{expect - 1}, not up to {hi}; "
                             f"run: kroniko-ops fsck {store.path}")
    if batch:
        yield batch


def _bulk(first: int, bodies: Sequence[bytes], array: bytes | memoryview | None) -> list[Entry] | None:
    try:
        docs = orjson.loads(b"[" + b",".join(bodies) + b"]" if array is None else array)
        if len(docs) != len(bodies):
            return None
        return [(pos, doc["id"], doc["type"], doc.get("tags") or ()) for pos, doc in enumerate(docs, first)]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def _one_by_one(store: EventStore, first: int, raw: bytes) -> list[Entry]:
    out: list[Entry] = []
    try:
        for rec in recfmt.iter_records(raw):
            if rec.position != first + len(out):
                raise recfmt.RecordError(f"the record where position {first + len(out)} belongs holds "
                                         f"{rec.position}")
            out.append(entry_of(rec))
    except (recfmt.RecordError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise StoreCorrupted(f"the log of {store.path} is damaged near position {first + len(out)} ({exc}); "
                             f"run: kroniko-ops fsck {store.path}") from exc
    return out


def build_generation(store: EventStore, generation: int, upto: int,
                     on_batch: Callable[[int], None] | None = None) -> tuple[str, int, bytes]:
    """Write a new index database for positions ``1..upto`` under a temp name in ``index/``;
    return its path, the position and the chain it is valid to. ``on_batch`` is told the
    position indexed so far after each transaction (a progress bar).

    The file is private until :func:`publish` fsyncs and renames it, so it is written without a
    journal and without syncs; it is switched to WAL (what every user of an index expects) at
    the end."""
    folder = store.layout.index
    tmp = os.path.join(folder, f"{layout.TMP_PREFIX}{os.getpid()}-{db_name(generation)}")
    for suffix in ("", "-wal", "-shm"):
        if os.path.lexists(tmp + suffix):
            fileio.unlink(tmp + suffix)
    new = Index.at(tmp)
    chain = recfmt.GENESIS
    pos = 0
    try:
        con = new.con
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute(f"PRAGMA cache_size=-{BUILD_CACHE_KIB}")
        if upto:
            for batch in _entries(store, 1, upto):
                pos = batch[-1][0]
                chain = pos_chain = store.view.record(pos).chain
                new.add(batch, (pos, pos_chain))
                if on_batch is not None:
                    on_batch(pos)
        con.execute("PRAGMA cache_size=-2000")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        new.close()
    return tmp, pos, chain


def catch_up(index: Index, store: EventStore, tail: Tail, on_batch: Callable[[int], None] | None = None) -> None:
    """Index the records between ``index``'s checkpoint and ``tail`` (under the writer lock);
    ``on_batch`` as for :func:`build_generation`."""
    cp, _ = index.checkpoint()
    if cp >= tail.position:
        return
    for batch in _entries(store, cp + 1, tail.position):
        pos = batch[-1][0]
        index.add(batch, (pos, tail.chain if pos == tail.position else store.view.record(pos).chain))
        if on_batch is not None:
            on_batch(pos)


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
