"""The end of an append: writing the batch, saying where the log now ends, indexing, and the
group commit that makes it durable and visible (the mixin :class:`Committing` of
:class:`~kroniko_ops.store.EventStore`)."""

from __future__ import annotations

import logging

from . import fileio
from .errors import DurabilityError
from .index import Index
from .synced import SyncedFile
from .writer import Tail, Writer

_log = logging.getLogger("kroniko_ops")
INDEX_EVERY = 256  # records the index may lag the log by before the writer indexes them


class Committing:
    """What an append does once it knows its bytes: the write, the index, the fsync."""

    path: str
    index: Index
    synced: SyncedFile
    syncer: fileio.Syncer
    _writer: Writer
    _broken: BaseException | None
    _index_checked: tuple[int, bytes] | None

    def _check_index(self, cp: tuple[int, bytes], tail: Tail) -> None:  # pragma: no cover - EventStore's
        raise NotImplementedError

    def _write(self, fd: int, data: bytes, tail: Tail) -> None:
        try:
            fileio.pwrite_all(fd, data, tail.end, "active segment")
        except OSError as exc:
            # A failed write leaves no whole commit mark: nothing was committed. Take the partial
            # bytes back now (zeros again); if that fails too, the next writer cuts them.
            try:
                self._writer.clear(fd, tail.end, tail.end + len(data), "active segment")
            except OSError:
                self._writer.tail = None
            raise DurabilityError(
                f"writing to the log of {self.path} failed ({exc}); nothing was committed: fix the cause "
                "(disk full, permissions) and retry") from exc

    def _publish_end(self, tail: Tail) -> None:
        """Say where the log now ends (the ``logend`` line), for the writer whose fsync covers
        this batch. A hint: if it cannot be written, each writer fsyncs its own batch."""
        try:
            self.synced.publish_end(tail.position, tail.segment, tail.end, tail.chain)
        except OSError as exc:
            _log.debug("recording the log's end in %s failed: %s", self.path, exc)

    def _flush_index(self, tail: Tail | None) -> None:
        if tail is None or not self._writer.pending:
            return
        try:
            if self.index.stale():  # a rebuild published a newer generation: write to that one
                self.index.reopen()
            pending = self._writer.pending
            cp = self.index.checkpoint()
            if cp != self._index_checked and pending.first <= cp[0] <= tail.position:
                # Other writers indexed these records already (each handle holds all of them):
                # check their checkpoint against the log and keep only what follows it.
                # The most recent ones stay, so that most conditions are still answered from memory.
                self._writer.show(tail)
                self._check_index(cp, tail)
                if self._index_checked == cp:
                    pending.drop_through(cp[0] - INDEX_EVERY // 2)
                    if len(pending) < INDEX_EVERY:
                        return
            # Another writer indexing right now: leave it to them (or to the next flush) instead of
            # waiting in SQLite's busy handler, whose sleeps would stall this writer's next append.
            wait = len(pending) >= 4 * INDEX_EVERY
            if not self.index.add(lambda: pending.entries, (tail.position, tail.chain), wait=wait):
                return
            self._index_checked = (tail.position, tail.chain)
            pending.drop_through(tail.position - INDEX_EVERY // 2)  # recent ones stay: conditions need no query
        except Exception as exc:  # derived data: conditions still see the records through `pending`
            _log.warning("indexing %s failed (%s); it will be caught up", self.path, exc)

    def _acknowledge(self, fd: int | None, tail: Tail, result: int) -> int:
        """After the lock: fsync what was written, advance the synced position, return."""
        self._sync_and_advance(fd, tail)
        return result

    def _sync_and_advance(self, fd: int | None, tail: Tail) -> None:
        """Group commit (:meth:`SyncedFile.commit`): fsync unless another writer's fsync already
        covers this batch, then advance the synced position past every batch written before
        this fsync began."""
        failed: list[OSError] = []
        synced: list[bool] = []

        def fsync_log() -> None:
            if fd is not None:
                try:
                    self.syncer.file(fd, "active segment")
                except OSError as exc:
                    failed.append(exc)
                    raise
            synced.append(True)

        try:
            advanced = self.synced.commit(tail.position, tail.segment, tail.end, tail.chain, fsync_log,
                                          self._writer.others)
        except OSError as exc:
            self._broken = exc
            if failed:
                raise DurabilityError(
                    f"fsync of the log of {self.path} failed ({failed[0]}); the append may or may not be committed. "
                    f"The store refuses appends until you run: kroniko-ops recover {self.path}") from exc
            if not synced:  # reading the synced position failed before any fsync
                raise DurabilityError(
                    f"the append to {self.path} was written but not yet made durable: reading the synced position "
                    f"failed ({exc}); it may or may not be committed. Retry it with the same event ids on a new "
                    "EventStore (a retry of a committed batch is acknowledged, not written twice)") from exc
            raise DurabilityError(
                f"the append to {self.path} is durable, but recording the synced position failed ({exc}); readers "
                f"may not see it until the next append or: kroniko-ops recover {self.path}") from exc
        if not advanced:
            raise DurabilityError(
                f"an fsync failed in another process using {self.path}; this append may or may not be committed. "
                f"Run: kroniko-ops recover {self.path}")

    def _guard(self, fn, doing: str):  # type: ignore[no-untyped-def]
        """Run a step under the lock whose I/O failure leaves this handle unusable."""
        try:
            return fn()
        except OSError as exc:
            self._broken = exc
            state = None
            try:
                state = self.synced.read()
            except OSError:
                pass
            if state is not None and state.poisoned:  # an fsync failed: only recover may go on
                then = f"the store refuses appends until you run: kroniko-ops recover {self.path}"
            else:
                then = "this handle is closed for writing: open a new EventStore and retry"
            raise DurabilityError(
                f"{doing} in {self.path} failed: {exc}. Nothing new was committed by this append; {then}") from exc
