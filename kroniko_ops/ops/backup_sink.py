"""Where a backup is written: a folder or one tar file, through :mod:`kroniko_ops.fileio`.

Both sinks record each file's size and SHA-256 for the manifest as they write it. The tar sink
streams: headers (:func:`.archive.member_header`) and data go out through a 1 MiB buffer, so
nothing is held in memory beyond one event or one chunk. Temp folders and files beside the
destination (:func:`temp_path`) are published by :func:`publish` once complete, and swept by the
next run when a kill left them behind (:func:`sweep_stale`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
from collections.abc import Callable, Iterable

from .. import fileio
from ..layout import pid_alive
from .archive import end_of_archive, member_header, mode_for, padding
from .manifest import FILE_RE, MANIFEST, FileEntry

FLUSH = 1 << 20


@functools.lru_cache(maxsize=1)
def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def _syncfs(fd: int) -> bool:
    """``syncfs(2)`` on the file system of ``fd``; False when the C library lacks it."""
    func = _libc_syncfs()
    if func is None:
        return False
    if func(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs failed: {os.strerror(err)}")
    return True


class Sink:
    """Where a backup is written; records every file's size and SHA-256 for the manifest."""

    def __init__(self) -> None:
        self.files: dict[str, FileEntry] = {}
        self.dirs: list[str] = []
        self.bytes = 0

    def _record(self, rel: str, size: int, sha: str) -> None:
        if not FILE_RE.match(rel) or rel in self.files:
            raise ValueError(f"refusing to write {rel!r} twice or outside the backup layout")
        self.files[rel] = FileEntry(size, sha)
        self.bytes += size

    def mkdir(self, rel: str) -> None:
        """Create one folder of the layout."""
        raise NotImplementedError

    def add_bytes(self, rel: str, data: bytes, sha: str | None = None) -> None:
        """Write a whole file; ``sha`` when its SHA-256 is already known (an event's hash)."""
        raise NotImplementedError

    def add_stream(self, rel: str, size: int, chunks: Iterable[bytes]) -> None:
        """Write a file of ``size`` bytes from ``chunks``, hashing as it goes."""
        raise NotImplementedError


class FolderSink(Sink):
    """A backup folder (normally a temp folder renamed into place when complete)."""

    def __init__(self, root: str, durable: bool) -> None:
        super().__init__()
        self.root, self.durable = root, durable
        fileio.makedirs(root)

    def mkdir(self, rel: str) -> None:
        fileio.makedirs(os.path.join(self.root, rel))
        self.dirs.append(rel)

    def _open(self, rel: str) -> tuple[int, str]:
        path = os.path.join(self.root, rel)
        return fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode_for(rel)), path

    def add_bytes(self, rel: str, data: bytes, sha: str | None = None) -> None:
        self._record(rel, len(data), sha or hashlib.sha256(data).hexdigest())
        fd, path = self._open(rel)
        try:
            fileio.write_all(fd, data, path)
        finally:
            os.close(fd)

    def add_stream(self, rel: str, size: int, chunks: Iterable[bytes]) -> None:
        fd, path = self._open(rel)
        h = hashlib.sha256()
        done = 0
        try:
            for chunk in chunks:
                h.update(chunk)
                fileio.write_all(fd, chunk, path)
                done += len(chunk)
        finally:
            os.close(fd)
        if done != size:
            raise OSError(f"{rel}: expected {size} bytes, copied {done}")
        self._record(rel, size, h.hexdigest())

    def finish(self, manifest: bytes) -> None:
        """Make every file durable, then write the manifest last (its presence marks a whole backup)."""
        if self.durable:
            sync_tree(self.root)
        fileio.write_file_atomic(os.path.join(self.root, MANIFEST), manifest, self.durable)


