"""Broken engines ("mutants"): each guarantee the harness claims to prove has a broken twin here,
which the harness must catch. The engine's files stay untouched: a mutant is a subclass of
:class:`~kroniko_ops.store.EventStore` (the harness opens its stores with it) and/or patches,
applied only inside the harness's own processes (:func:`applied`), of one named method or
function each (``"module:Class.method"``), so that re-pointing one after a refactoring means
changing one string. Run one with ``kroniko-ops torture STORE --power-loss --mutant NAME`` (or
``kroniko-ops torture STORE --mutant NAME`` for the kill harness): it must exit 4 with the
violation printed. ``--mutant list`` prints them; ``docs/HARNESS.md`` tells what catches each.
The kill harness's store subclasses are in :mod:`.killmutants`.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .. import fileio
from ..format import segment as segfmt
from ..model import AppendCondition
from ..store import EventStore
from ..synced import SyncedState
from ..writer import PEEK
from .killmutants import CarelessStore, ForgetfulStore, PeekingStore, TornHeadStore, UnlockedWriteStore

# -- broken durability (the power-loss simulator) ------------------------------------------------


class NoLogFsyncStore(EventStore):
    """Acknowledges an append (and advances the synced position) without the fsync of the log."""

    def _sync_and_advance(self, fd: int | None, tail: Any) -> None:
        super()._sync_and_advance(None, tail)  # no descriptor: nothing to fsync


class RetryAckUnsyncedStore(EventStore):
    """Acknowledges an idempotent retry as soon as it finds the batch, without making it durable
    (the batch may be a dead writer's, written but never fsynced)."""

    _retrying = False

    def _check_ids(self, ids: list[str], tail: Any) -> int | None:
        done = super()._check_ids(ids, tail)
        self._retrying = done is not None
        return done

    def _acknowledge(self, fd: int | None, tail: Any, result: int) -> int:
        if self._retrying:
            self._retrying = False
            return result
        return super()._acknowledge(fd, tail, result)


class RejectUnsyncedStore(EventStore):
    """Raises a condition failure without first making the conflicting event durable."""

    def _check_condition(self, condition: AppendCondition, tail: Any) -> None:
        self._sync_and_advance = lambda fd, tail: None  # type: ignore[method-assign]
        try:
            super()._check_condition(condition, tail)
        finally:
            del self._sync_and_advance


class IndexAheadStore(EventStore):
    """Trusts an index that is ahead of the log (a power cut took back records it had seen)."""

    def _check_index(self, cp: tuple[int, bytes], tail: Any) -> None:
        if cp[0] > tail.position:
            self._index_checked = cp
            return
        super()._check_index(cp, tail)


class ReadsPastSyncedStore(EventStore):
    """Readers see every whole committed record written, not only those up to the synced position."""

    def _state(self) -> SyncedState:
        state = super()._state()
        try:
            fd = os.open(os.path.join(self.layout.log_dir, segfmt.seg_name(state.segment)), os.O_RDONLY)
        except OSError:
            return state
        try:
            for rec in segfmt.scan(fd, state.end, os.fstat(fd).st_size):
                if rec.commit:
                    state = SyncedState(rec.position, state.segment, rec.end, rec.chain, state.boot)
        except Exception:  # a record being written: stop before it
            pass
        finally:
            os.close(fd)
        return state


def _advance_first(original: Callable[..., None]) -> Callable[..., None]:
    def sync_and_advance(self: Any, fd: int | None, tail: Any) -> None:
        self.synced.advance(tail.position, tail.segment, tail.end, tail.chain)
        if fd is not None:
            self.syncer.file(fd, "active segment")
    return sync_and_advance


def _advance_unconditionally(original: Callable[..., bool]) -> Callable[..., bool]:
    def advance(self: Any, position: int, segment: int, end: int, chain: bytes) -> bool:
        cur = self.read()
        if cur is not None and cur.poisoned:
            return False
        self._write(SyncedState(position, segment, end, chain, self.boot, False))
        return True
    return advance


def _logend_after_fsync(original: Callable[..., bool]) -> Callable[..., bool]:
    def commit(self: Any, position: int, segment: int, end: int, chain: bytes, sync: Callable[[], None],
               others: bool) -> bool:
        try:
            sync()
        except OSError:
            self.poison()
            raise
        time.sleep(0.002)  # an fsync's length on a disk (on tmpfs it takes none): others write meanwhile
        target = (position, end, chain)
        if others:
            _cur, ahead = self.peek()  # read after the fsync: it may name writes the fsync did not cover
            if ahead is not None and ahead.boot == self.boot and ahead.segment == segment and ahead.position > position:
                target = (ahead.position, ahead.end, ahead.chain)
        return self.advance(target[0], segment, target[1], target[2])
    return commit


def _not_durable(original: Callable[..., Any]) -> Callable[..., Any]:
    """The function called with ``durable=False`` (its keyword or its last positional argument)."""
    def call(*args: Any, **kw: Any) -> Any:
        if "durable" in kw:
            return original(*args, **{**kw, "durable": False})
        return original(*args[:-1], False, **kw)
    return call


def _without_head_chain_finding(original: Callable[..., None]) -> Callable[..., None]:
    def walk(chain: Any, report: Any, *rest: Any, **kw: Any) -> None:
        original(chain, report, *rest, **kw)
        report.findings[:] = [f for f in report.findings if "chain at the head differs" not in f.message]
    return walk


def _drop_last_block(original: Callable[..., Any]) -> Callable[..., Any]:
    def finish(self: Any, last_chain: bytes | None = None) -> Any:
        # The events not yet in a block never reach the pack.
        self._bodies, self._ids, self._commits, self._bytes = [], [], [], 0
        return original(self, last_chain)
    return finish


def _copy_past_synced_end(original: Callable[..., Any]) -> Callable[..., Any]:
    def active(lay: Any, state: Any) -> Any:
        part = original(lay, state)
        head = part.files[0]
        head.size = os.fstat(head.fd).st_size  # as far as written, synced or not
        return part
    return active


def _pack_without_fsync(original: Callable[..., Any]) -> Callable[..., Any]:
    def write(lay: Any, syncer: Any, *rest: Any) -> Any:
        return original(lay, fileio.Syncer(False), *rest)
    return write


def _roll_without_folder_fsync(original: Callable[..., None]) -> Callable[..., None]:
    def create_next(self: Any, first: int, spare: str) -> None:
        fileio.rename(spare, os.path.join(self.layout.log_dir, segfmt.seg_name(first)))  # log/ is not fsynced
    return create_next


def _fsync_failure_unpoisoned(original: Callable[..., None]) -> Callable[..., None]:
    def _fsync_failed(self: Any, exc: OSError) -> None:
        self._broken = exc  # this handle stops; the store is left unpoisoned for the others
    return _fsync_failed


def _tail_from_file_size(original: Callable[..., Any]) -> Callable[..., Any]:
    def quick_tail(self: Any) -> Any:
        if self.tail is not None and self.fd is not None and self.tail.segment == self.first and not self.rolled():
            # "The file is as long as when this handle last wrote, so nothing was written since":
            # true of a growing file, false of a preallocated one, whose size never changes.
            return self.tail
        return original(self)
    return quick_tail


def _tail_trusted(original: Callable[..., Any]) -> Callable[..., Any]:
    def quick_tail(self: Any) -> Any:
        tail, fd = self.tail, self.fd
        if tail is None or fd is None or tail.segment != self.first:
            return original(self)
        # Only what follows the remembered tail is read, never the record it names: a repair
        # that cut that record since goes unnoticed.
        buf = os.pread(fd, PEEK, tail.end)
        if buf[:1] == b"\0" or (not buf and not self.rolled()):
            self.others = False
            return tail
        return self._follow(tail, buf) if buf else None
    return quick_tail


def _always_holds(original: Callable[..., bool]) -> Callable[..., bool]:
    def holds(self: Any, tail: Any) -> bool:
        return True  # the slow path, too, starts from the remembered tail unchecked
    return holds


def _zeros_end_the_records(original: Callable[..., None]) -> Callable[..., None]:
    def _extend(self: Any, end: int) -> None:
        have = self.offsets[-1]
        if end <= have:
            return
        data = os.pread(self.fd, end - have, have).split(b"\0")[0]  # the first zero (or the file's end) ends them
        data = data[: data.rfind(b"\n") + 1]
        for line in data.split(b"\n")[:-1]:
            self.offsets.append(self.offsets[-1] + len(line) + 1)
        self.last = self.first + len(self.offsets) - 2
    return _extend


def _read_run_unchecked(original: Callable[..., bytes]) -> Callable[..., bytes]:
    def read_run(self: Any, lo: int, hi: int) -> bytes:
        a, b = self.span(lo, hi)
        return os.pread(self.fd, b - a, a)  # whatever is there now, at the offsets learned before
    return read_run


def _follow_unchecked(original: Callable[..., None]) -> Callable[..., None]:
    def follow(self: Any, position: int, chain: bytes, end: int) -> None:
        self.extend(end)  # the offsets learned before are trusted, whatever the log holds now
    return follow


# -- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """One broken behaviour: what it breaks, the harness run that must catch it (``operation``:
    a power-loss operation, or ``torture`` for the kill harness), the violation it is caught
    with (a regular expression the report matches), its store class and its patches
    (``"module:attribute"`` with a function from the original to its replacement)."""

    name: str
    breaks: str
    operation: str
    caught_as: str
    store: type[EventStore] | None = None
    patches: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
    io_sweep: bool = False  # caught by the I/O-error sweep of its operation, which then runs with it


MUTANTS: dict[str, Mutant] = {m.name: m for m in (
    Mutant("no-log-fsync", "an append is acknowledged without the fsync of the log", "append",
           "is missing", NoLogFsyncStore),
    Mutant("synced-before-fsync", "the synced position (what readers see) advances before the fsync "
           "(Committing._sync_and_advance)", "append", "shown to a reader",
           patches=(("kroniko_ops.committing:Committing._sync_and_advance", _advance_first),)),
    Mutant("reader-past-synced", "readers read every committed record written, past the synced position "
           "(EventStore._state)", "append", "shown to a reader", ReadsPastSyncedStore),
    Mutant("roll-no-dir-fsync", "a preallocated segment takes its name at a roll without fsyncing log/ "
           "(SegmentFiles.create_next)", "roll", "does not open|is missing",
           patches=(("kroniko_ops.segments:SegmentFiles.create_next", _roll_without_folder_fsync),)),
    Mutant("fsync-failure-unpoisoned", "a failed fsync outside the commit (a seal, the log folder at a roll, "
           "preallocation) leaves the store unpoisoned: other handles go on appending (EventStore._fsync_failed)",
           "roll", "unpoisoned", patches=(("kroniko_ops.store:EventStore._fsync_failed", _fsync_failure_unpoisoned),),
           io_sweep=True),
    Mutant("tail-from-file-size", "a writer tells whether others appended from the file's size, not from the "
           "bytes at its tail (a preallocated segment never grows: it writes over their records) "
           "(Writer.quick_tail)", "concurrent", "acknowledged .* is|is missing|does not open",
           patches=(("kroniko_ops.writer:Writer.quick_tail", _tail_from_file_size),)),
    Mutant("retry-ack-unsynced", "an idempotent retry is acknowledged without making the batch it found durable "
           "(EventStore._acknowledge after _check_ids)", "concurrent", "is missing", RetryAckUnsyncedStore),
    Mutant("reject-unsynced", "a condition failure is raised before the conflicting event is durable "
           "(EventStore._check_condition)", "concurrent", "the conflict was not durable", RejectUnsyncedStore),
    Mutant("synced-backwards", "the synced position may move backwards: a writer whose fsync finished late "
           "lowers it (SyncedFile.advance)", "concurrent", "moved back",
           patches=(("kroniko_ops.synced:SyncedFile.advance", _advance_unconditionally),)),
    Mutant("logend-after-fsync", "group commit raises the synced position to the log's end as read after its "
           "fsync, not before: writes made during the fsync count as covered (SyncedFile.commit)", "concurrent",
           "names bytes", patches=(("kroniko_ops.synced:SyncedFile.commit", _logend_after_fsync),)),
    Mutant("index-ahead-unchecked", "an index ahead of the log is trusted on open (EventStore._check_index)",
           "append", "not in the log", IndexAheadStore),
    Mutant("restore-no-fsync", "restore writes its files and folders without fsync (ops/backup/apply.py: "
           "_write, _sync_tree)", "restore", "was published",
           patches=(("kroniko_ops.ops.backup.apply:_write", _not_durable),
                    ("kroniko_ops.ops.backup.apply:_sync_tree", _not_durable))),
    Mutant("verify-skips-head-chain", "verify-backup does not compare the chain at the head with the manifest's "
           "(ops/backup/verify.py: walk)", "backup", "another head chain",
           patches=(("kroniko_ops.ops.backup.verify:walk", _without_head_chain_finding),)),
    Mutant("backup-past-synced", "backup copies the active segment as far as it is written, past the synced end "
           "(ops/backup/snapshot.py: _active)", "backup", "failed with no fault injected",
           patches=(("kroniko_ops.ops.backup.snapshot:_active", _copy_past_synced_end),)),
    Mutant("compact-drops-last-block", "compaction drops a pack's last block (format/packwrite.py: PackWriter.finish)",
           "compact", "failed with no fault injected",
           patches=(("kroniko_ops.format.packwrite:PackWriter.finish", _drop_last_block),)),
    Mutant("compact-no-fsync", "compaction publishes packs it never fsynced (ops/compact/packing.py: write)",
           "compact", "does not open|is missing|engine failed",
           patches=(("kroniko_ops.ops.compact.packing:write", _pack_without_fsync),)),
    Mutant("tail-trusted", "a writer appends after the tail it remembers without checking that the record it "
           "names is still the last committed one: after fsck --repair --accept-loss cut the log it writes past "
           "the zeros and answers a retry of a lost event from stale memory (Writer.quick_tail, Writer.holds)",
           "lost-tail", "the handle open across the cut",
           patches=(("kroniko_ops.writer:Writer.quick_tail", _tail_trusted),
                    ("kroniko_ops.writer:Writer.holds", _always_holds))),
    Mutant("zeros-end-the-records", "a reader takes the first zero inside the synced records of the active segment "
           "(or a file cut short) for their end, silently, not for lost acknowledged records "
           "(ActiveSegment._extend)", "lost-tail", "without raising StoreCorrupted|names position",
           patches=(("kroniko_ops.activeseg:ActiveSegment._extend", _zeros_end_the_records),)),
    Mutant("read-run-unchecked", "a handle reads records of the active segment at the offsets it learned before "
           "the disk lost them, and returns what it can still parse, silently (ActiveSegment.read_run)",
           "lost-tail", "a handle that read every record before the loss: read",
           patches=(("kroniko_ops.activeseg:ActiveSegment.read_run", _read_run_unchecked),)),
    Mutant("offsets-trusted", "a reader keeps the active segment's offsets it learned before fsck --repair "
           "--accept-loss cut those records and new ones took their bytes (ActiveSegment.follow)", "lost-tail",
           "after the repair and the appends, a handle that read every record before the loss",
           patches=(("kroniko_ops.activeseg:ActiveSegment.follow", _follow_unchecked),)),
    Mutant("lock-released-before-write", "the writer lock is released before the batch is written "
           "(EventStore._write)", "torture", "property [0-9]", UnlockedWriteStore),
    Mutant("peek-past-head", "a read returns one event past the head it reports", "torture", r"\(read-",
           PeekingStore),
    Mutant("mid-batch-head", "a read stops inside the last batch and calls that its head", "torture",
           "read-mid-batch", TornHeadStore),
    Mutant("ignore-condition", "an append drops its condition", "torture", "condition-violated", CarelessStore),
    Mutant("drop-event", "a read leaves out the first event it should return", "torture", "read-wrong-result",
           ForgetfulStore),
)}

# The kill harness's workers open their store with these (by name).
STORES: dict[str, type[EventStore]] = {m.name: m.store or EventStore for m in MUTANTS.values()}


def get(name: str) -> Mutant:
    """The mutant called ``name``; KeyError naming the known ones otherwise."""
    try:
        return MUTANTS[name]
    except KeyError:
        raise KeyError(f"no mutant {name!r}; choose from {', '.join(MUTANTS)}") from None


def _target(spec: str) -> tuple[Any, str]:
    module, _, attr = spec.partition(":")
    owner: Any = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name


@contextmanager
def applied(name: str | None) -> Iterator[Mutant | None]:
    """Apply the patches of mutant ``name`` (None: none) in this process (and the processes it
    forks) for the ``with`` body; undo them after."""
    if name is None:
        yield None
        return
    mutant = get(name)
    undo: list[tuple[Any, str, Any]] = []
    try:
        for spec, make in mutant.patches:
            owner, attr = _target(spec)
            original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
            undo.append((owner, attr, original))
            setattr(owner, attr, make(getattr(owner, attr)))
        yield mutant
    finally:
        for owner, attr, original in reversed(undo):
            setattr(owner, attr, original)
