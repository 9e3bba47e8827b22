"""Where things live in a store folder (format 3), the ``FORMAT`` file, and telling a legacy
Ruby store (format 1) apart."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

from . import fileio
from .codec import DEFAULT_MAX_EVENT_BYTES
from .errors import (
    InvalidArgument,
    LegacyStore,
    NotAStore,
    NothingWritten,
    StoreCorrupted,
    StoreNotFound,
    access_denied,
    denied,
    out_of_files,
)

FORMAT_LINE = "kroniko-ops format 3"
TMP_PREFIX = ".tmp-"
LIVE_TEMP_MAX_AGE = 86400.0  # a temp file of a live pid older than this is stale anyway (pid reuse)
_TEMP_RE = re.compile(r"\A\.tmp-(\d+)-")


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this host (ours included)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def stale_temp(name: str, path: str, now: float | None = None) -> bool | None:
    """For a ``.tmp-<pid>-...`` name: True when its writer is gone (dead pid, or a live pid but
    older than a day, i.e. a reused pid), False when it may still be written. None when ``name``
    is not a temp name. A ``.json`` name is an event file even when its id starts with ``.tmp-``:
    temp names never end in ``.json``."""
    m = _TEMP_RE.match(name)
    if m is None or name.endswith(".json"):
        return None
    if not pid_alive(int(m.group(1))):
        return True
    try:
        age = (now or time.time()) - os.lstat(path).st_mtime
    except FileNotFoundError:
        return False  # gone meanwhile: its writer finished
    return age > LIVE_TEMP_MAX_AGE


@dataclass(frozen=True)
class Layout:
    """The paths of one store (format 3). Every name a store may hold is spelled here."""

    root: str

    @property
    def format_file(self) -> str:
        """``FORMAT``."""
        return os.path.join(self.root, "FORMAT")

    @property
    def log_dir(self) -> str:
        """``log/``: the segments and their offset indexes."""
        return os.path.join(self.root, "log")

    @property
    def index(self) -> str:
        """``index/``: derived, rebuildable."""
        return os.path.join(self.root, "index")

    @property
    def index_db(self) -> str:
        """``index/index.sqlite3``: type, tag and id lookups."""
        return os.path.join(self.root, "index", INDEX_DB)

    @property
    def packs(self) -> str:
        """``packs/``: compaction output."""
        return os.path.join(self.root, "packs")

    @property
    def locks(self) -> str:
        """``locks/``."""
        return os.path.join(self.root, "locks")

    @property
    def append_lock(self) -> str:
        """``locks/append.lock``: the one writer lock."""
        return os.path.join(self.root, "locks", "append.lock")

    @property
    def synced_file(self) -> str:
        """``locks/synced``: the synced position, the boot it was written in, the poison flag."""
        return os.path.join(self.root, "locks", "synced")

    @property
    def maintenance_lock(self) -> str:
        """``locks/maintenance.lock``: held by compact, repair, reindex and restore."""
        return os.path.join(self.root, "locks", "maintenance.lock")

    @property
    def lost_found(self) -> str:
        """``lost-found/``: what recovery and pruning set aside."""
        return os.path.join(self.root, "lost-found")


INDEX_DB = "index.sqlite3"
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
MIN_SEGMENT_BYTES = 4096  # tests roll segments often; stores use a few MiB to 64 MiB
MAX_SEGMENT_BYTES = 1 << 30


@dataclass(frozen=True)
class FormatInfo:
    """What ``FORMAT`` says: the format line and the options fixed at creation."""

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    created: str = ""
    ref_fields: tuple[str, ...] = ()  # fields fsck checks as references to event ids in this store

    def render(self) -> bytes:
        """The file's text (``ref_fields=`` only when the store records some)."""
        refs = f"ref_fields={','.join(self.ref_fields)}\n" if self.ref_fields else ""
        return (
            f"{FORMAT_LINE}\nmax_event_bytes={self.max_event_bytes}\nsegment_bytes={self.segment_bytes}\n"
            f"created={self.created}\n{refs}"
        ).encode()


_REF_FIELD_RE = re.compile(r"\A(data|metadata)(\.[^.,\s=]+)+\Z")


