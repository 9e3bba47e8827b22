"""Making a store written with ``durable=False`` durable in one final step.

A migration writes its target without a single fsync: one per batch of new event files would
cost more than everything else. At the end, :func:`make_durable`:

1. writes the whole file system back at once with ``syncfs(2)``. On Linux 5.8 and later
   ``syncfs`` reports any write-back error of that file system not yet seen by anyone (an fd
   opened afterwards still sees it), so a success covers every file and folder the migration
   wrote; elsewhere (no ``syncfs``, an older kernel) every file is then fsynced one by one;
2. fsyncs the log, every folder (deepest first) and ``FORMAT`` through :mod:`kroniko_ops.fileio`;
3. records in the index checkpoint that the index is durable through the last position, so
   that a reboot does not make the next writer re-index the whole store.

Any failure raises :class:`DurabilityError`: the target must then be migrated again.
"""

from __future__ import annotations

import ctypes
import os

from .. import fileio
from ..errors import DurabilityError
from ..index import BOOT_ID, Checkpoint
from ..progress import progress
from ..store import EventStore


def _kernel_reports_syncfs_errors() -> bool:
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)


def _syncfs(path: str) -> bool:
    """Write back the file system holding ``path``; True when a success means every write-back
    succeeded (else the caller must fsync file by file)."""
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        os.sync()
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"syncfs: {os.strerror(errno)}", path)
    finally:
        os.close(fd)
    return _kernel_reports_syncfs_errors()


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        fileio.fsync(fd, path)
    finally:
        os.close(fd)


def _walk(root: str) -> tuple[list[str], list[str]]:
    """Files and folders under ``root`` (folders deepest first)."""
    files: list[str] = []
    dirs: list[str] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        dirs.append(dirpath)
        files.extend(os.path.join(dirpath, n) for n in filenames)
    dirs.sort(key=lambda d: d.count(os.sep), reverse=True)
    return files, dirs


def make_durable(store: EventStore, quiet: bool = True) -> None:
    """Make everything ``store`` holds durable (see the module docstring)."""
    lay = store.layout
    try:
        covered = _syncfs(lay.root)
        if not covered:
            with os.scandir(lay.events) as it:
                paths = [e.path for e in it if e.is_file(follow_symlinks=False)]
            for path in progress(paths, len(paths), "fsync", quiet):
                _fsync_file(path)
        files, dirs = [], []
        for folder in (lay.events, lay.log_dir, lay.index, lay.lost_found, lay.packs, lay.locks):
            if folder == lay.events:
                dirs.append(folder)
                continue
            f, d = _walk(folder)
            files.extend(f)
            dirs.extend(d)
        for path in files:
            if path == lay.log or not covered:
                _fsync_file(path)
        _fsync_file(lay.format_file)
        for path in dirs:
            fileio.fsync_dir(path)
        cp = store.index.read_checkpoint()
        store.index.write_checkpoint(Checkpoint(cp.written, cp.written, BOOT_ID), durable=True)
        fileio.fsync_dir(lay.root)
        fileio.fsync_dir(os.path.dirname(os.path.abspath(lay.root)))
    except OSError as exc:
        raise DurabilityError(
            f"making {lay.root} durable failed: {exc}. The migrated store may be incomplete after a "
            "crash: migrate again into a new empty folder"
        ) from exc
