"""A folder as an object store: each object is a file named by its key.

An object is written under ``.tmp-<pid>-<hex>-<name>`` beside its final name, checked against
its SHA-256, fsynced, then renamed into place (``link`` for an exclusive write, which fails
rather than replace) and its folder fsynced: a name is only ever a whole, durable object. Temp
names are never listed; one whose process is gone is removed by :meth:`FolderStore.sweep`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Callable

from .. import fileio
from ..errors import InvalidArgument
from ..layout import pid_alive
from . import CHUNK, Conflict, Fatal, Missing, ObjectStore, Region, Retry, Source

_KEY = re.compile(r"\A[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*\Z")
_TMP = re.compile(r"\A\.tmp-(\d+)-[0-9a-f]{8}-")
SWEPT_DIRS = ("manifests", "log", "packs")  # where a replica's keys live (beside the top folder)


class FolderStore(ObjectStore):
    """Objects as files under ``root`` (created on the first write)."""

    def __init__(self, root: str, retry: Retry, durable: bool = True) -> None:
        # A path that cannot become a folder is bad usage, found now: not a fault to retry.
        if os.path.lexists(root) and not os.path.isdir(root):
            raise InvalidArgument(f"{root} exists and is not a folder; give a folder (new or holding a replica) or an "
                                  "s3:// URL; nothing was written")
        self.root = os.path.abspath(root)
        self.url = root
        self.retry = retry
        self.durable = durable

    def _path(self, key: str) -> str:
        if not _KEY.match(key) or any(p in (".", "..") or p.startswith(".tmp-") for p in key.split("/")):
            raise ValueError(f"refusing object key {key!r}")
        return os.path.join(self.root, key)

    def put(self, key: str, source: Source, size: int, sha256: str, exclusive: bool = False) -> None:
        path = self._path(key)
        self._retried(f"writing {key}", lambda: self._put(path, source, size, sha256, exclusive))

    def _put(self, path: str, source: Source, size: int, sha256: str, exclusive: bool) -> None:
        folder = os.path.dirname(path)
        if exclusive and os.path.lexists(path):
            raise Conflict(f"{path} exists already")
        fileio.makedirs(folder)
        tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.urandom(4).hex()}-{os.path.basename(path)}")
        fd = fileio.open_write(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        try:
            h = hashlib.sha256()
            done = 0
            for chunk in (source,) if isinstance(source, bytes) else source.chunks():
                h.update(chunk)
                fileio.write_all(fd, chunk, tmp)
                done += len(chunk)
            if done != size or h.hexdigest() != sha256:
                # The bytes changed under us: never publish them (a retry reads them again).
                raise OSError(errno.EIO, f"{done} bytes with another SHA-256 than the {size} bytes expected", path)
            if self.durable:
                fileio.fsync(fd, tmp)
            os.close(fd)
            fd = -1
            if exclusive:
                try:
                    fileio.link(tmp, path)
                except FileExistsError:
                    raise Conflict(f"{path} exists already") from None
                fileio.unlink(tmp)
            else:
                fileio.rename(tmp, path)
        finally:
            if fd >= 0:
                os.close(fd)
            if os.path.lexists(tmp):
                os.unlink(tmp)
        if self.durable:
            fileio.fsync_dir(folder)

    def get(self, key: str, limit: int) -> bytes:
        path = self._path(key)

        def read() -> bytes:
            try:
                return fileio.read_small(path, limit)
            except FileNotFoundError:
                raise Missing(f"{key} is not in {self.url}") from None
            except OSError as exc:
                if exc.errno in (errno.EFBIG, errno.EINVAL, errno.ELOOP):
                    raise Fatal(f"{key}: {exc.strerror}") from None
                raise

        return self._retried(f"reading {key}", read)

    def download(self, key: str, sink: Callable[[bytes], None]) -> int:
        path = self._path(key)
        done = 0

        def read() -> int:
            nonlocal done
            try:
                fd = fileio.open_read(path)
            except FileNotFoundError:
                raise Missing(f"{key} is not in {self.url}") from None
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ELOOP):
                    raise Fatal(f"{key} is not a regular file") from None
                raise
            try:
                while chunk := os.pread(fd, CHUNK, done):
                    sink(chunk)
                    done += len(chunk)
            finally:
                os.close(fd)
            return done

        return self._retried(f"reading {key}", read)

    def list(self, under: str = "") -> dict[str, int]:
        def walk() -> dict[str, int]:
            out: dict[str, int] = {}
            if not os.path.isdir(self.root):
                return out
            for dirpath, dirs, files in os.walk(self.root):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".tmp-"))
                rel = os.path.relpath(dirpath, self.root)
                for name in files:
                    if _TMP.match(name):
                        continue
                    key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                    if key.startswith(under):
                        out[key] = os.lstat(os.path.join(dirpath, name)).st_size
            return out

        return self._retried("listing", walk)

    def sha256(self, key: str) -> str | None:
        h = hashlib.sha256()
        self.download(key, h.update)
        return h.hexdigest()

    def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            try:
                fileio.unlink(path)
            except FileNotFoundError:
                return
            if self.durable:
                fileio.fsync_dir(os.path.dirname(path))

        self._retried(f"deleting {key}", remove)

    def sweep(self) -> list[str]:
        """Remove temp files a killed writer left (their process is gone); return their paths."""
        removed: list[str] = []
        # Only where objects go (the top and the key folders), never a whole tree walked.
        for folder in (self.root, *(os.path.join(self.root, d) for d in SWEPT_DIRS)):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                m = _TMP.match(name)
                path = os.path.join(folder, name)
                if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))) and os.path.isfile(path):
                    fileio.unlink(path)
                    removed.append(path)
        return removed


__all__ = ["FolderStore", "Region"]