def check_ref_field(path: str) -> str:
    """``path`` if it is a reference field (a dotted path under ``data`` or ``metadata``, such as
    ``data.order_event_id``), else :class:`InvalidArgument`."""
    if not isinstance(path, str) or not _REF_FIELD_RE.match(path):
        raise InvalidArgument(f"reference field {path!r} must be a dotted path under data or metadata, "
                              "like data.order_event_id")
    return path


def parse_format(text: bytes) -> FormatInfo:
    """Parse a ``FORMAT`` file; raises ``ValueError`` when it is not format 3."""
    lines = text.decode("utf-8").splitlines()
    if not lines or lines[0].strip() != FORMAT_LINE:
        raise ValueError(f"first line is not {FORMAT_LINE!r}")
    opts = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    refs = tuple(r for r in opts.get("ref_fields", "").strip().split(",") if r)
    info = FormatInfo(int(opts.get("max_event_bytes", DEFAULT_MAX_EVENT_BYTES)),
                      int(opts.get("segment_bytes", DEFAULT_SEGMENT_BYTES)), opts.get("created", ""), refs)
    if not 1 <= info.max_event_bytes <= 64 * 1024 * 1024 or not (
            MIN_SEGMENT_BYTES <= info.segment_bytes <= MAX_SEGMENT_BYTES):
        raise ValueError("max_event_bytes or segment_bytes out of range")
    if not all(_REF_FIELD_RE.match(r) for r in refs):
        raise ValueError(f"ref_fields holds a path that is not under data or metadata: {opts['ref_fields']!r}")
    return info


def is_legacy(root: str) -> bool:
    """True when ``root`` looks like a store written by the Ruby kroniko (format 1).

    Format 1 has no ``FORMAT`` file; its log is ``log/append.log`` with one bare event id per
    line, its events are ``events/<id>.json`` and its type index lives in ``index/type/``.
    """
    if os.path.lexists(os.path.join(root, "FORMAT")):
        return False
    if os.path.isdir(os.path.join(root, "index", "type")):
        return True
    # A Ruby store the gem opened but never wrote to: its bare folders, empty.
    if all(os.path.isdir(os.path.join(root, d)) for d in ("events", "index", "log")) and not os.listdir(
        os.path.join(root, "events")
    ):
        log = os.path.join(root, "log", "append.log")
        return not os.path.exists(log) or os.path.getsize(log) == 0
    return os.path.isfile(os.path.join(root, "log", "append.log"))


LAYOUT_NAMES = frozenset({"FORMAT", "log", "index", "packs", "locks", "lost-found"})


def _is_empty_dir(root: str) -> bool:
    return os.path.isdir(root) and not os.listdir(root)


def _is_unfinished_creation(root: str) -> bool:
    """True for a folder holding only part of a new layout: no FORMAT (it is written last),
    nothing but layout names, and no segment holding a byte. Another process may be creating it right now."""
    names = {n for n in os.listdir(root) if not n.startswith(TMP_PREFIX)}  # FORMAT's own temp file
    if "FORMAT" in names or not names <= LAYOUT_NAMES:
        return False
    log_dir = Layout(root).log_dir
    if not os.path.isdir(log_dir):
        return True
    # create() makes the first segment (zeros) before FORMAT: a log of segments holding no record
    # is no store yet.
    from .format.segment import holds_no_record

    return all(holds_no_record(os.path.join(log_dir, n)) for n in os.listdir(log_dir) if n.endswith(".seg"))


def check_no_symlinks(root: str) -> None:
    """Refuse a store whose own folders or files are symbolic links: writing through one would
    write outside the store. (The index database files are checked wherever SQLite opens them,
    by :func:`kroniko_ops.indexdb.check_files`.)"""
    for name in sorted(LAYOUT_NAMES):
        path = os.path.join(root, name)
        if os.path.islink(path):
            raise StoreCorrupted(
                f"{path} is a symbolic link; a store's own files and folders must not be links "
                f"(writing through it would write outside the store). Run: kroniko-ops fsck {root}"
            )


