"""The store's locks. Lock files are created once and never deleted.

``locks/maintenance.lock`` (and any lock a tool holds for a whole run) goes through filelock.
``locks/append.lock`` is taken on every append, so :class:`AppendLock` keeps its file open for
the life of the store handle and calls ``flock`` directly: filelock's acquire costs 30-80 us of
Python per call and, when the lock is busy, polls with sleeps, which leaves the lock idle between
holders. Here a busy lock is first retried for up to a millisecond, yielding the processor between
tries (writers hold it far shorter), then waited for by a blocking ``flock`` (the kernel hands it
over the moment it is released), in a helper thread so that the wait can time out. Both are the same
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

SPIN_SECONDS = 0.001  # how long a busy append lock is retried before a blocking wait


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
        self._waiter: _Waiter | None = None

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
        # Writers hold the lock for a fraction of a millisecond: try again a few times, giving
        # the processor away in between (the holder gets to run), before handing the wait to
        # the waiter thread, whose wake-up costs a thread switch both ways.
        spin_end = time.monotonic() + min(SPIN_SECONDS, timeout if timeout > 0 else SPIN_SECONDS)
        while time.monotonic() < spin_end:
            os.sched_yield()
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._held_fd = self._fd
                return
            except BlockingIOError:
                pass
        # A busy lock is waited for by a blocking flock, so that the kernel hands it over the
        # moment it is free (polling with sleeps leaves it idle between holders), in this
        # handle's waiter thread so that the wait can time out.
        if self._waiter is None or not self._waiter.usable():
            self._waiter = _Waiter(self.path)
        if not self._waiter.wait(None if timeout < 0 else timeout):
            raise _locked_out(self.path, timeout, "append")
        self._held_fd = self._waiter.fd

    def release(self) -> None:
        """Release the lock."""
        fd, self._held_fd = self._held_fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def inherited_fds(self) -> list[int]:
        """In a forked child: this lock's descriptors, to be closed without unlocking (they share
        their open files, and so any flock, with the parent). The lock is no longer usable."""
        fds = [self._fd] + ([self._waiter.fd] if self._waiter is not None else [])
        self._held_fd, self._waiter, self._fd = None, None, -1
        return fds

    def close(self) -> None:
        """Release and close the lock file descriptors (the file stays)."""
        self.release()
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None
        os.close(self._fd)


class _Waiter:
    """A daemon thread that takes the lock by a blocking flock on its own open file description
    whenever its handle asks. A request abandoned after its timeout releases the lock as soon
    as the flock returns. One per handle and process (a forked child makes its own)."""

    def __init__(self, path: str) -> None:
        self.fd = _open_lock_file(path)
        self._pid = os.getpid()
        self._cv = threading.Condition()
        self._asked = self._served = self._granted = 0
        self._abandoned: set[int] = set()
        self._closed = False
        threading.Thread(target=self._run, name="kroniko-lock-wait", daemon=True).start()

    def usable(self) -> bool:
        """False in a forked child (the thread did not come along)."""
        return self._pid == os.getpid() and not self._closed

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._asked > self._served or self._closed)
                if self._closed:
                    return
                request = self._asked
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            with self._cv:
                self._served = request
                if request in self._abandoned or self._closed:
                    self._abandoned.discard(request)
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                else:
                    self._granted = request
                    self._cv.notify_all()

    def wait(self, timeout: float | None) -> bool:
        """Ask for the lock; True once held through :attr:`fd`, False after ``timeout``."""
        with self._cv:
            self._asked += 1
            request = self._asked
            self._cv.notify_all()
            if self._cv.wait_for(lambda: self._granted == request, timeout):
                return True
            self._abandoned.add(request)
            return False

    def close(self) -> None:
        """Stop the thread when it is idle (a flock still waiting ends with the process)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()


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
