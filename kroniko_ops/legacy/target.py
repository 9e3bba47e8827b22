"""Where a migration writes: a new format-3 store built under a temporary name, published whole.

The store is built in a temporary folder beside the target (``.tmp-<pid>-migrate-...``)
through :class:`~kroniko_ops.EventStore` with ``durable=False``, in batches of
``BATCH_EVENTS`` events (or ``BATCH_BYTES``) that keep the legacy ids, so every batch lands at exactly the positions
the legacy log gave its events. When everything is written, :meth:`Target.finish` indexes the
rest, closes the store, fsyncs every file and folder of it once, and renames the folder to the
target's name (then fsyncs the parent). Until that rename nothing exists under the target name,
so an interrupted migration (a kill, a power cut, a full disk) can never be taken for a finished
store. A target that is an empty mount point cannot be replaced by a rename: the store is then
built in a temporary folder inside it and its entries are moved up one by one, ``log`` first
and ``FORMAT`` last, so a partial move is a folder with a log and no ``FORMAT``, which every
command refuses. See docs/LEGACY.md.
"""

from __future__ import annotations

import errno
import os

from .. import fileio, layout
from ..errors import DurabilityError, InvalidArgument, KronikoError, StoreCorrupted
from ..model import Event
from ..report import safe_text
from ..store import EventStore

BATCH_EVENTS = 5000  # per append: the engine's per-batch work (lock, tail, id lookup) spread thin
BATCH_BYTES = 16 << 20
TEMP_TAG = "migrate"
# The order entries move into a mount-point target: the log first (a folder holding a log but
# no FORMAT is refused by every command), FORMAT last (it makes the folder a store).
_MOVE_ORDER = ("log", "index", "packs", "locks", "lost-found")

Encoded = tuple[str, bytes]


def temp_name(target: str) -> str:
    """A fresh temporary folder name for building ``target``: ``.tmp-<pid>-migrate-<hex>-<name>``
    (the engine's temp prefix, so tools recognise it as a temp file of a live or dead process)."""
    base = os.path.basename(os.path.normpath(target))[:80]
    return f"{layout.TMP_PREFIX}{os.getpid()}-{TEMP_TAG}-{os.urandom(3).hex()}-{base}"


def stale_temps(target: str) -> list[str]:
    """Temporary folders that interrupted migrations into ``target`` left beside it (their
    process is gone). They are partial copies, never stores under the target's name."""
    target = os.path.normpath(target)
    base = os.path.basename(target)[:80]
    out: list[str] = []
    for parent in (os.path.dirname(os.path.abspath(target)), target):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            if f"-{TEMP_TAG}-" not in name or not (name.endswith(f"-{base}") or parent == target):
                continue
            path = os.path.join(parent, name)
            if layout.stale_temp(name, path) and os.path.isdir(path):
                out.append(path)
    return sorted(out)


def _walk(root: str) -> tuple[list[str], list[str]]:
    """Files and folders under ``root`` (folders deepest first, ``root`` last); links are not
    followed (a store holds none)."""
    files: list[str] = []
    dirs: list[str] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        dirs.append(dirpath)
        files.extend(os.path.join(dirpath, n) for n in filenames)
    dirs.sort(key=lambda d: d.count(os.sep), reverse=True)
    return files, dirs


def remove_tree(root: str) -> None:
    """Remove a temporary folder this migration built (never anything else: it holds copies of
    what the legacy store still has)."""
    files, dirs = _walk(root)
    for path in files:
        fileio.unlink(path)
    for path in dirs:
        fileio.rmdir(path)


