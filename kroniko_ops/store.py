"""The event store engine: the commit protocol of format 3 (reads: :mod:`.reading`).

One append: validate and encode outside the lock; under ``locks/append.lock`` bring the tail up
to date (cutting a dead writer's leftovers), check ids and the condition against everything
written, roll the segment if full, ``write()`` the batch's records once, index in batches;
release the lock; fsync the segment written to (concurrent writers share these fsyncs: group
commit); advance the synced position; acknowledge. ``docs/FORMAT.md`` tells every step.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator

from . import fileio, layout
from .codec import encode_batch, encode_event
from .committing import INDEX_EVERY, Committing
from .errors import AppendConditionFailed, DurabilityError, InvalidArgument, InvalidEvent
from .format import record as recfmt
from .handle import Handle, nothing_written
from .index import Index
from .locking import AppendLock
from .logview import LogView
from .model import AppendCondition, Event
from .reading import ReadResult
from .rebuild import catch_up, rebuild_index
from .synced import SyncedFile, SyncedState
from .writer import MAX_BATCH_BYTES, Tail, Writer

_log = logging.getLogger("kroniko_ops")
CATCH_UP_AT = 16 * INDEX_EVERY  # an index further behind is caught up in chunks, not held as pending
__all__ = ["EventStore", "ReadResult"]
class EventStore(Committing, Handle):
    """A DCB event store in a folder (format 3), created when the folder is new or empty.

    ``durable=False`` skips every fsync: for tests and bulk imports only. ``lock_timeout`` is how
    long an append waits for the writer lock before raising :class:`StoreLocked`.
    ``segment_bytes`` and ``max_event_bytes`` apply when the store is created.
    """

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True, create: bool = True,
                 max_event_bytes: int | None = None, lock_timeout: float = 30.0,
                 segment_bytes: int | None = None) -> None:
        self.path = os.fspath(path)
        self.durable = durable
        info = layout.open_store(self.path, create, max_event_bytes, durable, segment_bytes)
        self.max_event_bytes = max_event_bytes or info.max_event_bytes
        self.segment_bytes = info.segment_bytes
        self.lock_timeout = lock_timeout
        self.layout = layout.Layout(self.path)
        self.syncer = fileio.Syncer(durable)
        self.view = LogView(self.layout)
        try:
            self.synced = SyncedFile(self.layout.synced_file)
        except OSError as exc:
            self.view.close()
            raise nothing_written(f"opening {self.layout.synced_file}", exc) from exc
        self.syncer.on_failure = self._fsync_failed
        self.index = Index(self.layout.index)
        self._writer = Writer(self.layout, self.view, self.syncer, self.segment_bytes)
        self._lock: AppendLock | None = None
        self._mutex = threading.RLock()
        self._broken: BaseException | None = None
        self._index_checked: tuple[int, bytes] | None = None  # the index checkpoint `pending` follows
        self._stamp: int | None = None  # a copied batch's commit time (import_batch), else now
        self._closed = False
        self._forked = False
        self._track()

    # -- life cycle ------------------------------------------------------------------------

    def _fsync_failed(self, exc: OSError) -> None:
        """Any fsync of this handle failed (the log's, a folder's, a seal's): this handle is done
        for writing, and the store is poisoned for every process until ``recover``."""
        self._broken = exc
        try:
            self.synced.poison()
        except OSError:
            pass  # the flag could not be set: this handle still refuses, recover still checks

    def close(self) -> None:
        """Index what this handle left unindexed if the lock is free, then release every file.
        Closing twice does nothing; any other call on a closed handle raises :class:`StoreClosed`."""
        if self._closed:
            return
        if self._forked:  # the parent's files: let go of them without touching its locks
            self._drop_inherited()
            self._closed = True
            return
        with self._mutex:
            unindexed = self._writer.pending and (self._index_checked is None
                                                  or self._writer.pending.last > self._index_checked[0])
            if unindexed and self._broken is None and self._lock is not None:
                try:
                    self._lock.acquire(0)
                except Exception:
                    pass
                else:
                    try:
                        self._flush_index(self._writable_tail())
                    except Exception as exc:  # the next writer catches the index up anyway
                        _log.debug("index flush on close failed: %s", exc)
                    finally:
                        self._lock.release()
            self._closed = True
            self._writer.close()
            self.view.close()
            self.synced.close()
            self.index.close()
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventStore({self.path!r}, durable={self.durable})"

    # -- the synced position ---------------------------------------------------------------

    def _state(self) -> SyncedState:
        """The synced position readers may see, re-verified under the lock when it was written
        before a reboot or cannot be read."""
        self._own()
        state = self.synced.read()
        if state is not None and (self.synced.current(state) or state.poisoned):
            # A poisoned value was fsynced before the failure: readers keep reading up to it
            # while appends wait for recover, which alone re-verifies the rest.
            return state
        if state is None and self.view.active_first == 1 and self.view.active is not None and os.pread(
                self.view.active.fd, 1, 0) in (b"", b"\0"):
            return SyncedState(boot=self.synced.boot)  # a new, empty store (its segment all zeros)
        with self._mutex, self._locked():
            self._writable_tail()
            state = self.synced.read()
        assert state is not None
        return state

    def sync_idle(self) -> int:
        """Make records that a writer left unsynced (it died before its fsync) durable and
        visible, if no writer holds the lock; return the synced position."""
        self._own()
        with self._mutex:
            state = self.synced.read()
            if state is not None and state.poisoned:
                return state.position  # past a failed fsync only recover may sync; readers go on
            if self._lock is None:
                self._lock = AppendLock(self.layout.append_lock)
            try:
                self._lock.acquire(0)
            except Exception:
                return self._state().position
            try:
                tail = self._writable_tail()
                self._sync_and_advance(self._writer.fd, tail)
            finally:
                self._lock.release()
            return self._state().position

    # -- for the maintenance tools ---------------------------------------------------------

    def locked(self) -> _Held:
        """Hold ``locks/append.lock`` for a ``with`` body (no append can commit meanwhile)."""
        return self._locked()

    def writable_tail(self) -> Tail:
        """Under :meth:`locked`: the committed tail, after cutting a dead writer's leftovers into
        ``lost-found/``, re-verifying after a reboot and fixing an index ahead of the log. Looks
        at the whole active segment, as ``fsck`` does (an append looks only at its tail)."""
        tail = self._writable_tail(thorough=True)
        self._writer.show(tail)
        return tail

    def synced_state(self) -> SyncedState:
        """The synced position readers stop at (with its segment, end offset and chain)."""
        return self._state()

    def records(self, lo: int, hi: int) -> Iterator[recfmt.Record]:
        """The parsed records of positions ``lo..hi`` (at most the synced head), in order."""
        self._own()
        self._see(self._state())
        for _first, raw in self.view.runs(lo, hi):
            yield from recfmt.iter_records(raw)

    def drop_dirty_spare(self) -> bool:
        """Under :meth:`locked`: remove a preallocated next segment that holds anything but zeros."""
        return self._writer.drop_dirty_spare()

    def recover_log(self) -> Tail:
        """Under :meth:`locked`: re-read every record past the synced position from the disk
        (not the page cache, which may hold pages whose writeback failed), cut what does not
        verify into ``lost-found/``, fsync, and reset the synced position, clearing the flag a
        failed fsync set. Then check the index against the log."""
        state = self.synced.read()
        self._writer.tail = None
        self._writer.pending.clear()
        self._writer.drop_cache()
        cp = self.index.checkpoint()
        trusted = None if state is None or state.poisoned else state
        tail = self._writer.sync_tail(trusted, cp, verify_all=True)
        self.syncer.file(self._writer.fd, "active segment")  # type: ignore[arg-type]
        self.synced.reset(SyncedState(tail.position, tail.segment, tail.end, tail.chain))
        self._index_checked = None
        self._check_index(self.index.checkpoint(), tail)
        return tail

    def flush_index(self) -> None:
        """Under :meth:`locked`: index every record the index has not reached yet."""
        tail = self._writable_tail()
        self._writer.show(tail)
        self._flush_index(tail)
        catch_up(self.index, self, tail)
        self._writer.pending.clear()
        self._index_checked = self.index.checkpoint()

    # -- appending -------------------------------------------------------------------------

    def append(self, events: Event | Iterable[Event], condition: AppendCondition | None = None) -> int:
        """Append one event or a batch atomically; return the last position written.

        Raises :class:`AppendConditionFailed` if ``condition`` matches an event after its
        ``after``, :class:`InvalidEvent` for bad input (nothing written), :class:`StoreLocked`
        when the writer lock is not free within ``lock_timeout`` and :class:`DurabilityError`
        when a write or fsync failed.
        """
        self._own()
        if self._broken is not None:
            raise DurabilityError(
                f"this handle on {self.path} saw a failed write or fsync ({self._broken}); open a new "
                f"EventStore after running: kroniko-ops recover {self.path}")
        batch = [events] if isinstance(events, Event) else list(events)
        if not batch:
            raise InvalidEvent("an append needs at least one event; the batch is empty")
        if condition is not None and not isinstance(condition, AppendCondition):
            raise InvalidArgument("condition must be an AppendCondition or None")
        if len(batch) == 1:
            encoded = [encode_event(batch[0], self.max_event_bytes)]
        else:
            encoded = encode_batch(batch, self.max_event_bytes)
        ids = [eid for eid, _ in encoded]
        explicit = any(e.id is not None for e in batch)
        if explicit and len(set(ids)) != len(ids):
            raise InvalidEvent("the batch holds the same event id twice")
        sha = hashlib.sha256
        hashes = [sha(raw).digest() for _, raw in encoded]
        writer = self._writer
        with self._mutex:
            with self._locked():
                tail = self._writable_tail()
                if explicit:
                    done = self._check_ids(ids, tail)
                    if done is not None:
                        fd, synced_tail = writer.fd, tail
                        return self._acknowledge(fd, synced_tail, done)
                if condition is not None:
                    self._check_condition(condition, tail)
                stamp = writer.commit_time(tail, self._stamp)
                data, sizes, chain = recfmt.encode(tail.position + 1, tail.chain, encoded, hashes, stamp)
                if len(data) > MAX_BATCH_BYTES:
                    raise InvalidEvent(f"the batch is {len(data)} bytes, over the {MAX_BATCH_BYTES} one append may "
                                       "write; split it into several appends")
                if writer.needs_roll(len(data)):
                    self._roll()
                    tail = writer.tail
                    assert tail is not None
                fd = writer.fd
                assert fd is not None
                self._write(fd, data, tail)
                base = tail.position + 1
                end = tail.end + len(data)
                new_tail = Tail(base - 1 + len(batch), chain, writer.first, end, stamp, end - sizes[-1])
                writer.tail = new_tail
                if writer.others:  # a writer alone has no one to cover with its fsync
                    self._publish_end(new_tail)
                writer.pending.add_own(base, data, sizes, recfmt.HEADER, lambda: [
                    (base + i, ids[i], e.type, tuple(e.tags)) for i, e in enumerate(batch)])
            result = self._acknowledge(fd, new_tail, new_tail.position)
            if len(writer.pending) >= INDEX_EVERY:
                # Outside the writer lock: other writers append meanwhile (the index takes its
                # own write lock, and its checkpoint says how far it is valid).
                self._flush_index(new_tail)
        writer.prepare_spare(new_tail.end)
        return result

    def _roll(self) -> None:
        """Seal the full segment and start the next; a full disk found while making the next
        segment's file (before anything changed) leaves this handle usable."""
        self._guard(self._writer.seal_and_roll, "sealing the full segment")

    def import_batch(self, events: Iterable[Event], commit_us: int) -> int:
        """For tools copying a store (``migrate URL STORE``): append ``events`` as one batch
        stamped with the commit time it had in its source (0: unknown, stamped now), raised to the
        last record's if need be, as commit times never decrease along the log."""
        with self._mutex:
            self._stamp = commit_us or None
            try:
                return self.append(events)
            finally:
                self._stamp = None

    def _locked(self) -> _Held:
        self._own()
        if self._lock is None:
            if not self.synced.writable:  # opened read-only: this process may read the store, not write it
                raise nothing_written(f"opening {self.layout.synced_file} for writing",
                                       PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
            try:
                self._lock = AppendLock(self.layout.append_lock)
            except OSError as exc:  # opening or creating the lock file: before anything is written
                raise nothing_written(f"opening the writer lock {self.layout.append_lock}", exc) from exc
        return _Held(self._lock, self.lock_timeout)

    def _writable_tail(self, thorough: bool = False) -> Tail:
        """Under the lock: refuse a poisoned store, verify after a reboot, bring the tail and
        the unindexed records up to date, and check the index against the log."""
        state = self.synced.read()
        if state is not None and state.poisoned:
            raise DurabilityError(
                f"an fsync failed earlier in {self.path}; appends are refused until the unsynced part of the "
                f"log is re-read from disk: run kroniko-ops recover {self.path}")
        reboot = state is None or not self.synced.current(state)
        if not reboot and not thorough and self._index_checked is not None:
            # What this handle knows is enough: one read at its tail says whether anything was
            # written since (and brings in other writers' batches); no stat, no index query.
            tail = self._guard(self._writer.quick_tail, "reading the log tail")
            if tail is not None:
                return tail
        if self.index.stale():
            self.index.reopen()
        cp = self.index.checkpoint()
        if not reboot and state is not None and state.position - cp[0] > CATCH_UP_AT:
            # An index lost or far behind is caught up in chunks to the synced position first:
            # the records past its checkpoint would otherwise all be held in memory as pending.
            # (One of another history is left to _check_index, which rebuilds it.)
            self._see(state)
            if cp[0] == 0 or self.view.record(cp[0]).chain == cp[1]:
                catch_up(self.index, self, Tail(state.position, state.chain, state.segment, state.end))
                cp = self.index.checkpoint()
        tail = self._guard(lambda: self._writer.sync_tail(state, cp, verify_all=reboot, thorough=thorough),
                           "recovering the log tail")
        if reboot:
            self._guard(lambda: self._writer.syncer.file(self._writer.fd, "active segment"), "syncing the log")
            self.synced.reset(SyncedState(tail.position, tail.segment, tail.end, tail.chain))
        self._check_index(cp, tail)
        return tail

    def _check_index(self, cp: tuple[int, bytes], tail: Tail) -> None:
        """The index may be ahead of the log (a power cut took back records it had seen) or
        describe another history (chain mismatch): fix it before anything relies on it."""
        if cp == self._index_checked:
            return
        if cp[0] > tail.position:
            _log.warning("index of %s is ahead of its log (%d > %d); dropping the rows past the log",
                         self.path, cp[0], tail.position)
            self.index.truncate(tail.position, tail.chain)
            cp = (tail.position, tail.chain)
            self._writer.pending.clear()
            self._writer.sync_tail(self.synced.read(), cp)
        elif cp[0] > 0 and self.view.record(cp[0]).chain != cp[1]:
            _log.warning("index of %s does not match its log; rebuilding it", self.path)
            rebuild_index(self, tail)
            cp = self.index.checkpoint()
        self._index_checked = cp

    def _check_ids(self, ids: list[str], tail: Tail) -> int | None:
        """Refuse a reused id; return the existing last position for an idempotent retry."""
        found = self.index.id_positions(ids)
        pend = self._writer.pending.ids
        found.update((i, pend[i]) for i in ids if i in pend)
        if not found:
            return None
        got = [found.get(i) for i in ids]
        first = got[0]
        if first is not None and got == list(range(first, first + len(ids))):
            return got[-1]
        pos, eid = next((p, i) for p, i in zip(got, ids, strict=True) if p is not None)
        raise InvalidEvent(
            f"event id {eid} is already committed at position {pos}; a retry must repeat the whole batch "
            "in order, anything else needs new ids")

    def _check_condition(self, condition: AppendCondition, tail: Tail) -> None:
        after = condition.after or 0
        if after >= tail.position:
            return
        query = condition.fail_if_events_match
        pending = self._writer.pending
        # Records up to `indexed` are in the index; those after it are pending, in memory.
        if pending:
            indexed = pending.first - 1
        else:
            indexed = self._index_checked[0] if self._index_checked is not None else self.index.checkpoint()[0]
        hit: int | None = None
        if query.is_all:
            hit = after + 1  # it matches every event: the first one after `after` conflicts
        elif after < indexed:
            hit = next(iter(self._positions(query, after + 1, min(indexed, tail.position), limit=1)), None)
        if hit is None:
            hit = pending.first_match(query, after)
        if hit is not None:
            # Raised only once the conflicting event is durable, so the caller can read it.
            state = self.synced.read()
            if state is None or state.position < hit:
                self._sync_and_advance(self._writer.fd, tail)
            raise AppendConditionFailed(hit)


class _Held:
    """The append lock held for a ``with`` body."""

    def __init__(self, lock: AppendLock, timeout: float) -> None:
        self.lock, self.timeout = lock, timeout

    def __enter__(self) -> None:
        self.lock.acquire(self.timeout)

    def __exit__(self, *exc: object) -> None:
        self.lock.release()
