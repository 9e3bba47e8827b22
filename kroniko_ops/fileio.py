"""The file operations the engine and the maintenance tools write through.

Every write, fsync, link, rename, truncate and open-for-writing goes through this module, so a
test (or the torture harness) can install a fault injector that fails the Nth call with EIO or
ENOSPC (:func:`set_fault_injector`), and the power-loss simulator can record every change to the
disk with its file, offset, bytes and time (:func:`set_recorder`). Reads use plain ``os`` calls:
they never change the store.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import sys
import time
from collections.abc import Callable

FaultInjector = Callable[[str, str], None]
_FULLFSYNC: int | None = getattr(fcntl, "F_FULLFSYNC", None) if sys.platform == "darwin" else None
_injector: FaultInjector | None = None


def set_fault_injector(injector: FaultInjector | None) -> FaultInjector | None:
    """Install ``injector(op, path)``, called before each mutating call; return the previous one.

    The injector raises ``OSError`` to make that call fail. ``op`` is one of ``open``, ``write``,
    ``fsync``, ``link``, ``rename``, ``unlink``, ``truncate``, ``mkdir``.
    """
    global _injector
    previous, _injector = _injector, injector
    return previous


def _hook(op: str, path: str) -> None:
    if _injector is not None:
        _injector(op, path)


Recorder = Callable[[dict], None]
_recorder: Recorder | None = None


def set_recorder(recorder: Recorder | None) -> Recorder | None:
    """Install ``recorder(op)``, called after each change to the disk succeeded; return the
    previous one. ``op`` is a dict: ``op`` (``create``, ``write``, ``truncate``, ``link``,
    ``rename``, ``exchange``, ``unlink``, ``mkdir``, ``fsync``, ``fdatasync``, ``fsync_dir``,
    ``syncfs``), ``path`` (the real path, resolved from the descriptor), ``t0``/``t1``
    (``time.monotonic_ns()`` before and after the call: one clock for every process of the
    machine) and per kind ``offset``/``data``/``size``/``src``."""
    global _recorder
    previous, _recorder = _recorder, recorder
    return previous


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"<fd {fd}>"


def _record(op: str, t0: int, path: str | None = None, fd: int | None = None, **fields: object) -> None:
    assert _recorder is not None
    where = _fd_path(fd) if fd is not None else os.path.abspath(path or "")
    _recorder({"op": op, "path": where, "t0": t0, "t1": time.monotonic_ns(), **fields})


def _t0() -> int:
    return time.monotonic_ns() if _recorder is not None else 0


def open_write(path: str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` for writing (``flags`` must include a write mode)."""
    _hook("open", path)
    if _recorder is None or not flags & os.O_CREAT:
        return os.open(path, flags | os.O_CLOEXEC, mode)
    t0, existed = _t0(), os.path.lexists(path)
    fd = os.open(path, flags | os.O_CLOEXEC, mode)
    if not existed:
        _record("create", t0, path)
    if flags & os.O_TRUNC and existed:
        _record("truncate", t0, path, size=0)
    return fd


def write_all(fd: int, data: bytes, path: str = "") -> None:
    """Write all of ``data`` to ``fd`` (looping over short writes)."""
    _hook("write", path)
    t0 = _t0()
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - os.write raises rather than return 0 on regular files
            raise OSError(errno.EIO, "short write", path)
        view = view[n:]
    if _recorder is not None:
        _record("write", t0, fd=fd, offset=os.lseek(fd, 0, os.SEEK_CUR) - len(data), data=bytes(data))


def pwrite_all(fd: int, data: bytes, offset: int, path: str = "") -> None:
    """Write all of ``data`` at ``offset`` (for fixed-width records rewritten in place)."""
    _hook("write", path)
    t0, start = _t0(), offset
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
    if _recorder is not None:
        _record("write", t0, fd=fd, offset=start, data=bytes(data))


ZERO_CHUNK = 1 << 20
_ZEROS = bytes(ZERO_CHUNK)


def write_zeros(fd: int, start: int, end: int, path: str = "") -> None:
    """Write zero bytes over ``start..end`` of ``fd`` (a megabyte per call): preallocating a log
    segment, or clearing bytes cut from one. The bytes are written, not merely allocated
    (``fallocate`` leaves unwritten extents, whose first overwrite still costs a journal commit)."""
    while start < end:
        n = min(ZERO_CHUNK, end - start)
        pwrite_all(fd, _ZEROS if n == ZERO_CHUNK else bytes(n), start, path)
        start += n


def fsync(fd: int, path: str = "") -> None:
    """fsync ``fd``."""
    _hook("fsync", path)
    t0 = _t0()
    os.fsync(fd)
    if _recorder is not None:
        _record("fsync", t0, fd=fd)


def fsync_dir(path: str) -> None:
    """fsync a directory so that the names created or removed in it are durable."""
    _hook("fsync", path)
    t0 = _t0()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if _recorder is not None:
        _record("fsync_dir", t0, path)


