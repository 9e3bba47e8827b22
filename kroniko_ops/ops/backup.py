"""``backup``: an online, consistent, checksummed copy of a store (full or incremental).

The head H is read first; the backup then holds exactly positions 1..H (or base+1..H) however
many appends happen meanwhile, because the log below H never changes and committed events are
never rewritten. It copies the log bytes ``[0, H*219)``, each committed event (through the
engine, so an event compaction packs and removes mid-backup is read from its pack), whole packs
that lie inside the range, ``FORMAT``, and the index cut at H; ``MANIFEST.json`` comes last.
Everything is written into a temp folder (or temp file) beside DEST and renamed into place once
durable, so DEST is either absent or a whole backup.

``verify_backup`` lives in :mod:`.backup_verify` and is re-exported here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator

from .. import __version__, fileio
from ..codec import decode_event
from ..errors import InvalidArgument, StoreCorrupted, StoreNotFound
from ..log import LINE_LEN, BadLine, find_head, iter_lines, read_line
from ..packs import list_packs, pack_name
from ..progress import progress
from ..report import Report, write_metrics
from ..store import EventStore
from .backup_chain import TrailerHash, run_forked
from .backup_index import IndexDamaged, checkpoint_bytes, index_lines, merge_index, read_index
from .backup_sink import FolderSink, Sink, TarSink, publish, remove_tree, sweep_stale, temp_path
from .backup_verify import fd_chunks, read_manifest, verify_backup
from .manifest import FULL_DIRS, INCREMENT_DIRS, BaseRef, Manifest, ManifestError, now_utc

__all__ = ["backup", "verify_backup"]

IndexCopy = tuple[dict[str, bytes], dict[str, bytes]]
FORK_MIN_POSITIONS = 20_000  # below this, reading the index in a child costs more than it saves
INDEX_DIRS = ("index/ids", "index/tags", "index/types")


def backup(store: str, dest: str, *, incremental_from: str | None = None, archive: bool = False,
           quiet: bool = True, metrics_file: str | None = None, durable: bool = True) -> Report:
    """Back up the store at ``store`` into ``dest`` (a new or empty folder, or with ``archive`` a
    new ``.tar`` file) at the head read when it starts; writers may keep appending.

    With ``incremental_from`` (a previous backup of this store, full or incremental), only the
    positions after that backup's head are copied and the manifest names it by head and chain.
    ``durable=False`` skips the final flush (tests). Raises InvalidArgument (exit 2) for a
    non-empty DEST or a base that is not a backup of this store, StoreCorrupted (exit 4) when the
    source is damaged in the range copied.
    """
    store, dest = os.fspath(store), os.fspath(dest)
    report = Report("backup", dest)
    base = _read_base(incremental_from) if incremental_from else None
    _check_dest(dest, archive)
    with EventStore(store, create=False) as src:
        cp = src.index.read_checkpoint()  # before the head: what it covers is then at or below it
        tail = _tail(src)
        head, chain = tail
        first = 1 if base is None else base[1].head + 1
        prev_chain = None if base is None else _check_base(src, base, head)
        parent = os.path.dirname(os.path.abspath(dest)) or "."
        fileio.makedirs(parent)
        for path in sweep_stale(parent, "backup", os.path.basename(dest)):
            report.add("backup-stale-temp", "info", path, "removed a temp copy left by an interrupted backup")
        manifest = Manifest("full" if base is None else "incremental", first, head, chain,
                            prev_chain or "0" * 64, now_utc(), src.max_event_bytes, source=os.path.abspath(store),
                            tool=f"kroniko-ops {__version__}")
        if base is not None:
            rel = os.path.relpath(os.path.abspath(base[0]), parent)
            manifest.base = BaseRef(base[1].head, base[1].chain, rel)
        tmp = temp_path(parent, "backup", os.path.basename(dest))
        sink: Sink = TarSink(tmp, manifest.created_epoch, durable) if archive else FolderSink(tmp, durable)
        try:
            stats = _write(src, sink, manifest, cp.trusted, quiet, report)
            manifest.files, manifest.dirs = sink.files, sink.dirs
            sink.finish(manifest.render())
            publish(tmp, dest, durable)
        except BaseException:
            if isinstance(sink, TarSink):
                sink.abort()
            remove_tree(tmp)
            raise
    report.head = head
    report.finish()
    secs = max(report.seconds, 1e-9)
    report.figures.update(backup_kind=manifest.kind, first=first, chain=chain, files=len(sink.files),
                          bytes=sink.bytes, mb_per_s=round(sink.bytes / secs / 1e6, 1), **stats)
    if metrics_file:
        write_metrics(metrics_file, "kroniko_backup", {
            "last_head": head, "last_first": first, "last_bytes": sink.bytes, "last_files": len(sink.files),
            "last_duration_seconds": report.seconds, "last_success_timestamp_seconds": time.time()},
            {"store": os.path.abspath(store), "dest": os.path.abspath(dest), "kind": manifest.kind})
    return report


def _read_base(path: str) -> tuple[str, Manifest]:
    try:
        return path, read_manifest(path)
    except (FileNotFoundError, StoreNotFound):
        raise InvalidArgument(f"--incremental-from {path}: no backup there (no MANIFEST.json)") from None
    except (ManifestError, OSError, ValueError) as exc:
        raise InvalidArgument(f"--incremental-from {path}: its manifest does not check ({exc}); "
                              f"run: kroniko-ops verify-backup {path}") from None


def _check_dest(dest: str, archive: bool) -> None:
    if archive:
        if os.path.lexists(dest):
            raise InvalidArgument(f"{dest} exists; an archive backup needs a new file name")
    elif os.path.lexists(dest) and (not os.path.isdir(dest) or os.path.islink(dest) or os.listdir(dest)):
        raise InvalidArgument(f"{dest} exists and is not an empty folder; back up into a new or empty folder")


def _tail(src: EventStore) -> tuple[int, str]:
    fd = os.open(src.layout.log, os.O_RDONLY | os.O_CLOEXEC)
    try:
        tail = find_head(fd)
    finally:
        os.close(fd)
    return tail.head, tail.chain


def _check_base(src: EventStore, base: tuple[str, Manifest], head: int) -> str:
    """The chain at the base's head, after checking the store has it there (same history)."""
    path, m = base
    if m.head > head:
        raise InvalidArgument(f"the base {path} holds head {m.head}, beyond this store's head {head}: "
                              "it is not a backup of this store (backup-base-mismatch)")
    if m.head:
        try:
            line = read_line(src._read_fd, m.head)
        except BadLine:
            raise StoreCorrupted(f"log line {m.head} of {src.path} is damaged; "
                                 f"run: kroniko-ops fsck {src.path}") from None
        if line.chain != m.chain:
            raise InvalidArgument(f"the base {path} (head {m.head}) has another chain hash than this store at "
                                  "that position: it is not a backup of this store (backup-base-mismatch)")
    return m.chain


