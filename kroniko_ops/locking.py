"""The store's two locks, taken through filelock (flock on Unix). Lock files are never deleted."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout

from . import fileio
from .errors import StoreLocked

POLL_INTERVAL = 0.0005


def make_lock(path: str) -> FileLock:
    """A flock-based lock on ``path`` that keeps its file on release and never falls back to a
    soft (file-existence) lock, whose release would delete the file."""
    if not os.path.isdir(os.path.dirname(path)):
        fileio.makedirs(os.path.dirname(path))
    # thread_local=False: one EventStore may be used from several threads, guarded by its own
    # mutex. A short poll interval: filelock polls a non-blocking flock, and the append lock is
    # held for well under a millisecond, so the default 50 ms would leave it idle most of the time.
    return FileLock(path, thread_local=False, preserve_lock_file=True, fallback_to_soft=False,
                    poll_interval=POLL_INTERVAL)


def acquire(lock: FileLock, timeout: float, what: str) -> None:
    """Take ``lock`` within ``timeout`` seconds or raise :class:`StoreLocked`."""
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise StoreLocked(
            f"could not take the {what} lock {lock.lock_file} within {timeout:g}s: another "
            "process holds it; wait for it to finish or raise the timeout"
        ) from None


@contextmanager
def held(path: str, timeout: float, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the ``with`` body, waiting at most ``timeout`` seconds
    (``-1`` waits forever, ``0`` tries once)."""
    lock = make_lock(path)
    acquire(lock, timeout, what)
    try:
        yield
    finally:
        lock.release()
