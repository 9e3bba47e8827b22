"""``reindex``: rebuild every index (types, tags, ids, CHECKPOINT) from the log and the events.

The new index is built in a temp folder beside ``index/`` (same file system), verified against
a digest of what was fed into it, caught up under the append lock with whatever was appended
during the build, made durable, and swapped in with one atomic ``renameat2(RENAME_EXCHANGE)``
while the lock is still held: readers see the old index or the new one, never half of one. The
old index then goes to ``lost-found/`` (it is derived data: safe to delete by hand).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from itertools import islice

from .. import fileio, layout
from ..errors import LegacyStore, StoreCorrupted, StoreNotFound
from ..index import BOOT_ID, Checkpoint, Index
from ..layout import Layout, is_legacy
from ..locking import held
from ..log import find_head
from ..progress import progress
from ..report import Report
from ..store import EventStore
from .checks_common import Context, Digest
from .checks_events import Entry, index_keys, iter_entries
from .checks_index import check_index

BUILD_CHUNK = 16384


def require_format2(root: str) -> None:
    """Refuse a missing store and a legacy one before anything is opened for writing."""
    if not os.path.isdir(root):
        raise StoreNotFound(f"no store at {root}")
    if is_legacy(root):
        raise LegacyStore(root)


def reindex(path: str | os.PathLike[str], *, lock_timeout: float = 30.0, quiet: bool = True) -> Report:
    """Rebuild the indexes of the store at ``path`` and swap them in atomically; return a report
    (exit 0 when every committed event was indexed, 4 when some could not be read and were left
    out). Holds the maintenance lock; takes the append lock only to catch up and swap."""
    root = os.fspath(path)
    require_format2(root)
    report = Report("reindex", root)
    with held(Layout(root).maintenance_lock, lock_timeout, "maintenance"):
        rebuild(root, report, lock_timeout, quiet)
    return report.finish()


def rebuild(root: str, report: Report, lock_timeout: float, quiet: bool = True) -> None:
    """The body of :func:`reindex`; the caller holds the maintenance lock."""
    ctx = Context(root, report)

    def on_bad(pos: int, code: str, path: str, message: str) -> None:
        ctx.add(code, "error", path, f"{message}; not indexed (restore it from a backup, then reindex)", pos)

    with EventStore(root, create=False, lock_timeout=lock_timeout) as store:
        tmp = os.path.join(root, f"{layout.TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-reindex")
        fileio.makedirs(tmp)
        swapped = False
        try:
            index, digest, fed = Index(tmp), Digest(), [0]
            head = find_head(store._read_fd).head
            entries = progress(iter_entries(root, store._read_fd, 1, head, on_bad), head, "reindex", quiet)
            cp = _build(index, entries, Checkpoint(), digest, fed)
            _verify(root, tmp, head, digest, store._read_fd)
            with held(store.layout.append_lock, lock_timeout, "append"):
                last = find_head(store._read_fd).head
                cp = _build(index, iter_entries(root, store._read_fd, head + 1, last, on_bad), cp, digest, fed)
                # Positions that could not be read are still covered: readers must not look for them
                # in the log, and writers must not try to index them again.
                sync_folder(tmp)
                index.write_checkpoint(Checkpoint(last, last, BOOT_ID), durable=True)
                swapped = _swap(tmp, store.layout.index)
            report.head = last
            report.figures.update(head=last, events_indexed=fed[0], index_lines=digest.count)
        except BaseException:
            if not swapped and os.path.isdir(tmp):
                _set_aside(root, tmp, "an unfinished index rebuild (interrupted or failed)")
            raise
        if swapped and os.path.exists(tmp):
            _set_aside(root, tmp, "the index that reindex replaced")


def _build(index: Index, entries: Iterator[Entry], cp: Checkpoint, digest: Digest, fed: list[int]) -> Checkpoint:
    """Feed ``entries`` to ``index`` in chunks (memory stays flat), summing what was fed."""
    while True:
        chunk = list(islice(entries, BUILD_CHUNK))
        if not chunk:
            return cp
        fed[0] += len(chunk)
        for pos, eid, etype, tags in chunk:
            index_keys(digest, pos, eid, etype, tags)
        cp = index.add(chunk, cp.written, cp)


def _verify(root: str, tmp: str, head: int, digest: Digest, fd: int) -> None:
    """Read the new index back and compare it with what was fed into it."""
    check = Report("reindex-verify", tmp)
    ctx = Context(tmp, check)
    if not check_index(ctx, tmp, head, digest, set(), lambda: iter_entries(root, fd, 1, head)):
        first = check.findings[0]
        raise StoreCorrupted(f"the rebuilt index does not verify ({first.code} {first.path}: {first.message}); "
                             "the old index was left in place")


def _set_aside(root: str, folder: str, what: str) -> None:
    layout.set_aside(root, "index", f"{what}. An index is derived data, rebuilt from the log and the events "
                     "by kroniko-ops reindex: this copy is safe to delete.", move=[folder])


def sync_folder(folder: str) -> None:
    """Make every file under ``folder`` durable: one ``syncfs`` of its file system (far cheaper than
    an fsync per file for thousands of index files), then an fsync of each folder."""
    fileio.syncfs(folder)
    for dirpath, _dirs, _files in os.walk(folder):
        fileio.fsync_dir(dirpath)


def _swap(new: str, live: str) -> bool:
    """Put ``new`` in place of ``live``; the old index ends up at ``new``'s path. True when done."""
    if not os.path.lexists(live):
        fileio.rename(new, live)
    else:
        try:
            fileio.exchange(new, live)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
                raise
            # No atomic exchange here. Readers that find no index fall back to the log; first make
            # the old index trust nothing, so readers starting from here on never rely on it.
            Index(live).write_checkpoint(Checkpoint(), durable=True)
            fileio.rename(live, new + ".old")
            fileio.rename(new, live)
            fileio.rename(new + ".old", new)
    fileio.fsync_dir(os.path.dirname(live))
    return True
