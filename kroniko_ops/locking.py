"""The store's locks. Lock files are created once and never deleted.

``locks/maintenance.lock`` (and any lock a tool holds for a whole run) goes through filelock.
``locks/append.lock`` is taken on every append, so :class:`AppendLock` keeps its file open for
the life of the store handle and calls ``flock`` directly: filelock's acquire costs 30-80 us of
Python per call and, when the lock is busy, polls with sleeps, which leaves the lock idle between
holders. Here a busy lock is waited for by a blocking ``flock`` (the kernel hands it over the
moment it is released), in a helper thread so that the wait can time out. Both are the same
``flock`` on the same file, so they exclude each other.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout

from . import fileio
from .errors import StoreLocked

SPINS = 12  # short retries (about 20 ms in all) before a blocking wait


def _open_lock_file(path: str) -> int:
    """Open (creating if needed) a lock file, refusing symlinks and non-regular files."""
    if not os.path.isdir(os.path.dirname(path)):
        fileio.makedirs(os.path.dirname(path))
    fd = fileio.open_write(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreLocked(f"{path} is not a regular file; it cannot serve as a lock")
    return fd


def _locked_out(path: str, timeout: float, what: str) -> StoreLocked:
    return StoreLocked(
        f"could not take the {what} lock {path} within {timeout:g}s: another process holds it; "
        "wait for it to finish or raise the timeout"
    )


class AppendLock:
    """The writer lock of one store handle (not re-entrant; the handle's mutex serialises threads)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = _open_lock_file(path)
        self._held_fd: int | None = None

    def acquire(self, timeout: float) -> None:
        """Take the lock within ``timeout`` seconds (< 0: wait forever) or raise StoreLocked."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._held_fd = self._fd
            return
        except BlockingIOError:
            pass
        if timeout == 0:
            raise _locked_out(self.path, timeout, "append")
        # Writers hold the lock for tens of microseconds (their fsync runs after it), so a busy
        # lock is usually free again at once: retry for a few milliseconds before starting a
        # waiter thread, which costs more than the wait it would save.
        delay = 0.00005
        for _ in range(SPINS):
            time.sleep(delay)
            delay = min(delay * 1.5, 0.002)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._held_fd = self._fd
                return
            except BlockingIOError:
                pass
        # Wait on a separate open file description, so that a wait abandoned after its timeout
        # can be released by its own thread without touching this handle's descriptor.
        waiter = _Waiter(self.path)
        if not waiter.wait(None if timeout < 0 else timeout):
            raise _locked_out(self.path, timeout, "append")
        self._held_fd = waiter.fd

    def release(self) -> None:
        """Release the lock."""
        fd, self._held_fd = self._held_fd, None
        if fd is None:
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
        if fd != self._fd:
            os.close(fd)

    def close(self) -> None:
        """Release and close the lock file descriptor (the file stays)."""
        self.release()
        os.close(self._fd)


class _Waiter:
    """A blocking flock in a daemon thread; an abandoned wait unlocks as soon as it succeeds."""

    def __init__(self, path: str) -> None:
        self.fd = _open_lock_file(path)
        self._done = threading.Event()
        self._mutex = threading.Lock()
        self._abandoned = False
        threading.Thread(target=self._run, name="kroniko-lock-wait", daemon=True).start()

    def _run(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        with self._mutex:
            if self._abandoned:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
                return
            self._done.set()

    def wait(self, timeout: float | None) -> bool:
        if self._done.wait(timeout):
            return True
        with self._mutex:
            if self._done.is_set():
                return True
            self._abandoned = True
            return False


@contextmanager
def held(path: str, timeout: float, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the ``with`` body through filelock, waiting at most
    ``timeout`` seconds (``-1`` waits forever, ``0`` tries once)."""
    if not os.path.isdir(os.path.dirname(path)):
        fileio.makedirs(os.path.dirname(path))
    # preserve_lock_file: the file must outlive every holder (waiters share its inode);
    # no soft fallback, whose release deletes the file.
    lock = FileLock(path, thread_local=False, preserve_lock_file=True, fallback_to_soft=False,
                    poll_interval=0.01)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise _locked_out(path, timeout, what) from None
    try:
        yield
    finally:
        lock.release()