def link(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst``; raises ``FileExistsError`` rather than replace ``dst``."""
    _hook("link", dst)
    t0 = _t0()
    os.link(src, dst)
    if _recorder is not None:
        _record("link", t0, dst, src=os.path.abspath(src))


def rename(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` (replacing ``dst``: use only for derived or temp files)."""
    _hook("rename", dst)
    t0 = _t0()
    os.rename(src, dst)
    if _recorder is not None:
        _record("rename", t0, dst, src=os.path.abspath(src))


def syncfs(path: str) -> None:
    """Flush the whole file system holding ``path`` (``syncfs(2)``; ``sync()`` where the C
    library lacks it): far cheaper than an fsync per file when thousands were just written."""
    _hook("fsync", path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if fn is None:
            os.sync()
        elif fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}", path)
    finally:
        os.close(fd)
    if _recorder is not None:
        _record("syncfs", time.monotonic_ns(), path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: str, b: str) -> None:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); raises ``OSError``
    (``ENOSYS``/``EINVAL``) where the system or file system cannot."""
    _hook("rename", b)
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", b)
    t0 = _t0()
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), b)
    if _recorder is not None:
        _record("exchange", t0, b, src=os.path.abspath(a))


def unlink(path: str) -> None:
    """Remove a file name."""
    _hook("unlink", path)
    t0 = _t0()
    os.unlink(path)
    if _recorder is not None:
        _record("unlink", t0, path)


def rmdir(path: str) -> None:
    """Remove an empty folder."""
    _hook("rmdir", path)
    t0 = _t0()
    os.rmdir(path)
    if _recorder is not None:
        _record("rmdir", t0, path)


def truncate(fd: int, size: int, path: str = "") -> None:
    """Truncate the open file ``fd`` to ``size`` bytes."""
    _hook("truncate", path)
    t0 = _t0()
    os.ftruncate(fd, size)
    if _recorder is not None:
        _record("truncate", t0, fd=fd, size=size)


def makedirs(path: str) -> None:
    """Create ``path`` and its parents if missing."""
    _hook("mkdir", path)
    if _recorder is None:
        os.makedirs(path, exist_ok=True)
        return
    missing = []
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    t0 = _t0()
    os.makedirs(path, exist_ok=True)
    for d in reversed(missing):
        _record("mkdir", t0, d)


def write_file_atomic(path: str, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` through a temp file and a rename (readers see old or new)."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.urandom(4).hex()}")
    fd = open_write(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        write_all(fd, data, tmp)
        if durable:
            fsync(fd, tmp)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    rename(tmp, path)
    if durable:
        fsync_dir(directory)


def read_file(path: str, dir_fd: int | None = None) -> bytes:
    """The whole content of ``path`` (relative to ``dir_fd`` when given): one read for a small
    file, a loop to the end otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        data = os.read(fd, 1 << 16)
        if len(data) < 1 << 16:
            return data
        chunks = [data]
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_regular(fd: int, path: str) -> int:
    """Return ``fd`` if it is a regular file; else close it and raise ``OSError`` (``EINVAL``):
    a FIFO or a device where a store file belongs would hang or corrupt whoever used it."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def open_read(path: str, dir_fd: int | None = None) -> int:
    """Open a store file for reading without following a symlink or blocking on a FIFO; raises
    ``OSError`` (``EINVAL``) when it is not a regular file."""
    return check_regular(os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd),
                         path)


def read_small(path: str, limit: int, dir_fd: int | None = None) -> bytes:
    """The whole content of a small regular file, refusing one over ``limit`` bytes (a store
    file grown past what the format allows is damage, never read into memory)."""
    fd = open_read(path, dir_fd)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise OSError(errno.EFBIG, f"{size} bytes, over the {limit} this file may hold", path)
        return os.pread(fd, size + 1, 0)[:limit]
    finally:
        os.close(fd)


class Syncer:
    """Every fsync decision of a store handle in one place: ``durable=False`` makes each call a
    no-op (tests and bulk loads); macOS gets ``F_FULLFSYNC``, whose plain fsync leaves data in
    the disk's cache."""

    def __init__(self, durable: bool, on_failure: Callable[[OSError], None] | None = None) -> None:
        self.durable = durable
        self.on_failure = on_failure

    def _failed(self, exc: OSError) -> None:
        # Linux may mark the pages clean after a failed fsync: a later fsync, here or in another
        # process, would then succeed without the data. The store's hook poisons it for all.
        if self.on_failure is not None:
            self.on_failure(exc)

    def file(self, fd: int, path: str = "") -> None:
        """Make a file's written bytes (and its size) durable."""
        if not self.durable:
            return
        try:
            _hook("fsync", path)
            t0 = _t0()
            if _FULLFSYNC is not None:
                fcntl.fcntl(fd, _FULLFSYNC)
            elif hasattr(os, "fdatasync"):
                os.fdatasync(fd)  # flushes the data and the size, skips the timestamps: all a reader needs
            else:
                os.fsync(fd)
        except OSError as exc:
            self._failed(exc)
            raise
        if _recorder is not None:
            _record("fdatasync", t0, fd=fd)

    def dir(self, path: str) -> None:
        """Make the names created, renamed or removed in a folder durable."""
        if self.durable:
            try:
                fsync_dir(path)
            except OSError as exc:
                self._failed(exc)
                raise

    def fs(self, path: str) -> None:
        """Flush the whole file system holding ``path`` (after writing many files at once)."""
        if self.durable:
            try:
                syncfs(path)
            except OSError as exc:
                self._failed(exc)
                raise


def make_durable(root: str) -> None:
    """fsync every file of the folder tree ``root``, then every folder, deepest first (a tree
    built with fsyncs off, about to be published by a rename). Links are not followed."""
    files: list[str] = []
    dirs: list[str] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        dirs.append(dirpath)
        files.extend(os.path.join(dirpath, n) for n in filenames)
    for path in files:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            fsync(fd, path)
        finally:
            os.close(fd)
    for path in sorted(dirs, key=lambda d: d.count(os.sep), reverse=True):
        fsync_dir(path)
