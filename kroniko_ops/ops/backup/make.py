"""``backup``: an online, consistent, checksummed copy of a store (full or incremental).

The synced position H is read first and the files holding ``1..H`` are opened
(:mod:`.snapshot`); the backup then holds exactly positions ``1..H`` however many appends,
seals or compactions happen meanwhile. Sealed segments, their ``.idx`` files and packs are
copied as they are (each checked against the checksum its own trailer records while it is
copied); the head's segment is copied up to the synced end, checked to end at H on a commit
mark with H's chain; ``FORMAT`` is copied. The index is not: it is derived, and restore rebuilds
it. An incremental backup references, instead of copying, every immutable file whose name and
SHA-256 its base already lists. ``MANIFEST.json`` comes last. Everything is written under a temp
name beside DEST, made durable, then renamed into place, so DEST is either absent or whole.
"""

from __future__ import annotations

import calendar
import hashlib
import os
import time
from collections.abc import Iterable, Iterator

from ... import __version__, fileio
from ...errors import InvalidArgument, StoreCorrupted, StoreNotFound
from ...format import pack as packfmt
from ...format import record as recfmt
from ...progress import Meter
from ...report import Report
from ...store import EventStore
from . import snapshot
from .chain import open_chain
from .container import Container
from .manifest import BaseRef, FileEntry, Manifest, ManifestError, now_utc
from .places import refuse_overlap
from .sink import FolderSink, Sink, TarSink, fd_chunks, publish, remove_tree, sweep_stale, temp_path


def backup(store: str | os.PathLike[str], dest: str | os.PathLike[str], *, incremental_from: str | None = None,
           archive: bool = False, lock_timeout: float = 30.0, progress: bool = False,
           durable: bool = True) -> Report:
    """Back up the store at ``store`` into ``dest`` (a new or empty folder, or with ``archive`` a
    new tar file) at its synced head; writers, sealing and compaction may go on meanwhile.

    With ``incremental_from`` (a previous backup of this store, full or incremental), files the
    base already holds are referenced, not copied. ``lock_timeout`` bounds the wait for the
    append lock when the synced position must be re-verified (after a reboot); ``progress``
    shows a bar on a terminal; ``durable=False`` skips the fsyncs (tests only). Raises
    InvalidArgument (exit 2) for a non-empty DEST or a base that is not a backup of this store,
    StoreCorrupted (exit 4) when the source does not check in the range copied.
    """
    store, dest = os.fspath(store), os.fspath(dest)
    report = Report("backup", dest)
    refuse_overlap(store, dest, "store", "backup destination")
    _check_dest(dest, archive)
    base = _read_base(incremental_from) if incremental_from else None
    parent = os.path.dirname(os.path.abspath(dest)) or "."
    fileio.makedirs(parent)
    for path in sweep_stale(parent, "backup", os.path.basename(dest)):
        report.add("backup-stale-temp", "info", path, "removed a temp copy left by an interrupted backup")
    problem = ""
    for _ in range(snapshot.ATTEMPTS):
        try:
            head, chain, manifest, sink, referenced = _attempt(store, dest, parent, base, archive, lock_timeout,
                                                               progress, durable)
            break
        except snapshot.Vanished as exc:
            # Compaction removed a file after the snapshot planned it (its records are in a pack
            # published first): what was written is gone, start again from a new snapshot.
            problem = str(exc)
    else:
        raise StoreCorrupted(f"the files of {store} kept being replaced while they were copied ({problem}); "
                             f"run the backup again, or: kroniko-ops fsck {store}")
    report.head = head
    report.finish()
    report.figures.update(backup_kind=manifest.kind, chain=chain.hex(), files=len(manifest.files),
                          copied=len(sink.files), referenced=referenced, bytes=sink.bytes,
                          mb_per_s=round(sink.bytes / max(report.seconds, 1e-9) / 1e6, 1))
    return report