def _select_packs(folder: str, first: int, head: int) -> list[tuple[int, int]]:
    """Packs lying wholly inside ``first..head``, without overlaps (a merged pack over its parts)."""
    chosen: list[tuple[int, int]] = []
    for a, b in sorted(list_packs(folder)[0], key=lambda r: (r[0], -r[1])):
        if a >= first and b <= head and (not chosen or a > chosen[-1][1]):
            chosen.append((a, b))
    return chosen


def _copy_pack(src: EventStore, sink: Sink, a: int, b: int) -> bool:
    """Copy one pack (both files) whole; False when compaction merged it away meanwhile."""
    stem = os.path.join(src.layout.packs, pack_name(a, b))
    fds = []
    try:
        for suffix in (".pack", ".idx"):
            fds.append(os.open(stem + suffix, os.O_RDONLY | os.O_CLOEXEC))
    except FileNotFoundError:
        for fd in fds:
            os.close(fd)
        return False
    try:
        for fd, suffix in zip(fds, (".pack", ".idx"), strict=True):
            size = os.fstat(fd).st_size
            check = TrailerHash(size)
            sink.add_stream(f"packs/{pack_name(a, b)}{suffix}", size, _tee(fd_chunks(fd, 0, size), check))
            if not check.ok():
                raise StoreCorrupted(f"{stem}{suffix} fails its checksum (pack-corrupt); "
                                     f"run: kroniko-ops fsck {src.path}")
    finally:
        for fd in fds:
            os.close(fd)
    return True


def _tee(chunks: Iterable[bytes], check: TrailerHash) -> Iterator[bytes]:
    for chunk in chunks:
        check.feed(chunk)
        yield chunk


def _write(src: EventStore, sink: Sink, m: Manifest, trusted: int, quiet: bool, report: Report) -> dict[str, int]:
    """Everything but the manifest, in the order a reader of a half-written backup is least
    surprised by: folders, FORMAT, log, packs, events, index."""
    # Reading thousands of small index files (system calls and Python) runs in a child process
    # on another core while this one streams the log and packs.
    big = m.head - m.first + 1 >= FORK_MIN_POSITIONS
    prefetched = run_forked(lambda: _read_index(src.layout.index, m.first - 1, min(trusted, m.head)), big)
    return _write_all(src, sink, m, trusted, quiet, report, prefetched)


