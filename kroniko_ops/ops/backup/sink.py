"""Where a backup is written: a folder or one tar file, through :mod:`kroniko_ops.fileio`.

Both sinks record each file's size and SHA-256 for the manifest as they write it, and write the
manifest last. The tar sink streams through the standard library's ``tarfile`` (``w|``: no
seeking, one 10 KiB record at a time) into a descriptor written with :func:`fileio.write_all`;
every header is a pure function of the member's name and size and of the backup's time (uid/gid
0, no owner names, fixed modes). Output goes to a temp name beside the destination
(:func:`temp_path`), published by :func:`publish` once durable; a run killed midway leaves only
the temp name, removed by the next run for the same destination (:func:`sweep_stale`).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterable, Iterator

from ... import fileio
from ...layout import pid_alive
from .manifest import DIRS, MANIFEST, FileEntry

CHUNK = 1 << 20


class Sink:
    """Where a backup is written; records every file's size and SHA-256 for the manifest."""

    def __init__(self, durable: bool) -> None:
        self.durable = durable
        self.files: dict[str, FileEntry] = {}
        self.bytes = 0

    def add(self, rel: str, size: int, chunks: Iterable[bytes]) -> str:
        """Write the file ``rel`` of ``size`` bytes from ``chunks``; return its SHA-256 (hex)."""
        raise NotImplementedError

    def finish(self, manifest: bytes) -> None:
        """Write the manifest last and make everything durable."""
        raise NotImplementedError

    def abort(self) -> None:
        """Release what a failed backup holds open (the caller removes the temp name)."""

    def _record(self, rel: str, size: int, sha: str) -> str:
        if rel in self.files:
            raise ValueError(f"refusing to write {rel!r} twice")
        self.files[rel] = FileEntry(size, sha)
        self.bytes += size
        return sha


class _Hashing:
    """A file-like reader over ``chunks`` that hashes what it hands out (``tarfile`` pulls)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.it: Iterator[bytes] = iter(chunks)
        self.buf = b""
        self.sha = hashlib.sha256()
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            chunk = next(self.it, None)
            if chunk is None:
                break
            self.buf += chunk
        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
        self.sha.update(out)
        self.done += len(out)
        return out


class _FdWriter:
    """The file object ``tarfile`` writes to: every write goes through :mod:`fileio`."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd, self.path = fd, path
        self.dropped = False  # after abort: tarfile's last flush goes nowhere

    def write(self, data: bytes) -> int:
        if not self.dropped:
            fileio.write_all(self.fd, bytes(data), self.path)
        return len(data)

    def close(self) -> None:
        """Nothing: the sink closes the descriptor after its fsync."""


class FolderSink(Sink):
    """A backup folder (a temp folder renamed into place when complete)."""

    def __init__(self, root: str, durable: bool) -> None:
        super().__init__(durable)
        self.root = root
        fileio.makedirs(root)
        for d in DIRS:
            fileio.makedirs(os.path.join(root, d))

    def add(self, rel: str, size: int, chunks: Iterable[bytes]) -> str:
        path = os.path.join(self.root, rel)
        fd = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        h = hashlib.sha256()
        done = 0
        try:
            for chunk in chunks:
                h.update(chunk)
                fileio.write_all(fd, chunk, path)
                done += len(chunk)
            if done != size:
                raise OSError(f"{rel}: expected {size} bytes, copied {done}")
            if self.durable:
                fileio.fsync(fd, path)
        finally:
            os.close(fd)
        return self._record(rel, size, h.hexdigest())

    def finish(self, manifest: bytes) -> None:
        path = os.path.join(self.root, MANIFEST)
        fd = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        try:
            fileio.write_all(fd, manifest, path)
            if self.durable:
                fileio.fsync(fd, path)
        finally:
            os.close(fd)
        if self.durable:
            for d in DIRS:
                fileio.fsync_dir(os.path.join(self.root, d))
            fileio.fsync_dir(self.root)


class TarSink(Sink):
    """One uncompressed tar file, streamed; the manifest is its last member."""

    def __init__(self, path: str, mtime: int, durable: bool) -> None:
        super().__init__(durable)
        self.path, self.mtime = path, mtime
        self.fd = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        self.writer = _FdWriter(self.fd, path)
        self.tar = tarfile.open(fileobj=self.writer, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                                bufsize=CHUNK)
        self.tar.copybufsize = CHUNK

    def _info(self, rel: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(rel)
        info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = (
            size, self.mtime, 0o444, 0, 0, "", "")
        return info

    def add(self, rel: str, size: int, chunks: Iterable[bytes]) -> str:
        reader = _Hashing(chunks)
        self.tar.addfile(self._info(rel, size), reader)  # type: ignore[arg-type]
        if reader.done != size or reader.read(1):
            raise OSError(f"{rel}: expected {size} bytes, read {reader.done} (the file changed while it was archived)")
        return self._record(rel, size, reader.sha.hexdigest())

    def finish(self, manifest: bytes) -> None:
        self.tar.addfile(self._info(MANIFEST, len(manifest)), _Hashing([manifest]))  # type: ignore[arg-type]
        self.tar.close()
        if self.durable:
            fileio.fsync(self.fd, self.path)
        os.close(self.fd)
        self.fd = -1

    def abort(self) -> None:
        # Close the tar stream now, its last bytes dropped: left to the garbage collector, its
        # __del__ would flush them into a closed descriptor and print an ignored traceback.
        self.writer.dropped = True
        try:
            self.tar.close()
        except Exception:  # a stream already broken by the error being reported
            pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def fd_chunks(fd: int, start: int, size: int) -> Iterator[bytes]:
    """``size`` bytes of ``fd`` from ``start``, in chunks (raises when the file is shorter)."""
    done = 0
    while done < size:
        chunk = os.pread(fd, min(CHUNK, size - done), start + done)
        if not chunk:
            raise OSError(f"unexpected end of file at byte {start + done}")
        yield chunk
        done += len(chunk)


# -- temp names beside a destination ---------------------------------------------------------


def temp_path(parent: str, what: str, name: str) -> str:
    """A fresh temp name beside the destination ``name``: ``.tmp-<what>-<name>-<pid>-<hex>``."""
    return os.path.join(parent, f".tmp-{what}-{name}-{os.getpid()}-{os.urandom(4).hex()}")


def sweep_stale(parent: str, what: str, name: str) -> list[str]:
    """Remove temp copies an interrupted run for ``name`` left in ``parent`` (their process is
    gone); return their paths. They hold only copies: nothing the user wrote."""
    prefix = f".tmp-{what}-{name}-"
    removed = []
    for entry in sorted(os.listdir(parent)):
        parts = entry[len(prefix):].split("-") if entry.startswith(prefix) else []
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        if int(parts[0]) != os.getpid() and not pid_alive(int(parts[0])):
            remove_tree(os.path.join(parent, entry))
            removed.append(os.path.join(parent, entry))
    return removed


def remove_tree(path: str) -> None:
    """Remove a temp file or folder this package created (never user data)."""
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
