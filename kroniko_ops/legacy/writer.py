"""The two ways a migration writes its new store, and the batching both share.

``engine``: every batch through :meth:`EventStore.append` (``durable=False``). The reference.

``bulk`` (the default): for a store that is new, empty and held under its append lock for the
whole migration, the same bytes without what only matters when others may write at the same
time: each event file is created once under its final name (``O_EXCL``, never replacing
anything) instead of a temp file, a link and an unlink; there is no per-batch lock, condition or
id lookup (the migration guarantees unique ids); and index lines are appended every
``INDEX_SPAN`` events rather than every batch. The log lines (hashes, chain, commit marks), event
files and index files come out byte for byte as the engine writes them: the tests compare both.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Protocol

from .. import fileio, layout
from ..errors import DurabilityError, StoreCorrupted
from ..index import BOOT_ID, Checkpoint, Index
from ..locking import held
from ..log import ZERO_CHAIN, build_lines
from ..model import Event
from ..store import EventStore
from .reader import as_utf8

BATCH_EVENTS = 2000
BATCH_BYTES = 16 << 20
INDEX_SPAN = 50_000
_PATH_CACHE = 200_000
WRITERS = ("bulk", "engine")

Encoded = tuple[str, bytes]


class _Target(Protocol):
    def append(self, events: list[Event], encoded: list[Encoded]) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class _CachedIndex(Index):
    """The store's index with the file path of each type and tag computed once (property values
    repeat across events, and encoding a name costs more than appending its line)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self._paths: dict[tuple[str, str], str] = {}

    def path(self, kind: str, name: str) -> str:
        """Path of the position list of a type or tag (cached)."""
        key = (kind, name)
        found = self._paths.get(key)
        if found is None:
            if len(self._paths) >= _PATH_CACHE:
                self._paths.clear()
            found = self._paths[key] = super().path(kind, name)
        return found


class _EngineTarget:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    def append(self, events: list[Event], encoded: list[Encoded]) -> int:
        return self.store.append(events)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _BulkTarget:
    """Appends to a new store under its append lock, held until :meth:`close`."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.lay = store.layout
        self.index = _CachedIndex(self.lay.index)
        self.held = ExitStack()
        self.held.enter_context(held(self.lay.append_lock, 0, "append (migration target)"))
        self.fd = -1
        try:
            self.fd = fileio.open_write(self.lay.log, os.O_WRONLY | os.O_APPEND)
            if os.fstat(self.fd).st_size != 0:
                raise StoreCorrupted(f"{store.path} is not an empty store; a migration needs a new one")
        except BaseException:
            self.close()
            raise
        self.head = 0
        self.chain = ZERO_CHAIN
        self.indexed = 0
        # A new store's index holds nothing to cut: start from "this boot wrote through 0".
        self.cp = Checkpoint(0, 0, BOOT_ID)
        self.pending: list[tuple[int, str, str, Sequence[str]]] = []

    def append(self, events: list[Event], encoded: list[Encoded]) -> int:
        events_dir = self.lay.events
        for eid, raw in encoded:
            path = f"{events_dir}/{eid}.json"
            fd = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            try:
                fileio.write_all(fd, raw, path)
            finally:
                os.close(fd)
        items = [(eid, hashlib.sha256(raw).hexdigest()) for eid, raw in encoded]
        data, lines = build_lines(self.head, self.chain, items)
        fileio.write_all(self.fd, data, self.lay.log)
        self.head, self.chain = lines[-1].position, lines[-1].chain
        self.pending.extend((ln.position, ln.event_id, ev.type, ev.tags) for ln, ev in zip(lines, events, strict=True))
        if len(self.pending) >= INDEX_SPAN:
            self.flush()
        return self.head

    def flush(self) -> None:
        """Append the index lines of everything written since the last flush."""
        if self.pending:
            self.cp = self.index.add(self.pending, self.indexed, self.cp)
            self.indexed = self.head
            self.pending = []

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.held.close()


class Sink:
    """Where a migration's events go, in batches: a new store at ``target`` written by
    ``writer``, or nowhere (``target=None``: a dry run). Checks that every batch lands exactly at
    the positions it must, so nothing can shift a position unnoticed."""

    def __init__(self, target: str | None, max_event_bytes: int, writer: str = "bulk") -> None:
        self.target = target
        self.max_event_bytes = max_event_bytes
        self.store: EventStore | None = None
        self.out: _Target | None = None
        if target is not None:
            self.store = EventStore(target, durable=False, max_event_bytes=max_event_bytes)
            try:
                self.out = _BulkTarget(self.store) if writer == "bulk" else _EngineTarget(self.store)
            except BaseException:
                self.store.close()
                raise
        self.events: list[Event] = []
        self.encoded: list[Encoded] = []
        self.bytes = 0
        self.written = 0

    def add(self, event: Event, encoded: Encoded) -> None:
        """Queue one event (with its canonical encoding) for the next batch."""
        self.events.append(event)
        self.encoded.append(encoded)
        self.bytes += len(encoded[1])
        if len(self.events) >= BATCH_EVENTS or self.bytes >= BATCH_BYTES:
            self.flush_batch()

    def flush_batch(self) -> None:
        """Append the queued events as one batch."""
        if not self.events:
            return
        expected = self.written + len(self.events)
        if self.out is not None:
            try:
                last = self.out.append(self.events, self.encoded)
            except OSError as exc:
                raise self._failed(exc) from exc
            if last != expected:
                raise StoreCorrupted(
                    f"{self.target} changed while it was being written (a batch landed at {last}, expected "
                    f"{expected}): nothing else may write to a migration target"
                )
        self.written = expected
        self.events, self.encoded, self.bytes = [], [], 0

    def finish(self) -> None:
        """Write out everything queued (events and index lines)."""
        self.flush_batch()
        if self.out is not None:
            try:
                self.out.flush()
            except OSError as exc:
                raise self._failed(exc) from exc

    def _failed(self, exc: OSError) -> DurabilityError:
        return DurabilityError(f"writing the migration target {self.target} failed: {exc}. It is incomplete: "
                               "move it away and migrate again into a new empty folder")

    def keep_aside(self, label: str, note: str, files: dict[str, bytes]) -> str:
        """Put ``files`` into the target's lost-found (not durable yet); return the folder,
        relative to the target."""
        if self.target is None:
            return "lost-found/(dry-run)"
        folder = layout.set_aside(self.target, label, as_utf8(note), files=files, durable=False)
        return os.path.relpath(folder, self.target)

    def close(self) -> None:
        """Release the lock and the store's file descriptors."""
        if self.out is not None:
            self.out.close()
        if self.store is not None:
            self.store.close()