def _attempt(store: str, dest: str, parent: str, base: tuple[str, Manifest] | None, archive: bool,
             lock_timeout: float, progress: bool, durable: bool) -> tuple[int, bytes, Manifest, Sink, int]:
    """One snapshot copied and published at ``dest``: its head, chain, manifest, sink and how
    many files were referenced; raises :class:`snapshot.Vanished` (nothing left behind) when a
    planned file is gone before it was copied."""
    with snapshot.take(store, lock_timeout) as snap:
        head, chain = snap.state.position, snap.state.chain
        if base is not None:
            _check_base(store, base, head, lock_timeout)
        created = now_utc()
        manifest = Manifest(head, chain.hex(), "", created, source=os.path.abspath(store),
                            tool=f"kroniko-ops {__version__}")
        if base is not None:
            manifest.base = BaseRef(base[1].checksum, base[1].head, os.path.relpath(os.path.abspath(base[0]), parent))
        tmp = temp_path(parent, "backup", os.path.basename(dest))
        mtime = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
        sink: Sink | None = None
        try:
            sink = TarSink(tmp, mtime, durable) if archive else FolderSink(tmp, durable)
            referenced = _write(snap, sink, manifest, base[1] if base else None, progress)
            sink.finish(manifest.render())
            publish(tmp, dest, durable)
        except BaseException:
            if sink is not None:
                sink.abort()
            remove_tree(tmp)
            raise
    assert sink is not None
    return head, chain, manifest, sink, referenced


def _check_dest(dest: str, archive: bool) -> None:
    if archive:
        if os.path.lexists(dest):
            raise InvalidArgument(f"{dest} exists; an archive backup needs a new file name")
    elif os.path.lexists(dest) and (not os.path.isdir(dest) or os.path.islink(dest) or os.listdir(dest)):
        raise InvalidArgument(f"{dest} exists and is not an empty folder; back up into a new or empty folder")


def _read_base(path: str) -> tuple[str, Manifest]:
    try:
        with Container(path) as c:
            m = c.manifest()
            with open_chain(path, c, m) as chain:
                del chain  # its bases must be there: an incremental is useless without them
    except (FileNotFoundError, StoreNotFound):
        raise InvalidArgument(f"--incremental-from {path}: no backup there (no MANIFEST.json)") from None
    except (ManifestError, OSError, ValueError) as exc:
        raise InvalidArgument(f"--incremental-from {path}: its manifest does not check ({exc}); "
                              f"run: kroniko-ops verify-backup {path}") from None
    except Exception as exc:  # BaseProblem: a base of the base is missing or another backup
        raise InvalidArgument(f"--incremental-from {path}: {exc}; run: kroniko-ops verify-backup {path}") from None
    return path, m


def _check_base(store: str, base: tuple[str, Manifest], head: int, lock_timeout: float) -> None:
    """Refuse a base that is not a backup of this store (another chain at its head)."""
    path, m = base
    if m.head > head:
        raise InvalidArgument(f"the base {path} holds head {m.head}, beyond this store's head {head}: "
                              "it is not a backup of this store (backup-base-mismatch)")
    if m.head:
        with EventStore(store, create=False, lock_timeout=lock_timeout) as st:
            rec = next(iter(st.records(m.head, m.head)))
        if rec.chain.hex() != m.chain:
            raise InvalidArgument(f"the base {path} (head {m.head}) has another chain hash than this store at "
                                  "that position: it is not a backup of this store (backup-base-mismatch)")


