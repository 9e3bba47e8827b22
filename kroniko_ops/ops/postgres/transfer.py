"""Copying between a file store and a PostgreSQL store, losslessly (``docs/POSTGRES.md``).

Events travel as stored: position, id, canonical body, SHA-256, chain hash and batch (commit)
marks, so a store copied there and back has the very same events, hashes and chain.

- :func:`to_postgres` (``migrate STORE URL``): into an empty schema, in one transaction.
- :func:`from_postgres` (``migrate URL STORE``): into a new folder, built under a temporary name
  beside it and renamed into place when complete and durable.
- :func:`mirror` (``mirror STORE URL``): follow a file store; each step copies whole batches in
  one transaction starting at the database's head, so a killed mirror resumes where the
  database is, and running it again copies nothing twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from ... import fileio, layout
from ...codec import decode_event, encode_event
from ...errors import InvalidArgument, StoreCorrupted
from ...model import Event
from ...postgres.copying import Row
from ...postgres.store import PostgresEventStore
from ...postgres.url import redact
from ...report import Report
from ...store import EventStore

CHUNK = 5000  # events per mirror step (rounded up to the end of a batch)


def _rows(src: EventStore, lo: int, hi: int) -> Iterator[Row]:
    for rec in src.records(lo, hi):
        yield Row(rec.position, rec.event_id, rec.body, rec.event_hash, rec.chain, rec.commit, rec.time)


def _chain_at(src: EventStore, position: int) -> bytes | None:
    return next((r.chain for r in src.records(position, position)), None) if position else None


def to_postgres(store: str, url: str) -> Report:
    """Copy the file store ``store`` (up to its head now) into the empty store at ``url``."""
    with EventStore(store, create=False, durable=False) as src, PostgresEventStore(url) as dst:
        report = Report("migrate", f"{src.path} -> {dst.url}")
        if dst.head() != 0:
            raise InvalidArgument(f"{dst.url} already holds events (head {dst.head()}); migrate needs an empty "
                                  "schema (choose another with ?schema=NAME); to follow a store use mirror")
        head = src.head()
        new = dst.import_rows(_rows(src, 1, head), expect_head=0)
        _same_chain(src, dst, new)
        report.head = new
        report.figures.update(events=new, source=src.path, target=dst.url)
    return report.finish()


def _same_chain(src: EventStore, dst: PostgresEventStore, head: int) -> None:
    """Both stores end with the same chain hash at ``head`` (it fixes every event before)."""
    pos, chain = dst.head_chain()
    if pos != head or (head and _chain_at(src, head) != chain):
        raise StoreCorrupted(f"after copying, {dst.url} ends at {pos} with another chain than {src.path} at {head}")


def from_postgres(url: str, store: str) -> Report:
    """Copy the PostgreSQL store at ``url`` (up to its head now) into a new file store ``store``
    (a missing or empty folder)."""
    target = os.path.abspath(store)
    if os.path.lexists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise InvalidArgument(f"{store} exists and is not an empty folder; migrate needs a new one")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise InvalidArgument(f"{parent} does not exist")
    with PostgresEventStore(url, create=False, durable=False) as src:
        report = Report("migrate", f"{src.url} -> {store}")
        head, chain = src.head_chain()
        src.head()  # makes every commit up to the head now (ours included) durable before it is copied
        tmp = os.path.join(parent, f"{layout.TMP_PREFIX}{os.getpid()}-pgmigrate-{os.urandom(3).hex()}")
        try:
            with EventStore(tmp, durable=False, max_event_bytes=src.max_event_bytes) as dst:
                for batch, commit_us in _batches(src.rows(1, head)):
                    dst.import_batch(batch, commit_us)
                dst.flush_index()
                end = next(iter(dst.records(head, head)), None) if head else None
                if (dst.head(), end.chain if end else None) != (head, chain if head else None):
                    raise StoreCorrupted(f"the copy of {src.url} does not end with its chain at {head}")
            fileio.make_durable(tmp)
            if os.path.isdir(target):
                fileio.rmdir(target)  # the empty folder checked above
            fileio.rename(tmp, target)
            fileio.fsync_dir(parent)
        except BaseException:
            _remove_partial(tmp)
            raise
        report.head = head
        report.figures.update(events=head, source=src.url, target=target)
    return report.finish()


def _batches(rows: Iterator[Row]) -> Iterator[tuple[list[Event], int]]:
    """The stored events as the batches they were appended in, with each batch's commit time,
    each event checked to re-encode to the very bytes stored (so the file store computes the
    same hashes)."""
    batch: list[Event] = []
    for r in rows:
        try:
            event = decode_event(r.body)
        except ValueError as exc:
            raise StoreCorrupted(f"the event at {r.position} is unreadable ({exc}); run kroniko-ops fsck") from None
        if encode_event(event, max(len(r.body), 1))[1] != r.body:
            raise StoreCorrupted(f"the event at {r.position} is not stored in canonical form; run kroniko-ops fsck")
        batch.append(event)
        if r.commit:
            yield batch, r.commit_us
            batch = []
    if batch:
        raise StoreCorrupted("the last stored batch has no commit mark; run kroniko-ops fsck")


def _remove_partial(tmp: str) -> None:
    """Remove the temporary folder this run built (only ever its own)."""
    if not os.path.isdir(tmp):
        return
    for root, dirs, files in os.walk(tmp, topdown=False):
        for name in files:
            fileio.unlink(os.path.join(root, name))
        for name in dirs:
            fileio.rmdir(os.path.join(root, name))
    fileio.rmdir(tmp)


def mirror(store: str, url: str, *, follow: bool = False, interval: float = 1.0,
           on_step: Callable[[int], None] | None = None) -> Report:
    """Copy what the file store ``store`` has and ``url`` lacks; with ``follow``, keep doing so
    every ``interval`` seconds until interrupted. ``url`` must be empty or a mirror of ``store``
    (its chain equals the file store's at its head), else nothing is written."""
    with EventStore(store, create=False, durable=False) as src, PostgresEventStore(url) as dst:
        report = Report("mirror", f"{src.path} -> {dst.url}")
        copied = 0
        while True:
            pos, chain = dst.head_chain()
            top = src.head()
            if pos > top or (pos and _chain_at(src, pos) != chain):
                raise InvalidArgument(f"{dst.url} is not a mirror of {src.path}: its events up to {pos} differ "
                                      "(or the file store is shorter); nothing was copied")
            while pos < top:
                rows = list(_step(src, pos + 1, top))
                pos = dst.import_rows(iter(rows), expect_head=pos)
                copied += len(rows)
                if on_step is not None:
                    on_step(pos)
            if not follow:
                break
            time.sleep(interval)
        report.head = pos
        report.figures.update(copied=copied, source=src.path, target=redact(dst.url))
    return report.finish()


def _step(src: EventStore, lo: int, top: int) -> Iterator[Row]:
    """About :data:`CHUNK` rows from ``lo``, ending at a commit mark (whole batches only)."""
    for r in _rows(src, lo, top):
        yield r
        if r.position - lo + 1 >= CHUNK and r.commit:
            return