class Target:
    """A new store for ``target`` (missing, or an empty folder), built under a temporary name.

    :meth:`add` queues events (with their canonical encoding) and appends them a batch at a time;
    :meth:`keep_aside` puts bytes into the store's ``lost-found/``; :meth:`finish` publishes the
    store under ``target``; :meth:`close` after a failure removes the temporary folder.
    """

    def __init__(self, target: str, max_event_bytes: int, segment_bytes: int | None = None,
                 durable: bool = True, batch_events: int = BATCH_EVENTS, inside: bool | None = None) -> None:
        self.target = target
        self.batch_events = batch_events
        self.durable = durable
        # An empty mount point cannot be replaced by a rename: build inside it instead (``inside``
        # forces either way; None decides by the target).
        self.inside = os.path.isdir(target) and os.path.ismount(target) if inside is None else inside
        parent = target if self.inside else os.path.dirname(os.path.abspath(target))
        fileio.makedirs(parent)
        self.path = os.path.join(parent, temp_name(target))
        self.max_event_bytes = max_event_bytes
        try:
            self.store: EventStore | None = EventStore(self.path, durable=False, max_event_bytes=max_event_bytes,
                                                       segment_bytes=segment_bytes)
        except BaseException:
            if os.path.lexists(self.path):
                remove_tree(self.path)
            raise
        self.events: list[Event] = []
        self.bytes = 0
        self.written = 0
        self.published = False

    # -- writing ---------------------------------------------------------------------------

    def add(self, event: Event, encoded: Encoded) -> None:
        """Queue one event (``encoded`` is its canonical encoding, for the batch's size)."""
        self.events.append(event)
        self.bytes += len(encoded[1])
        if len(self.events) >= self.batch_events or self.bytes >= BATCH_BYTES:
            self.flush_batch()

    def flush_batch(self) -> None:
        """Append the queued events as one batch and check where it landed."""
        if not self.events:
            return
        assert self.store is not None
        expected = self.written + len(self.events)
        try:
            last = self.store.append(self.events)
        except (OSError, DurabilityError) as exc:
            raise self._failed(exc) from exc
        if last != expected:
            raise StoreCorrupted(
                f"the migration's new store {self.path} changed while it was written (a batch landed at {last}, "
                f"expected {expected}): nothing else may write to it")
        self.written = expected
        self.events, self.bytes = [], 0

    def keep_aside(self, label: str, note: str, files: dict[str, bytes]) -> str:
        """Put ``files`` into the new store's ``lost-found/`` (made durable by :meth:`finish`);
        return the folder relative to the store."""
        folder = layout.set_aside(self.path, label, safe_text(note), files=files, durable=False)
        return os.path.relpath(folder, self.path)

    # -- publishing ------------------------------------------------------------------------

    def finish(self, head: int) -> None:
        """Append what is queued, index everything, check the head is ``head``, make the
        store durable (unless ``durable=False``) and give it the target's name."""
        self.flush_batch()
        store = self.store
        assert store is not None
        try:
            with store.locked():
                store.flush_index()
        except (OSError, DurabilityError) as exc:
            raise self._failed(exc) from exc
        if store.head() != head:
            raise StoreCorrupted(f"the migration's new store ends at position {store.head()}, not {head}")
        self.store = None
        store.close()  # the index's last connection: SQLite folds its WAL into the database file
        try:
            if self.durable:
                fileio.make_durable(self.path)
            self._publish()
        except OSError as exc:
            raise self._failed(exc) from exc

    def _publish(self) -> None:
        if not self.inside:
            # Replaces a missing or empty target (rename(2) replaces an empty folder).
            try:
                fileio.rename(self.path, self.target)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise InvalidArgument(
                        f"{self.target} is no longer a missing or empty folder: something else wrote there while "
                        "the migration ran; nothing was published. Migrate into a new or empty folder") from exc
                raise
            self.published = True
            self._sync_name(os.path.dirname(os.path.abspath(self.target)))
            return
        names = [*_MOVE_ORDER, "FORMAT"]
        left = set(os.listdir(self.path)) - set(names)
        if left:
            raise StoreCorrupted(f"the migration's new store {self.path} holds unexpected entries {sorted(left)}")
        for name in names:
            src = os.path.join(self.path, name)
            if os.path.lexists(src):
                fileio.rename(src, os.path.join(self.target, name))
                if self.durable and name == "log":
                    fileio.fsync_dir(self.target)  # the log's name is durable before FORMAT's
        fileio.rmdir(self.path)
        self.published = True
        self._sync_name(self.target)

    def _sync_name(self, folder: str) -> None:
        """fsync the folder holding the published name; the store is complete either way."""
        if not self.durable:
            return
        try:
            fileio.fsync_dir(folder)
        except OSError as exc:
            raise DurabilityError(
                f"the migrated store {self.target} is complete, but the fsync of {folder} after giving it its "
                f"name failed ({exc}): the name may not survive a power cut. Check the disk; if the machine "
                "crashes before the next successful sync, migrate again") from exc

    def _failed(self, exc: Exception) -> DurabilityError:
        return DurabilityError(
            f"writing the migration's new store for {self.target} failed: {exc}. Nothing was published under "
            f"{self.target}; fix the cause (disk full, permissions) and migrate again")

    def close(self) -> list[str]:
        """Release the store; if it was not published, remove the temporary folder. Returns
        what could not be removed (the caller reports it)."""
        if self.store is not None:
            try:
                self.store.close()
            except (OSError, KronikoError):
                pass
            self.store = None
        if self.published or not os.path.lexists(self.path):
            return []
        try:
            remove_tree(self.path)
        except OSError:
            return [self.path]
        return []