def _write(snap: snapshot.Snapshot, sink: Sink, manifest: Manifest, base: Manifest | None, progress: bool) -> int:
    """Copy or reference every file of the snapshot; fill the manifest's files; return how many
    were referenced."""
    sha = sink.add("FORMAT", len(snap.format_bytes), [snap.format_bytes])
    manifest.files["FORMAT"] = FileEntry(len(snap.format_bytes), sha)
    referenced = 0
    with Meter("backup", snap.state.position, progress=progress) as meter:
        for part in meter.over(snap.parts, lambda p: (p.last - p.first + 1, sum(f.size for f in p.files))):
            with snap.opened(part) as files:  # one part's files open at a time
                if part.kind == "active":
                    _check_head(snap, files[0])
                    manifest.active = files[0][0]
                for rel, fd, size in files:
                    known = _known(part, rel, fd, size, base)
                    if known is not None:
                        manifest.files[rel] = FileEntry(size, known, in_base=True)
                        referenced += 1
                        continue
                    check = _Check(part, rel, size)
                    sha = sink.add(rel, size, check.tee(fd_chunks(fd, 0, size)))
                    if not check.ok(sha):
                        raise StoreCorrupted(f"{snap.root}/{rel} does not match the checksum its trailer records "
                                             f"({'pack' if part.kind == 'pack' else 'segment'}-corrupt); "
                                             f"run: kroniko-ops fsck {snap.root}")
                    manifest.files[rel] = FileEntry(size, sha)
    return referenced


def _known(part: snapshot.Part, rel: str, fd: int, size: int, base: Manifest | None) -> str | None:
    """The SHA-256 of an immutable file the base already lists with the same name, size and
    hash (found without reading a sealed segment: its ``.idx`` records it), else None."""
    entry = base.files.get(rel) if base is not None else None
    if entry is None or entry.size != size or part.kind == "active":
        return None
    if rel.endswith(".seg") and part.seg_sha256 is not None:
        sha = part.seg_sha256.hex()
    else:
        h = hashlib.sha256()
        for chunk in fd_chunks(fd, 0, size):
            h.update(chunk)
        sha = h.hexdigest()
    return sha if sha == entry.sha256 else None


class _Check:
    """Checks a file against its own trailer while it is copied: a sealed segment against the
    SHA-256 its ``.idx`` records (the whole file's: the sink's own hash is compared), a pack
    against its trailer's SHA-256 of the bytes before the trailer (hashed here as they pass)."""

    def __init__(self, part: snapshot.Part, rel: str, size: int) -> None:
        self.whole: str | None = None
        self.want: bytes | None = None
        self.limit = 0
        if part.kind == "sealed" and rel.endswith(".seg") and part.seg_sha256 is not None:
            self.whole = part.seg_sha256.hex()
        elif part.kind == "pack":
            self.want, self.limit = part.pack_sha256, size - packfmt.TRAILER_SIZE
        self.h = hashlib.sha256()
        self.done = 0

    def tee(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass ``chunks`` through, hashing a pack's checked prefix."""
        for chunk in chunks:
            if self.want is not None and self.done < self.limit:
                self.h.update(chunk[: self.limit - self.done])
            self.done += len(chunk)
            yield chunk

    def ok(self, sha: str) -> bool:
        """Whether the file (whose SHA-256 is ``sha``) matched; files without such a checksum
        (FORMAT, ``.idx``, the head's segment) always do."""
        if self.whole is not None:
            return sha == self.whole
        return self.want is None or self.h.digest() == self.want


def _check_head(snap: snapshot.Snapshot, file: tuple[str, int, int]) -> None:
    """The head's segment, up to the synced end, must end with the record at the head, carrying
    a commit mark and the head's chain (else the synced position and the log disagree; the last
    record is found first: a record holds no raw newline, so it starts after the one before it),
    and every record of it must check (a backup never carries damage)."""
    _rel, fd, end = file
    state = snap.state
    if end == 0:
        ok = state.position == state.segment - 1
    else:
        window = 1 << 16
        while True:
            start = max(0, end - window)
            data = os.pread(fd, end - start, start)
            cut = data.rfind(b"\n", 0, len(data) - 1)
            if cut >= 0 or start == 0:
                break
            window *= 4
        try:
            last = recfmt.parse_at(data, cut + 1)
            ok = (last.end == len(data) and last.position == state.position and last.commit
                  and last.chain == state.chain and recfmt.body_hash_ok(last))
        except recfmt.RecordError:
            ok = False
    if not ok:
        raise StoreCorrupted(f"the head segment of {snap.root} does not end at the synced position "
                             f"{state.position} on a commit mark; run: kroniko-ops fsck {snap.root}")
    snapshot.check_records(snap.root, _rel, fd, 0, end, state.chain)