def create(root: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
           segment_bytes: int = DEFAULT_SEGMENT_BYTES, durable: bool = True,
           ref_fields: tuple[str, ...] = ()) -> FormatInfo:
    """Lay out a new store in ``root`` (missing or empty): folders, the first segment preallocated
    (``segment_bytes`` zeros, written and fsynced), FORMAT last. A failure (a full disk) removes
    what this call made and raises :class:`NothingWritten`."""
    from .format.segment import seg_name

    if not MIN_SEGMENT_BYTES <= segment_bytes <= MAX_SEGMENT_BYTES:
        raise InvalidArgument(f"segment_bytes must be {MIN_SEGMENT_BYTES}..{MAX_SEGMENT_BYTES}, got {segment_bytes}")
    if not 1 <= max_event_bytes <= 64 * 1024 * 1024:
        raise InvalidArgument(f"max_event_bytes must be 1..{64 * 1024 * 1024}, got {max_event_bytes}")
    lay = Layout(root)
    made = [d for d in (root, lay.log_dir, lay.index, lay.packs, lay.locks, lay.lost_found) if not os.path.lexists(d)]
    first = os.path.join(lay.log_dir, seg_name(1))
    refs = tuple(dict.fromkeys(check_ref_field(r) for r in ref_fields))
    info = FormatInfo(max_event_bytes, segment_bytes, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), refs)
    try:
        for d in (root, lay.log_dir, lay.index, lay.packs, lay.locks, lay.lost_found):
            fileio.makedirs(d)
        fd = fileio.open_write(first, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)
        try:
            fileio.write_zeros(fd, 0, segment_bytes, first)
            fileio.Syncer(durable).file(fd, first)
        finally:
            os.close(fd)
        fileio.write_file_atomic(lay.format_file, info.render(), durable)
    except OSError as exc:
        _unmake(first, made)
        raise NothingWritten(f"creating the store {root} failed ({exc}); nothing was left behind: free disk space "
                             "(or fix permissions) and retry") from exc
    if durable:
        # Each new name is durable only once the folder holding it is synced, the store's own
        # name in its parent included.
        parent = os.path.dirname(os.path.abspath(root))
        for d in (lay.log_dir, lay.index, lay.packs, lay.locks, lay.lost_found, root, parent):
            fileio.fsync_dir(d)
    return info


def _unmake(first: str, made: list[str]) -> None:
    """Remove what a failed :func:`create` made: its first segment and the folders it created
    (those still empty; the lock a concurrent opener holds keeps ``locks/``)."""
    for path in (first,):
        try:
            if os.path.lexists(path):
                fileio.unlink(path)
        except OSError:
            pass
    for d in reversed(made):
        try:
            if not os.listdir(d):
                fileio.rmdir(d)
        except OSError:
            pass


def open_store(root: str, create_missing: bool, max_event_bytes: int | None, durable: bool,
               segment_bytes: int | None = None, ref_fields: tuple[str, ...] = ()) -> FormatInfo:
    """Check that ``root`` is a format-3 store (creating it if allowed) and return its options."""
    if os.path.exists(root) and not os.path.isdir(root):
        raise InvalidArgument(f"{root} is a file, not a store folder; give a folder path")
    lay = Layout(root)
    if not os.path.exists(root) or _is_empty_dir(root) or _is_unfinished_creation(root):
        if not create_missing:
            if os.path.exists(root):  # a folder, but no store in it: bad usage, not "could not run"
                raise NotAStore(f"{root} is an empty folder, not a store; nothing was written. Create one with: "
                                f"kroniko-ops init {root}")
            raise StoreNotFound(f"no store at {root}; create one with: kroniko-ops init {root}")
        # Several processes may open a new store at once: create it under the append lock and
        # let whoever comes second find FORMAT (written last) in place.
        from .locking import held

        fileio.makedirs(lay.locks)
        with held(lay.append_lock, 60.0, "append"):
            if not os.path.exists(lay.format_file):
                return create(root, max_event_bytes or DEFAULT_MAX_EVENT_BYTES,
                              segment_bytes or DEFAULT_SEGMENT_BYTES, durable, ref_fields)
    check_no_symlinks(root)
    try:
        raw = fileio.read_small(lay.format_file, 4096)
    except FileNotFoundError:
        if is_legacy(root):
            raise LegacyStore(root) from None
        if os.path.isdir(lay.log_dir):
            raise StoreCorrupted(
                f"{root} has a log but no FORMAT file; run: kroniko-ops fsck {root}"
            ) from None
        raise InvalidArgument(
            f"{root} is a non-empty folder that is not a kroniko-ops store; use an empty folder"
        ) from None
    except OSError as exc:
        if out_of_files(exc):  # the process's limit, not the store's fault
            raise NothingWritten(f"could not open {lay.format_file} ({exc}); nothing was written: raise the "
                                 "open-files limit (ulimit -n) or close files, and retry") from exc
        if denied(exc):
            raise access_denied(lay.format_file, exc) from None
        raise StoreCorrupted(f"{lay.format_file} is unreadable ({exc}); run: kroniko-ops fsck {root}") from None
    try:
        return parse_format(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreCorrupted(f"{lay.format_file} is unreadable ({exc}); run: kroniko-ops fsck {root}") from None


def _read_range(fd: int, start: int, end: int) -> Iterator[bytes]:
    """Bytes ``start..end`` of ``fd`` a megabyte at a time: what is set aside may be far bigger
    than memory should hold."""
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(1 << 20, end - pos), pos)
        if not chunk:
            return
        yield chunk
        pos += len(chunk)


