"""Where things live in a store folder, the ``FORMAT`` file, and telling format 1 from 2."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from . import fileio
from .codec import DEFAULT_MAX_EVENT_BYTES
from .errors import InvalidArgument, LegacyStore, StoreCorrupted, StoreNotFound

FORMAT_LINE = "kroniko-ops format 2"
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
    """The paths of one store (format 2)."""

    root: str

    @property
    def format_file(self) -> str:
        """``FORMAT``."""
        return os.path.join(self.root, "FORMAT")

    @property
    def events(self) -> str:
        """``events/``: loose event files."""
        return os.path.join(self.root, "events")

    @property
    def log_dir(self) -> str:
        """``log/``."""
        return os.path.join(self.root, "log")

    @property
    def log(self) -> str:
        """``log/append.log``: the commit log."""
        return os.path.join(self.root, "log", "append.log")

    @property
    def index(self) -> str:
        """``index/``: derived, rebuildable."""
        return os.path.join(self.root, "index")

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
    def maintenance_lock(self) -> str:
        """``locks/maintenance.lock``: held by compact, repair and restore."""
        return os.path.join(self.root, "locks", "maintenance.lock")

    @property
    def lost_found(self) -> str:
        """``lost-found/``: what recovery and pruning set aside."""
        return os.path.join(self.root, "lost-found")

    def event_file(self, event_id: str) -> str:
        """The loose file of one event."""
        return os.path.join(self.root, "events", event_id + ".json")


@dataclass(frozen=True)
class FormatInfo:
    """What ``FORMAT`` says: the format line and the options fixed at creation."""

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    created: str = ""

    def render(self) -> bytes:
        """The file's text."""
        return (
            f"{FORMAT_LINE}\nmax_event_bytes={self.max_event_bytes}\ncreated={self.created}\n"
        ).encode()


def parse_format(text: bytes) -> FormatInfo:
    """Parse a ``FORMAT`` file; raises ``ValueError`` when it is not format 2."""
    lines = text.decode("utf-8").splitlines()
    if not lines or lines[0].strip() != FORMAT_LINE:
        raise ValueError(f"first line is not {FORMAT_LINE!r}")
    opts = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    return FormatInfo(int(opts.get("max_event_bytes", DEFAULT_MAX_EVENT_BYTES)), opts.get("created", ""))


def is_legacy(root: str) -> bool:
    """True when ``root`` looks like a store written by the Ruby kroniko (format 1).

    Format 1 has no ``FORMAT`` file; its log holds one bare event id per line and its type
    index lives in ``index/type/``.
    """
    if os.path.exists(os.path.join(root, "FORMAT")):
        return False
    if os.path.isdir(os.path.join(root, "index", "type")):
        return True
    # A Ruby store the gem opened but never wrote to: its bare folders, none of format 2's own.
    format2_marks = ("packs", "lost-found", "index/CHECKPOINT", "index/types", "index/tags", "index/ids")
    if all(os.path.isdir(os.path.join(root, d)) for d in ("events", "index", "log")) and not any(
        os.path.exists(os.path.join(root, m)) for m in format2_marks
    ) and not os.listdir(os.path.join(root, "events")):
        log = os.path.join(root, "log", "append.log")
        return not os.path.exists(log) or os.path.getsize(log) == 0
    try:
        with open(os.path.join(root, "log", "append.log"), "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    # A format-2 line starts with a 12-digit position and a space; a Ruby id has a '.' or '-' early.
    return bool(first) and not (first[:12].isdigit() and first[12:13] == b" ")


LAYOUT_NAMES = frozenset({"FORMAT", "events", "log", "index", "packs", "locks", "lost-found"})


def _is_empty_dir(root: str) -> bool:
    return os.path.isdir(root) and not os.listdir(root)


def _is_unfinished_creation(root: str) -> bool:
    """True for a folder holding only part of a new layout: no FORMAT (it is written last),
    nothing but layout names, and an empty log. Another process may be creating it right now."""
    names = {n for n in os.listdir(root) if not n.startswith(TMP_PREFIX)}  # FORMAT's own temp file
    if "FORMAT" in names or not names <= LAYOUT_NAMES:
        return False
    log = Layout(root).log
    return not os.path.exists(log) or os.path.getsize(log) == 0


def create(root: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, durable: bool = True) -> FormatInfo:
    """Lay out a new store in ``root`` (missing or empty)."""
    lay = Layout(root)
    for d in (root, lay.events, lay.log_dir, lay.index, lay.packs, lay.locks, lay.lost_found):
        fileio.makedirs(d)
    info = FormatInfo(max_event_bytes, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    # The log exists from the start so that an empty store is told apart from a damaged one.
    fd = fileio.open_write(lay.log, os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    fileio.write_file_atomic(lay.format_file, info.render(), durable)
    if durable:
        for d in (lay.log_dir, root):
            fileio.fsync_dir(d)
    return info


def open_store(root: str, create_missing: bool, max_event_bytes: int | None, durable: bool) -> FormatInfo:
    """Check that ``root`` is a format-2 store (creating it if allowed) and return its options."""
    if os.path.exists(root) and not os.path.isdir(root):
        raise InvalidArgument(f"{root} is a file, not a store folder; give a folder path")
    lay = Layout(root)
    if not os.path.exists(root) or _is_empty_dir(root) or _is_unfinished_creation(root):
        if not create_missing:
            raise StoreNotFound(f"no store at {root}; create one with: kroniko-ops init {root}")
        # Several processes may open a new store at once: create it under the append lock and
        # let whoever comes second find FORMAT (written last) in place.
        from .locking import held

        fileio.makedirs(lay.locks)
        with held(lay.append_lock, 60.0, "append"):
            if not os.path.exists(lay.format_file):
                return create(root, max_event_bytes or DEFAULT_MAX_EVENT_BYTES, durable)
    try:
        raw = fileio.read_file(lay.format_file)
    except FileNotFoundError:
        if is_legacy(root):
            raise LegacyStore(root) from None
        if os.path.exists(lay.log):
            raise StoreCorrupted(
                f"{root} has a log but no FORMAT file; run: kroniko-ops fsck {root}"
            ) from None
        raise InvalidArgument(
            f"{root} is a non-empty folder that is not a kroniko-ops store; use an empty folder"
        ) from None
    try:
        return parse_format(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreCorrupted(f"{lay.format_file} is unreadable ({exc}); run: kroniko-ops fsck {root}") from None


def set_aside(root: str, label: str, note: str, files: dict[str, bytes] | None = None,
              move: list[str] | None = None, durable: bool = True) -> str:
    """Put bytes and files into a new folder of ``lost-found/`` with a ``NOTE.txt``; return it.

    Nothing the user wrote is ever deleted: recovery and pruning call this instead.
    """
    base = Layout(root).lost_found
    fileio.makedirs(base)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = os.path.join(base, f"{stamp}-{os.getpid()}-{os.urandom(3).hex()}-{label}")
    fileio.makedirs(folder)
    for name, data in (files or {}).items():
        fd = fileio.open_write(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            fileio.write_all(fd, data, name)
            if durable:
                fileio.fsync(fd, name)
        finally:
            os.close(fd)
    for path in move or ():
        dst = os.path.join(folder, os.path.basename(path))
        fileio.rename(path, dst)
    fd = fileio.open_write(os.path.join(folder, "NOTE.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        fileio.write_all(fd, (note.rstrip("\n") + "\n").encode(), "NOTE.txt")
        if durable:
            fileio.fsync(fd, "NOTE.txt")
    finally:
        os.close(fd)
    if durable:
        fileio.fsync_dir(folder)
        fileio.fsync_dir(base)
    return folder
