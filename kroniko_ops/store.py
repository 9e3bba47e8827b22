"""The event store engine: the commit protocol of DESIGN section 4 (reads: :mod:`.reading`)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from itertools import islice

from . import fileio, layout
from .codec import encode_event
from .errors import (
    AppendConditionFailed,
    DurabilityError,
    InvalidArgument,
    InvalidEvent,
    StoreCorrupted,
)
from .index import DURABLE_EVERY, Checkpoint, Index
from .locking import AppendLock
from .log import DAMAGED, LogLine, Tail, build_lines, classify_tail, find_head
from .model import AppendCondition, Event, Query, SequencedEvent
from .packs import PackSet
from .reading import ReadPath, ReadResult

_log = logging.getLogger("kroniko_ops")
CATCH_UP_CHUNK = 16384


class EventStore(ReadPath):
    """A DCB event store in a folder (format 2), created when the folder is new or empty.

    ``durable=False`` skips every fsync: for tests and bulk imports only. ``lock_timeout`` is how
    long an append waits for the writer lock before raising :class:`StoreLocked`.
    """

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True, create: bool = True,
                 max_event_bytes: int | None = None, lock_timeout: float = 30.0) -> None:
        self.path = os.fspath(path)
        self.durable = durable
        info = layout.open_store(self.path, create, max_event_bytes, durable)
        self.max_event_bytes = max_event_bytes or info.max_event_bytes
        self.lock_timeout = lock_timeout
        self.layout = layout.Layout(self.path)
        self.index = Index(self.layout.index)
        self.packs = PackSet(self.layout.packs)
        self._read_fd = os.open(self.layout.log, os.O_RDONLY | os.O_CLOEXEC)
        self._write_fd: int | None = None
        self._lock: AppendLock | None = None  # opened by the first append: readers never lock
        self._mutex = threading.Lock()
        self._broken: BaseException | None = None

    # -- life cycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Release the file descriptors; the handle is unusable afterwards."""
        for fd in (self._read_fd, self._write_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self._read_fd, self._write_fd = -1, None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self.packs.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventStore({self.path!r}, durable={self.durable})"

    # -- reading ---------------------------------------------------------------------------

    def head(self) -> int:
        """The last committed position (0 when the store is empty)."""
        return find_head(self._read_fd).head

    def read(self, query: Query | None = None, *, start: int | None = None, backwards: bool = False,
             limit: int | None = None) -> ReadResult:
        """Events matching ``query`` (all when None), up to the head as of now (``.head``).

        ``start`` is inclusive: the first position returned is >= start going forwards,
        <= start going backwards. ``limit`` caps how many are returned.
        """
        query = Query.all() if query is None else query
        if not isinstance(query, Query):
            raise InvalidArgument(f"query must be a Query, got {type(query).__name__}")
        for name, value in (("start", start), ("limit", limit)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidArgument(f"{name} must be an int >= 0, got {value!r}")
        # Checkpoint before head: whatever the checkpoint covers is then at or below the head.
        trusted = self.index.read_checkpoint().trusted
        head = self.head()
        return ReadResult(self, query, start, backwards, limit, head, min(trusted, head))

    def subscribe(self, query: Query | None = None, *, after: int = 0,
                  poll_interval: float = 0.01, max_interval: float = 0.5) -> Iterator[SequencedEvent]:
        """Yield matching events after ``after``, then wait for new ones, forever.

        Polls the log's head, backing off from ``poll_interval`` to ``max_interval`` while
        nothing arrives. Close the generator to stop.
        """
        pos = after
        delay = poll_interval
        while True:
            result = self.read(query, start=pos + 1)
            yield from result
            pos = result.head
            while self.head() == pos:
                time.sleep(delay)
                delay = min(delay * 2, max_interval)
            delay = poll_interval

    # -- appending -------------------------------------------------------------------------

    def append(self, events: Event | Iterable[Event], condition: AppendCondition | None = None) -> int:
        """Append one event or a batch atomically; return the last position written.

        Raises :class:`AppendConditionFailed` if ``condition`` matches an event after its
        ``after``, :class:`InvalidEvent` for bad input (nothing written) and
        :class:`StoreLocked` when the writer lock is not free within ``lock_timeout``.
        """
        if self._broken is not None:
            raise DurabilityError(
                f"this handle on {self.path} saw a failed write or fsync ({self._broken}); "
                "open a new EventStore"
            )
        batch = [events] if isinstance(events, Event) else list(events)
        if not batch:
            raise InvalidEvent("an append needs at least one event; the batch is empty")
        if condition is not None and not isinstance(condition, AppendCondition):
            raise InvalidArgument("condition must be an AppendCondition or None")
        encoded = [encode_event(e, self.max_event_bytes) for e in batch]
        ids = [eid for eid, _ in encoded]
        if len(set(ids)) != len(ids):
            raise InvalidEvent("the batch holds the same event id twice")
        explicit = [e.id is not None for e in batch]
        hashes = [hashlib.sha256(raw).hexdigest() for _, raw in encoded]
        created: list[str] = []
        with self._mutex:
            new_lists: dict[str, int] = {}
            try:
                return self._append_locked(batch, condition, encoded, ids, hashes, explicit, created, new_lists)
            finally:
                self.index.release(new_lists)

    def _append_locked(self, batch: list[Event], condition: AppendCondition | None,
                       encoded: list[tuple[str, bytes]], ids: list[str], hashes: list[str],
                       explicit: list[bool], created: list[str], new_lists: dict[str, int]) -> int:
        """Steps 2-7 of the commit protocol for one validated batch."""
        try:
            new_lists.update(self.index.prepare({e.type for e in batch}, {t for e in batch for t in e.tags}))
            self._prepare(encoded, created)
        except OSError as exc:
            self._remove_generated(created, explicit, ids)
            raise self._fatal(exc, "preparing event files") from exc
        if self._lock is None:
            self._lock = AppendLock(self.layout.append_lock)
        lock = self._lock
        try:
            lock.acquire(self.lock_timeout)
        except BaseException:
            self._remove_generated(created, explicit, ids)
            raise
        attempted = False  # once the log write starts, the files may be named by the log
        try:
            tail = self._writable_tail()
            cp = self._catch_up(tail.head)
            done = self._check_ids(encoded, explicit, created, tail.head)
            if done is not None:
                return done
            if condition is not None:
                self._check_condition(condition, tail.head)
            data, lines = build_lines(tail.head, tail.chain, list(zip(ids, hashes, strict=True)))
            attempted = True
            self._commit(data)
            self._index_batch(cp, tail.head, lines, batch, new_lists)
            return lines[-1].position
        except OSError as exc:
            if attempted:
                raise
            # Recovery or index catch-up failed under the lock: nothing was committed, but the
            # failing call may have been an fsync, which is never retried on this handle.
            self._broken = exc
            raise DurabilityError(
                f"preparing the commit in {self.path} failed: {exc}. Nothing was committed; this "
                "handle is closed for writing: open a new EventStore (it recovers) and retry"
            ) from exc
        finally:
            if not attempted:
                self._remove(created)
            lock.release()

    def _prepare(self, encoded: list[tuple[str, bytes]], created: list[str]) -> None:
        """Write each event to a temp file and publish it under its id without replacing
        anything; fsync the files and the folder, all at once (step 2: outside the lock)."""
        fds = []
        try:
            for eid, raw in encoded:
                name = f"{layout.TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
                tmp = os.path.join(self.layout.events, name)
                fd = fileio.open_write(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
                fds.append(fd)
                try:
                    fileio.write_all(fd, raw, tmp)
                    try:
                        fileio.link(tmp, self.layout.event_file(eid))
                        created.append(eid)
                    except FileExistsError:
                        pass  # decided under the lock: a retry, a reuse, or a concurrent twin
                finally:
                    fileio.unlink(tmp)
            if self.durable:
                fileio.fsync_files_and_dir(fds, self.layout.events)
        finally:
            for fd in fds:
                os.close(fd)

    def _writable_tail(self) -> Tail:
        """The committed tail, after cutting a dead writer's torn or uncommitted lines (set aside
        into lost-found). Runs under the writer lock, so no live writer is mid-write."""
        if self._write_fd is None:
            self._write_fd = fileio.open_write(self.layout.log, os.O_WRONLY | os.O_APPEND)
        tail = find_head(self._read_fd)
        if tail.clean:
            return tail
        cut = os.pread(self._read_fd, tail.file_size - tail.committed_bytes, tail.committed_bytes)
        kind, why = classify_tail(cut, tail.head)
        if kind == DAMAGED:
            # Committed lines were damaged, not left half-written: cutting would drop them.
            raise StoreCorrupted(
                f"the log of {self.path} is damaged after position {tail.head} ({why}); appends are "
                f"refused until it is repaired: run kroniko-ops fsck {self.path}, then restore from a backup"
            )
        layout.set_aside(
            self.path, "log-tail",
            f"Bytes {tail.committed_bytes}..{tail.file_size} of log/append.log, cut by recovery: a "
            f"torn or uncommitted tail after position {tail.head}, left by a writer that died "
            "before its commit mark was written. No append was acknowledged for them.",
            files={"append.log.tail": cut}, durable=self.durable,
        )
        try:
            fileio.truncate(self._write_fd, tail.committed_bytes, self.layout.log)
            if self.durable:
                fileio.fsync(self._write_fd, self.layout.log)
        except OSError as exc:
            raise self._fatal(exc, "cutting the log tail") from exc
        return find_head(self._read_fd)

    def _catch_up(self, head: int) -> Checkpoint:
        """Bring the index up to ``head`` from its trusted checkpoint (step 3)."""
        cp = self.index.read_checkpoint()
        if cp.written > head:
            raise StoreCorrupted(
                f"the index of {self.path} is ahead of its log (position {cp.written} > {head}); "
                f"run: kroniko-ops reindex {self.path}"
            )
        entries = self._entries(cp.trusted + 1, head)
        # In chunks, so that catching up a long way (a rebuilt or lost index) keeps memory flat.
        while chunk := list(islice(entries, CATCH_UP_CHUNK)):
            cp = self.index.add(chunk, chunk[0][0] - 1, cp)
        return cp

    def _check_ids(self, encoded: list[tuple[str, bytes]], explicit: list[bool],
                   created: list[str], head: int) -> int | None:
        """Refuse a reused id; return the existing last position for an idempotent retry."""
        if not any(explicit):
            return None
        found = [self.index.id_position(eid, head) if exp else None
                 for (eid, _), exp in zip(encoded, explicit, strict=True)]
        if all(p is not None for p in found):
            first = found[0]
            assert first is not None
            if found == list(range(first, first + len(found))):
                return found[-1]
        if any(p is not None for p in found):
            pos, eid = next((p, e) for p, (e, _) in zip(found, encoded, strict=True) if p is not None)
            raise InvalidEvent(
                f"event id {eid} is already committed at position {pos}; a retry must repeat the "
                "whole batch in order, anything else needs new ids"
            )
        mine = set(created)
        for eid, raw in encoded:
            if eid in mine:
                continue
            path = self.layout.event_file(eid)
            try:
                same = fileio.read_file(path) == raw
            except FileNotFoundError:
                # Its twin's writer gave up and removed it: publish ours, now under the lock.
                self._prepare([(eid, raw)], created)
                continue
            if not same:
                raise InvalidEvent(
                    f"event id {eid} is in use by an uncommitted event with other content; "
                    "use another id"
                )
        return None

    def _check_condition(self, condition: AppendCondition, head: int) -> None:
        after = condition.after or 0
        if after >= head:
            return
        matches = self.matching(condition.fail_if_events_match, after, head, head)
        if matches:
            raise AppendConditionFailed(matches[0])

    def _commit(self, data: bytes) -> None:
        """Step 5: one write of the batch's lines and one fsync of the log."""
        assert self._write_fd is not None
        try:
            fileio.write_all(self._write_fd, data, self.layout.log)
            if self.durable:
                fileio.fsync(self._write_fd, self.layout.log)
        except OSError as exc:
            raise self._fatal(exc, "committing to the log") from exc

    def _index_batch(self, cp: Checkpoint, head: int, lines: list[LogLine], batch: list[Event],
                     new_lists: dict[str, int]) -> None:
        """Step 6. The append is already committed: an index failure only leaves the index behind,
        which the next writer catches up."""
        entries = [(ln.position, ln.event_id, ev.type, ev.tags) for ln, ev in zip(lines, batch, strict=True)]
        try:
            cp = self.index.add(entries, head, cp, new_lists)
            if self.durable and cp.written - cp.durable >= DURABLE_EVERY:
                paths = self.index.touched_paths(self._entries(cp.durable + 1, cp.written))
                self.index.mark_durable(cp, paths)
        except OSError as exc:
            _log.warning("index update of %s failed after commit (%s); it will be caught up", self.path, exc)

    def _remove(self, created: list[str]) -> None:
        for eid in created:
            try:
                fileio.unlink(self.layout.event_file(eid))
            except OSError:
                pass  # left dangling: fsck reports it, compaction prunes it
        created.clear()

    def _remove_generated(self, created: list[str], explicit: list[bool], ids: list[str]) -> None:
        """Outside the lock only files with generated ids may go: an explicit id's file may
        already be reused by a concurrent writer of the same event."""
        generated = {eid for eid, exp in zip(ids, explicit, strict=True) if not exp}
        self._remove([eid for eid in created if eid in generated])

    def _fatal(self, exc: OSError, doing: str) -> DurabilityError:
        self._broken = exc
        return DurabilityError(
            f"{doing} in {self.path} failed: {exc}. The append may or may not be committed; this "
            "handle is closed for writing: open a new EventStore and read to find out"
        )