def _put_aside(path: str, chunks: Iterator[bytes], durable: bool) -> None:
    """Write a new file of ``lost-found/`` (never replacing one)."""
    fd = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        for chunk in chunks:
            fileio.write_all(fd, chunk, path)
        fileio.Syncer(durable).file(fd, path)
    finally:
        os.close(fd)


def set_aside(root: str, label: str, note: str, files: dict[str, bytes] | None = None,
              move: list[str] | None = None, durable: bool = True,
              copies: dict[str, tuple[int, int, int]] | None = None) -> str:
    """Put bytes and files into a new folder of ``lost-found/`` with a ``NOTE.txt``; return it.

    Nothing the user wrote is ever deleted: recovery and pruning call this instead.
    """
    base = Layout(root).lost_found
    fileio.makedirs(base)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = os.path.join(base, f"{stamp}-{os.getpid()}-{os.urandom(3).hex()}-{label}")
    fileio.makedirs(folder)
    for name, data in (files or {}).items():
        _put_aside(os.path.join(folder, name), iter((data,)), durable)
    for name, (src, start, end) in (copies or {}).items():
        _put_aside(os.path.join(folder, name), _read_range(src, start, end), durable)
    for path in move or ():
        dst = os.path.join(folder, os.path.basename(path))
        fileio.rename(path, dst)
    _put_aside(os.path.join(folder, "NOTE.txt"), iter(((note.rstrip("\n") + "\n").encode(),)), durable)
    syncer = fileio.Syncer(durable)
    syncer.dir(folder)
    syncer.dir(base)
    return folder


def init_refs(root: str, ref_fields: tuple[str, ...], max_event_bytes: int | None = None,
              segment_bytes: int | None = None, durable: bool = True) -> FormatInfo:
    """Create the store at ``root`` recording ``ref_fields`` in its FORMAT (the fields ``fsck``
    then checks as references to event ids) and the given sizes, or confirm that the existing
    store records the same (each one given); :class:`InvalidArgument` (nothing written)
    otherwise: FORMAT is fixed at creation."""
    wanted = tuple(dict.fromkeys(check_ref_field(r) for r in ref_fields))
    info = open_store(root, True, max_event_bytes, durable, segment_bytes, wanted)
    if wanted and set(info.ref_fields) != set(wanted):
        raise InvalidArgument(f"{root} already exists with reference fields {','.join(info.ref_fields) or '(none)'}; "
                              "they are fixed when a store is created: pass --ref-field to fsck instead; nothing "
                              "was written")
    for option, given, recorded in (("--segment-bytes", segment_bytes, info.segment_bytes),
                                    ("--max-event-bytes", max_event_bytes, info.max_event_bytes)):
        if given is not None and given != recorded:
            raise InvalidArgument(f"{root} already exists with {option.lstrip('-').replace('-', '_')}={recorded}; "
                                  f"it is fixed when a store is created ({option} {given} applies to a new store "
                                  "only); nothing was written")
    return info

