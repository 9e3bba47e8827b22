"""What recover, reindex and fsck --repair share: refusing what is not a format-3 store before
anything is written, opening the store (setting a damaged index aside first), and setting aside
temp files of processes that are gone."""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from ... import layout
from ...errors import InvalidArgument, KronikoError, LegacyStore, NothingWritten, StoreCorrupted, StoreNotFound
from ...indexdb import check_files, db_name, generations
from ...layout import Layout, check_no_symlinks, is_legacy, stale_temp
from ...locking import held
from ...report import Report
from ...store import EventStore


def index_write_failed(root: str, command: str, exc: sqlite3.Error) -> KronikoError:
    """The error for a SQLite failure while ``command`` wrote the store's index (derived data,
    so the log is what it was): what happened, whether the disk is full, and what to do."""
    try:
        st = os.statvfs(Layout(root).index)
        full = st.f_bavail == 0 or st.f_favail == 0
    except OSError:
        full = False
    why = "the disk is full" if full else "a full disk or an I/O error"
    return KronikoError(f"{command} of {root} could not write the index database ({exc}: {why}). The log is not "
                        f"changed by this; free disk space (or fix the device) and run kroniko-ops {command} {root} "
                        "again")


def require_store(path: str | os.PathLike[str]) -> str:
    """``path`` as a string when it is a format-3 store; raises (nothing written) otherwise: a
    missing path (exit 8), a legacy Ruby store or a folder that is no store, empty or not
    (exit 2), a log of segments without FORMAT or a store whose own folders or files are
    symbolic links (StoreCorrupted, exit 4). Every maintenance command calls this before it
    takes a lock or writes anything: a lock file is a write."""
    root = os.fspath(path)
    if not os.path.exists(root):
        raise StoreNotFound(f"no store at {root}")
    if not os.path.isdir(root):
        raise InvalidArgument(f"{root} is a file, not a store folder")
    if is_legacy(root):
        raise LegacyStore(root)
    lay = Layout(root)
    if not os.path.lexists(lay.format_file):
        if os.path.isdir(lay.log_dir) and not os.path.islink(lay.log_dir) and _has_segment(lay.log_dir):
            # A log of segments without its FORMAT is a damaged store (or a move into a mount
            # point that stopped half-way), not a foreign folder: fsck says what to do.
            raise StoreCorrupted(f"{root} has a log but no FORMAT file; nothing was written. Run: "
                                 f"kroniko-ops fsck {root}")
        raise InvalidArgument(f"{root} is not a kroniko-ops store (it has no FORMAT file); nothing was written")
    check_no_symlinks(root)  # before the maintenance lock: its file would be written through a linked locks/
    return root


@contextmanager
def maintenance_lock(root: str, lock_timeout: float) -> Iterator[None]:
    """Hold ``locks/maintenance.lock`` of the store ``root`` for the ``with`` body. Failing to
    open or create the lock file (disk full, permissions, too many open files) happens before
    anything is written, and says so (:class:`NothingWritten`, exit 8)."""
    lock = Layout(root).maintenance_lock
    with ExitStack() as stack:
        try:
            stack.enter_context(held(lock, lock_timeout, "maintenance"))
        except OSError as exc:
            raise NothingWritten(f"could not take the maintenance lock {lock} ({exc}); nothing was written: fix "
                                 "the cause (disk full, permissions, open-files limit) and run the command again"
                                 ) from exc
        yield


def _has_segment(log_dir: str) -> bool:
    """True when ``log_dir`` holds a file named like a segment (``<12 digits>.seg``)."""
    with os.scandir(log_dir) as it:
        return any(len(e.name) == 16 and e.name.endswith(".seg") and e.name[:12].isdigit() for e in it)


def open_store(root: str, lock_timeout: float, report: Report | None = None) -> EventStore:
    """An :class:`EventStore` on an existing store. An index database SQLite cannot read is
    derived data: it is set aside into ``lost-found/`` (before the store is opened, which would
    start a new generation beside it) and the store opened with a new one."""
    folder = Layout(root).index
    gens = generations(folder)
    if gens:
        problem = _unreadable(os.path.join(folder, db_name(gens[-1])))
        if problem is not None:
            _set_aside_index(root, gens[-1], problem, report)
    try:
        return EventStore(root, create=False, lock_timeout=lock_timeout)
    except sqlite3.DatabaseError as exc:
        gens = generations(folder)
        if not gens or isinstance(exc, sqlite3.OperationalError):
            raise
        _set_aside_index(root, gens[-1], exc, report)
        return EventStore(root, create=False, lock_timeout=lock_timeout)


def _unreadable(path: str) -> sqlite3.DatabaseError | None:
    """Why SQLite cannot read the index database at ``path`` (opened read-only), or None."""
    check_files(path)  # a link or a FIFO there: StoreCorrupted, never a hang
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=60.0)
    except sqlite3.OperationalError:
        return None
    try:
        con.execute("SELECT position FROM checkpoint WHERE k = 0").fetchone()
    except sqlite3.OperationalError:  # busy, or a file a writer created a moment ago: no damage
        return None
    except sqlite3.DatabaseError as exc:
        return exc
    finally:
        con.close()
    return None


def _set_aside_index(root: str, generation: int, exc: Exception, report: Report | None) -> None:
    folder = Layout(root).index
    base = os.path.join(folder, db_name(generation))
    files = [base + s for s in ("", "-wal", "-shm") if os.path.lexists(base + s)]
    layout.set_aside(root, "index", f"The index database {db_name(generation)}, which SQLite could not open "
                     f"({exc}). An index is derived data rebuilt from the log: this copy is safe to delete.",
                     move=files)
    if report is not None:
        report.add("index-corrupt", "error", f"index/{db_name(generation)}", f"the index does not open ({exc}): "
                   "set aside into lost-found/, rebuilt from the log", repaired=True)


def set_aside_temps(root: str, report: Report, durable: bool = True) -> int:
    """Move temp files of processes that are gone into ``lost-found/``, one folder per place;
    report each (repaired) and return how many."""
    lay = Layout(root)
    found: dict[str, list[str]] = defaultdict(list)
    now = time.time()
    for folder in (root, lay.log_dir, lay.packs, lay.index, lay.locks):
        if not os.path.isdir(folder) or os.path.islink(folder):
            continue
        with os.scandir(folder) as it:
            for entry in it:
                if stale_temp(entry.name, entry.path, now):
                    found[folder].append(entry.path)
    for folder, paths in sorted(found.items()):
        rel = os.path.relpath(folder, root)
        layout.set_aside(root, "temp-files", f"Temp files found in {rel}/, left by processes that are gone (a "
                         "segment index, a pack or an index being written). None of them was part of the store; "
                         "they are kept here only for inspection.", move=sorted(paths), durable=durable)
        for p in sorted(paths):
            report.add("stale-temp-file", "warning", os.path.relpath(p, root),
                       "a temp file left by a process that is gone: set aside into lost-found/", repaired=True)
    return sum(len(v) for v in found.values())
