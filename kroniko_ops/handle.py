"""The life of a store handle: closing it, refusing calls once closed, and taking the store as
its own in a process forked after it was opened (the pre-fork pattern of Python servers).

A ``flock`` belongs to the open file, which ``fork()`` shares: a child using its parent's
descriptors would hold the writer lock whenever the parent does (and unlocking would release the
parent's). So a child's first call reopens every descriptor, the SQLite connection (SQLite
forbids using a connection across ``fork``: it is closed before the fork, see
:func:`_before_fork`), the writer lock and its waiter thread.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from typing import TYPE_CHECKING

from .errors import NothingWritten, StoreClosed
from .index import Index
from .logview import LogView
from .model import Query
from .reading import ReadPath, ReadResult
from .synced import SyncedFile
from .writer import Writer

if TYPE_CHECKING:
    from .fileio import Syncer
    from .layout import Layout
    from .locking import AppendLock

_LIVE: weakref.WeakSet[Handle] = weakref.WeakSet()  # open handles, told when the process forks
_INHERITED: list[object] = []  # a forked child's copies of its parent's SQLite connections: never used, never closed


FORK_WAIT = 5.0  # seconds fork() waits, in all, for appends and index queries of other threads
_HELD: list[threading.RLock] = []  # locks the forking thread holds across the fork


def _before_fork() -> None:
    """Close every live handle's SQLite connection (reopened on next use, in parent and child
    alike): SQLite forbids carrying one across ``fork()``. The handle's append mutex and its
    index's connection lock are taken first (and held across the fork), so that no other thread
    is inside a query when its connection closes; a handle still busy after ``FORK_WAIT``
    seconds in all keeps its connection (the child then opens its own beside it)."""
    deadline = time.monotonic() + FORK_WAIT
    for store in list(_LIVE):
        if store._closed or store._forked:
            continue
        for lock in (store._mutex, store.index._use):
            if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                break
            _HELD.append(lock)
        else:
            try:
                store.index.suspend()
            except sqlite3.Error:
                pass  # a failed close must not fail the user's fork()


def _after_fork_in_parent() -> None:
    while _HELD:
        _HELD.pop().release()


def _forked() -> None:
    """In a forked child: every handle the parent had open must take its files as its own
    before its next call (see :meth:`Handle._after_fork`)."""
    _HELD.clear()  # the child's handles get new mutexes
    for store in list(_LIVE):
        store._forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_forked)


def nothing_written(doing: str, exc: OSError) -> NothingWritten:
    """The error for a failure before anything was written (opening a file a handle needs)."""
    return NothingWritten(f"{doing} failed ({exc}); nothing was written: fix the cause (disk full, permissions, "
                          "open-files limit) and retry")


class Handle(ReadPath):
    """What :class:`~kroniko_ops.store.EventStore` does to stay its own process's handle."""

    layout: Layout
    syncer: Syncer
    synced: SyncedFile
    segment_bytes: int
    _writer: Writer
    _lock: AppendLock | None
    _mutex: threading.RLock
    _index_checked: tuple[int, bytes] | None
    _closed: bool
    _forked: bool

    def _track(self) -> None:
        """Be told when this process forks."""
        _LIVE.add(self)

    def _own(self) -> None:
        """Before any call: refuse a closed handle; in a forked child, open the store again."""
        if self._closed:
            raise StoreClosed(self.path)
        if self._forked:
            self._after_fork()

    def _drop_inherited(self) -> None:
        """Forget the descriptors, connection, locks and thread a fork copied from the parent:
        closed without unlocking (a flock belongs to the open file the parent still uses, so
        unlocking here would release the parent's lock), the SQLite connection never touched."""
        fds = [self._writer.fd, self.synced.fd]
        if self._lock is not None:
            fds += self._lock.inherited_fds()
        for fd in fds:
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._writer.fd = None
        self.synced.fd = -1
        self._lock = None
        self.view.close()  # read-only descriptors, no locks
        if self.index._conn is not None:  # not suspended before the fork (see _before_fork)
            _INHERITED.append(self.index._conn)
            self.index._conn = None

    def _after_fork(self) -> None:
        """A handle opened before ``fork()`` and used in the child takes the store as its own:
        every descriptor, the SQLite connection, the writer lock and its waiter thread are
        opened again, so that parent and child exclude each other like two processes."""
        self._forked = False
        self._mutex = threading.RLock()  # another thread of the parent may have held it
        self._drop_inherited()
        try:
            self.view = LogView(self.layout)
            self.synced = SyncedFile(self.layout.synced_file)
            self.index = Index(self.layout.index)
        except OSError as exc:
            self._closed = True
            raise nothing_written(f"opening {self.path} again in a forked child", exc) from exc
        self._writer = Writer(self.layout, self.view, self.syncer, self.segment_bytes)
        self._index_checked = None

    def read(self, query: Query | None = None, *, start: int | None = None, backwards: bool = False,
             limit: int | None = None) -> ReadResult:
        """Events matching ``query`` (all when None), up to the head as of now (``.head``).

        ``start`` is inclusive: the first position returned is >= start going forwards,
        <= start going backwards. ``limit`` caps how many are returned.
        """
        self._own()
        return super().read(query, start=start, backwards=backwards, limit=limit)

    def _iter_read(self, *args):  # type: ignore[no-untyped-def]
        self._own()  # a ReadResult iterated after close() (or in a forked child)
        return super()._iter_read(*args)

