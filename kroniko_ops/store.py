"""The event store engine: the commit protocol of DESIGN section 4 and lock-free reads."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice

import orjson

from . import fileio, layout
from .codec import decode_event, encode_event
from .errors import (
    AppendConditionFailed,
    DurabilityError,
    InvalidArgument,
    InvalidEvent,
    StoreCorrupted,
)
from .index import DURABLE_EVERY, Checkpoint, Index
from .locking import AppendLock
from .log import DAMAGED, LogLine, Tail, build_lines, classify_tail, find_head, iter_lines, read_line
from .model import AppendCondition, Event, Query, SequencedEvent
from .packs import PackSet

_log = logging.getLogger("kroniko_ops")
Entry = tuple[int, str, str, Sequence[str]]
CATCH_UP_CHUNK = 16384
LOOSE_BATCH = 64  # loose events a bulk read decodes ahead of its consumer


class ReadResult:
    """The events of one read, for one head fixed when the read started (``.head``).

    Iterating yields :class:`SequencedEvent` lazily; it may be iterated again with the same result.
    """

    def __init__(self, store: EventStore, query: Query, start: int | None, backwards: bool,
                 limit: int | None, head: int, trusted: int) -> None:
        self.head = head
        self._args = (store, query, start, backwards, limit, trusted)

    def __iter__(self) -> Iterator[SequencedEvent]:
        store, query, start, backwards, limit, trusted = self._args
        return store._iter_read(query, start, backwards, limit, self.head, trusted)


class EventStore:
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

    def _iter_read(self, query: Query, start: int | None, backwards: bool, limit: int | None,
                   head: int, trusted: int) -> Iterator[SequencedEvent]:
        if limit == 0 or head == 0:
            return iter(())
        lo, hi = 1, head
        if start is not None:
            if backwards:
                hi = min(hi, start)
            else:
                lo = max(lo, start)
        if lo > hi:
            return iter(())
        if query.is_all:
            # Positions are gap-free, so a limit on all events is a range.
            if limit is not None:
                if backwards:
                    lo = max(lo, hi - limit + 1)
                else:
                    hi = min(hi, lo + limit - 1)
            # Lists of events flattened in C: a bulk read costs no generator step per event.
            return chain.from_iterable(self._read_range(lo, hi, backwards))
        return self._read_matching(query, lo, hi, backwards, limit, trusted)

    def _read_matching(self, query: Query, lo: int, hi: int, backwards: bool, limit: int | None,
                       trusted: int) -> Iterator[SequencedEvent]:
        positions = self.matching(query, lo - 1, hi, trusted)
        if backwards:
            positions.reverse()
        if limit is not None:
            positions = positions[:limit]
        for pos in positions:
            yield self._sequenced(read_line(self._read_fd, pos))

    def matching(self, query: Query, after: int, upto: int, trusted: int) -> list[int]:
        """Positions in ``(after, upto]`` whose events match ``query``, ascending.

        Uses the index up to ``trusted`` and the log and events past it.
        """
        if query.is_all:
            return list(range(after + 1, upto + 1))
        indexed = min(trusted, upto)
        found: set[int] = set()
        try:
            if indexed > after:
                for item in query.items:
                    found.update(self._item_positions(item.types, item.tags, after, indexed))
        except ValueError:
            _log.warning("index of %s is damaged; reading the log instead (run reindex)", self.path)
            indexed = after
            found.clear()
        for pos, _eid, type_, tags in self._entries(max(after, indexed) + 1, upto):
            if query.matches(type_, tags):
                found.add(pos)
        return sorted(found)

    def _item_positions(self, types: Sequence[str], tags: Sequence[str], after: int, upto: int) -> set[int]:
        """Positions in ``(after, upto]`` of events of any of ``types`` carrying all ``tags``.

        Loads the shortest list and checks the others' membership, so that a condition on a
        rare tag of a common type costs in proportion to the tag, not the type.
        """
        index = self.index
        sides: list[tuple[int, list[tuple[str, str]]]] = [
            (index.count("tags", t), [("tags", t)]) for t in tags
        ]
        if types:
            sides.append((sum(index.count("types", t) for t in types), [("types", t) for t in types]))
        sides.sort(key=lambda side: side[0])
        _, first = sides[0]
        found: set[int] = set()
        for kind, name in first:
            found.update(index.positions(kind, name, after, upto))
        for size, names in sides[1:]:
            if not found:
                break
            if len(found) * 24 > size:  # cheaper to load the whole list than to bisect per candidate
                other: set[int] = set()
                for kind, name in names:
                    other.update(index.positions(kind, name, after, upto))
                found &= other
            else:
                found = {p for p in found if any(index.contains(kind, name, p) for kind, name in names)}
        return found

    def _read_range(self, lo: int, hi: int, backwards: bool) -> Iterator[list[SequencedEvent]]:
        """Every event of ``lo..hi``, in lists: loose ones a few at a time, packed ones a batch at
        a time, decoded straight from the pack.

        A packed batch's bytes are trusted without hashing each event when the pack's own
        checksums were verified (once per handle: the pack was checked against the log's hashes
        before it was published, and a pack never changes); a short read of a big pack hashes
        its events against the log instead, as loose reads do.
        """
        segments = self.packs.segments(lo, hi, refresh=hi - lo >= 64)
        for a, b, pack in reversed(segments) if backwards else segments:
            if pack is None:
                lines = iter_lines(self._read_fd, a, b, backwards)
                while chunk := list(islice(lines, LOOSE_BATCH)):
                    yield [self._sequenced(line) for line in chunk]
                continue
            verified = self.packs.ensure_verified(pack, b - a + 1)
            for start, raws in pack.batches(a, b, backwards):
                if not verified:
                    self._check_hashes(start, raws)
                batch = self._decode_batch(start, raws)
                if backwards:
                    batch.reverse()
                yield batch

    def _check_hashes(self, start: int, raws: list[bytes]) -> None:
        for line, raw in zip(iter_lines(self._read_fd, start, start + len(raws) - 1), raws, strict=True):
            if hashlib.sha256(raw).hexdigest() != line.event_hash:
                raise StoreCorrupted(
                    f"packed event {line.event_id} at position {line.position} does not match its hash "
                    f"in the log; run: kroniko-ops fsck {self.path}"
                )

    def _decode_batch(self, start: int, raws: list[bytes]) -> list[SequencedEvent]:
        """Decode the stored events of positions ``start, start + 1, ...`` in one JSON parse
        (their canonical bytes joined into an array). Any doubt falls back to decoding one by
        one, which names the bad position.

        The events are built without their dataclass ``__init__`` (a third of the cost of a bulk
        read): the fields are exactly the ones ``decode_event`` passes, already validated here.
        """
        try:
            docs = orjson.loads(b"[" + b",".join(raws) + b"]")
        except orjson.JSONDecodeError:
            docs = None
        if docs is not None and len(docs) == len(raws):
            out: list[SequencedEvent] = []
            append, new, pos = out.append, object.__new__, start
            for doc in docs:
                try:
                    type_, tags = doc["type"], doc["tags"]
                    if type_.__class__ is not str or tags.__class__ is not list:
                        break
                    event = new(Event)
                    fields = event.__dict__
                    fields["type"], fields["data"], fields["tags"] = type_, doc["data"], tuple(tags)
                    fields["metadata"], fields["id"] = doc["metadata"], doc["id"]
                except (KeyError, TypeError):
                    break
                seq = new(SequencedEvent)
                seq.__dict__["position"], seq.__dict__["event"] = pos, event
                append(seq)
                pos += 1
            else:
                return out
        events = []
        for k, raw in enumerate(raws):
            try:
                events.append(SequencedEvent(start + k, decode_event(raw)))
            except ValueError:
                raise StoreCorrupted(
                    f"the packed event at position {start + k} does not parse; run: kroniko-ops fsck {self.path}"
                ) from None
        return events

    def _sequenced(self, line: LogLine) -> SequencedEvent:
        return SequencedEvent(line.position, self._event(line))

    def _event(self, line: LogLine) -> Event:
        raw = self._load(line)
        try:
            return decode_event(raw)
        except ValueError:
            raise StoreCorrupted(
                f"event {line.event_id} at position {line.position} does not parse; run: "
                f"kroniko-ops fsck {self.path}"
            ) from None

    def _load(self, line: LogLine) -> bytes:
        """The stored bytes of a committed event, loose or packed, checked against the log.

        A pack already known to hold the position is read first (no failed open of a loose file
        that compaction removed); otherwise the loose file, then the packs listed afresh (a
        compaction publishes the pack before it removes the loose file).
        """
        raw = self.packs.get(line.position, refresh=False)
        if raw is None:
            try:
                raw = fileio.read_file(self.layout.event_file(line.event_id))
            except FileNotFoundError:
                raw = self.packs.get(line.position)
                if raw is None:
                    raise StoreCorrupted(
                        f"event {line.event_id} at position {line.position} is missing; run: "
                        f"kroniko-ops fsck {self.path}"
                    ) from None
        if hashlib.sha256(raw).hexdigest() != line.event_hash:
            raise StoreCorrupted(
                f"event {line.event_id} at position {line.position} does not match its hash in "
                f"the log; run: kroniko-ops fsck {self.path}"
            )
        return raw

    def _entries(self, first: int, last: int) -> Iterator[Entry]:
        """``(position, id, type, tags)`` for positions ``first..last``, from the log and events."""
        for line in iter_lines(self._read_fd, first, last):
            event = self._event(line)
            yield line.position, line.event_id, event.type, event.tags

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
        anything; fsync the files and then the folder (step 2: outside the lock)."""
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