def sync_tree(root: str) -> None:
    """Flush every file under ``root`` and every folder: one ``syncfs`` when the C library has
    it (a million small fsyncs would dominate a backup), else one fsync per file."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fileio.fsync(fd, root)  # the fault-injection point for the whole flush
        synced = _syncfs(fd)
    finally:
        os.close(fd)
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in () if synced else files:
            ffd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                fileio.fsync(ffd, name)
            finally:
                os.close(ffd)
        fileio.fsync_dir(dirpath)


class TarSink(Sink):
    """One uncompressed ``.tar`` file, streamed; the manifest is its last member."""

    def __init__(self, path: str, mtime: int, durable: bool) -> None:
        super().__init__()
        self.path, self.mtime, self.durable = path, mtime, durable
        self.fd = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        self.buf = bytearray()
        self.size = 0

    def _emit(self, data: bytes) -> None:
        self.buf += data
        self.size += len(data)
        if len(self.buf) >= FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self.buf:
            fileio.write_all(self.fd, bytes(self.buf), self.path)
            self.buf.clear()

    def mkdir(self, rel: str) -> None:
        self._emit(member_header(rel, 0, self.mtime, is_dir=True))
        self.dirs.append(rel)

    def add_bytes(self, rel: str, data: bytes, sha: str | None = None) -> None:
        self._record(rel, len(data), sha or hashlib.sha256(data).hexdigest())
        self._emit(member_header(rel, len(data), self.mtime) + data + padding(len(data)))

    def add_stream(self, rel: str, size: int, chunks: Iterable[bytes]) -> None:
        self._emit(member_header(rel, size, self.mtime))
        h = hashlib.sha256()
        done = 0
        for chunk in chunks:
            h.update(chunk)
            done += len(chunk)
            if done > size:
                break
            self._emit(chunk)
        if done != size:
            raise OSError(f"{rel}: expected {size} bytes, read {done} (the file changed while it was archived)")
        self._emit(padding(size))
        self._record(rel, size, h.hexdigest())

    def finish(self, manifest: bytes) -> None:
        """Append the manifest and the end-of-archive blocks, and make the file durable."""
        self._emit(member_header(MANIFEST, len(manifest), self.mtime) + manifest + padding(len(manifest)))
        self._emit(end_of_archive(self.size))
        self._flush()
        if self.durable:
            fileio.fsync(self.fd, self.path)
        os.close(self.fd)
        self.fd = -1

    def abort(self) -> None:
        """Close the descriptor after a failure (the caller removes the temp file)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- temp folders beside a destination -------------------------------------------------------


def temp_path(parent: str, what: str, name: str) -> str:
    """A fresh temp name beside the destination ``name`` in ``parent``: ``.tmp-<what>-<name>-<pid>-<hex>``.

    A run killed midway leaves it behind; the next run for the same destination removes it
    (:func:`sweep_stale`) once its process is gone.
    """
    return os.path.join(parent, f".tmp-{what}-{name}-{os.getpid()}-{os.urandom(4).hex()}")


def sweep_stale(parent: str, what: str, name: str) -> list[str]:
    """Remove temp copies an interrupted run for ``name`` left in ``parent`` (their process is
    gone); return their paths. They hold only copies: the source or backup they came from is
    untouched."""
    prefix = f".tmp-{what}-{name}-"
    removed = []
    for entry in sorted(os.listdir(parent)):
        if not entry.startswith(prefix):
            continue
        parts = entry[len(prefix):].split("-")
        if len(parts) < 2 or not parts[-2].isdigit():
            continue
        pid = int(parts[-2])
        if pid != os.getpid() and not pid_alive(pid):
            remove_tree(os.path.join(parent, entry))
            removed.append(os.path.join(parent, entry))
    return removed


def remove_tree(path: str) -> None:
    """Remove a temp file or folder this module created (never user data)."""
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        fileio.unlink(path)
        return
    for dirpath, dirs, files in os.walk(path, topdown=False):
        for name in files:
            fileio.unlink(os.path.join(dirpath, name))
        for name in dirs:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                fileio.unlink(full)
            else:
                os.rmdir(full)
    os.rmdir(path)


def publish(tmp: str, dest: str, durable: bool) -> None:
    """Move a finished temp folder or file to ``dest``, never replacing anything but an empty
    folder, and make the new name durable."""
    if os.path.isdir(tmp):
        fileio.rename(tmp, dest)  # fails (ENOTEMPTY) rather than replace a folder that filled meanwhile
    else:
        fileio.link(tmp, dest)  # fails rather than replace a file that appeared meanwhile
        fileio.unlink(tmp)
    if durable:
        fileio.fsync_dir(os.path.dirname(os.path.abspath(dest)))