def _read_index(root: str, after: int, upto: int) -> IndexCopy | IndexDamaged:
    """:func:`read_index`, its failure returned rather than raised (it may cross a process)."""
    try:
        return read_index(root, after, upto)
    except IndexDamaged as exc:
        return exc


def _write_all(src: EventStore, sink: Sink, m: Manifest, trusted: int, quiet: bool, report: Report,
               prefetched: Callable[[], IndexCopy | IndexDamaged]) -> dict[str, int]:
    full = m.kind == "full"
    for d in (*(FULL_DIRS if full else INCREMENT_DIRS), *INDEX_DIRS):
        sink.mkdir(d)
    if full:
        sink.add_bytes("FORMAT", fileio.read_file(src.layout.format_file))
    fd = os.open(src.layout.log, os.O_RDONLY | os.O_CLOEXEC)
    try:
        start, size = (m.first - 1) * LINE_LEN, (m.head - m.first + 1) * LINE_LEN
        sink.add_stream(m.log_name, size, fd_chunks(fd, start, size))
    finally:
        os.close(fd)
    copied: list[tuple[int, int]] = []
    for a, b in _select_packs(src.layout.packs, m.first, m.head):
        if _copy_pack(src, sink, a, b):
            copied.append((a, b))
            m.packs[f"packs/{pack_name(a, b)}.pack"] = (a, b)
    extras: list[tuple[int, str, str, tuple[str, ...]]] = []
    loose = 0
    for a, b in _gaps(copied, m.first, m.head):
        loose += _copy_events(src, sink, a, b, trusted, extras, quiet)
    for a, b in copied:
        if b > trusted:
            extras.extend(src._entries(max(a, trusted + 1), b))  # type: ignore[arg-type]
    extras.sort()
    _write_index(src, sink, m, prefetched, extras, report)
    return {"packs": len(copied), "packed_events": sum(b - a + 1 for a, b in copied), "loose_events": loose}


def _gaps(covered: list[tuple[int, int]], first: int, last: int) -> Iterator[tuple[int, int]]:
    pos = first
    for a, b in covered:
        if a > pos:
            yield pos, a - 1
        pos = b + 1
    if pos <= last:
        yield pos, last


def _copy_events(src: EventStore, sink: Sink, a: int, b: int, trusted: int,
                 extras: list[tuple[int, str, str, tuple[str, ...]]], quiet: bool) -> int:
    expected = a
    try:
        for line in progress(iter_lines(src._read_fd, a, b), b - a + 1, "backup", quiet):
            if line.position != expected:
                raise StoreCorrupted(f"log line {expected} of {src.path} says position {line.position}; "
                                     f"run: kroniko-ops fsck {src.path}")
            raw = src._load(line)  # verified against the log; falls back to the packs
            try:
                sink.add_bytes(f"events/{line.event_id}.json", raw, sha=line.event_hash)
            except ValueError:
                raise StoreCorrupted(f"event id {line.event_id} is at two positions (log-duplicate-id); "
                                     f"run: kroniko-ops fsck {src.path}") from None
            if expected > trusted:
                ev = decode_event(raw)
                extras.append((expected, line.event_id, ev.type, tuple(ev.tags)))
            expected += 1
    except BadLine as exc:
        raise StoreCorrupted(f"log line {expected} of {src.path} is damaged ({exc}); "
                             f"run: kroniko-ops fsck {src.path}") from None
    return b - a + 1


def _write_index(src: EventStore, sink: Sink, m: Manifest, prefetched: Callable[[], IndexCopy | IndexDamaged],
                 extras: list[tuple[int, str, str, tuple[str, ...]]], report: Report) -> None:
    """The source's index cut to the range (read by ``prefetched`` while the log and packs were
    copied) plus lines for positions past its checkpoint; when the source index does not parse,
    the backup's is built from the events instead."""
    files, names = index_lines(extras)
    try:
        got = prefetched()
        if isinstance(got, IndexDamaged):
            raise got
        cut, cut_names = got
        out = list(merge_index(cut, cut_names, files, names))
    except IndexDamaged as exc:
        report.add("backup-index-rebuilt", "warning", src.layout.index,
                   f"the source index does not parse ({exc}); the backup's index was built from the events. "
                   f"Run: kroniko-ops fsck {src.path}")
        files, names = index_lines(src._entries(m.first, m.head))  # type: ignore[arg-type]
        out = list(merge_index({}, {}, files, names))
    for rel, data in out:
        sink.add_bytes(rel, data)
    if m.kind == "full":
        sink.add_bytes("index/CHECKPOINT", checkpoint_bytes(m.head))

