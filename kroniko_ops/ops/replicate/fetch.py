"""Reading a replica back: ``verify-backup URL`` and ``restore URL TARGET``.

The replica (its newest manifest, or the one a URL ending in ``manifests/<seq>.json`` names) is
downloaded into a local folder that is a plain full backup: each store file assembled from its
objects, every object checked against the size and SHA-256 the manifest gives, and the
manifest turned into the backup's ``MANIFEST.json``. The backup tools then do the rest as they
do for a folder: every file against the manifest, every event hash and the chain
(:func:`..backup.verify.check`), and restore's cut, build, index and fsck
(:func:`..backup.restore`). ``verify-backup`` downloads into ``$TMPDIR``; ``restore`` beside
TARGET (``.tmp-fetch-<name>-<pid>-<hex>``, removed afterwards, swept after a kill).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from ... import fileio
from ...errors import InvalidArgument, StoreNotFound
from ...objstore import Missing, ObjectStore, Retry, open_url
from ...report import Report
from ..backup import pit, verify
from ..backup import restore as restore_backup
from ..backup.container import Container
from ..backup.manifest import DIRS, MANIFEST
from ..backup.places import refuse_overlap
from ..backup.sink import remove_tree, sweep_stale, temp_path
from .manifest import (
    MAX_MANIFEST_BYTES,
    Obj,
    ReplicaManifest,
    ReplicaManifestError,
    manifest_key,
    manifest_seq,
    parse,
    to_backup,
)

DOWNLOADS = 8  # objects fetched at once


def is_replica(url: str) -> bool:
    """True for an ``s3://`` URL or a folder holding a replica (``manifests/``, no
    ``MANIFEST.json``), as opposed to a backup folder or archive."""
    if url.startswith("s3://"):
        return True
    base, seq = _split(url)
    return seq is not None or (os.path.isdir(os.path.join(base, "manifests"))
                               and not os.path.lexists(os.path.join(base, MANIFEST)))


def _split(url: str) -> tuple[str, int | None]:
    """``(replica URL, manifest seq)`` for a URL naming one manifest, else ``(url, None)``."""
    head, sep, tail = url.rstrip("/").rpartition("/manifests/")
    seq = manifest_seq(f"manifests/{tail}") if sep else None
    return (head, seq) if seq is not None else (url, None)


def _load(url: str, retry: Retry | None, report: Report) -> tuple[ObjectStore, ReplicaManifest | None, dict[str, int]]:
    """The replica's store, the manifest to use (None after a finding saying why) and its listing."""
    base, seq = _split(url)
    remote = open_url(base, retry)
    listing = remote.list()
    seqs = sorted(s for k in listing if (s := manifest_seq(k)) is not None)
    if not seqs:
        remote.close()
        raise StoreNotFound(f"no replica at {url} (no manifests/): nothing to read")
    if seq is None:
        seq = seqs[-1]
    elif seq not in seqs:
        remote.close()
        raise StoreNotFound(f"{url}: no manifest {seq} in {base} (it has {seqs[0]}..{seqs[-1]})")
    try:
        m = parse(remote.get(manifest_key(seq), MAX_MANIFEST_BYTES), seq)
    except (ReplicaManifestError, Missing) as exc:
        report.add("backup-manifest-mismatch", "error", manifest_key(seq), f"does not check: {exc}")
        return remote, None, listing
    return remote, m, listing


def materialize(remote: ObjectStore, m: ReplicaManifest, listing: dict[str, int], dest: str, report: Report,
                durable: bool = False) -> int:
    """Download the files of ``m`` into the new folder ``dest`` as a full backup (objects in
    parallel, each written at its place in its file and never past its stated size); each object
    missing or not matching its size and SHA-256 is a finding. Returns the bytes read."""
    fileio.makedirs(dest)
    for d in DIRS:
        fileio.makedirs(os.path.join(dest, d))
    fds: dict[str, int] = {}
    jobs = []
    try:
        for rel, f in sorted(m.files.items()):
            path = os.path.join(dest, rel)
            fds[rel] = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
            for o in f.objects:
                if o.key in listing:
                    jobs.append((rel, path, o))
                else:
                    _once(report, "backup-file-missing", o.key, f"an object of {rel} named by manifest {m.seq} "
                          "is not in the replica")

        def fetch(job: tuple[str, str, Obj]) -> tuple[int, str] | None:
            rel, path, o = job
            h = hashlib.sha256()
            done = 0

            def sink(chunk: bytes) -> None:
                nonlocal done
                h.update(chunk)
                room = max(0, o.size - done)
                if room:
                    fileio.pwrite_all(fds[rel], chunk[:room], o.offset + done, path)
                done += len(chunk)

            try:
                return remote.download(o.key, sink), h.hexdigest()
            except Missing:
                return None

        with ThreadPoolExecutor(DOWNLOADS) as pool:
            results = list(pool.map(fetch, jobs))
        total = 0
        for (rel, _path, o), got in zip(jobs, results, strict=True):
            if got is None:
                _once(report, "backup-file-missing", o.key, f"an object of {rel} vanished while it was read")
                continue
            size, sha = got
            total += size
            if size != o.size or sha != o.sha256:
                _once(report, "backup-hash-mismatch", o.key,
                      f"{size} bytes with SHA-256 {sha[:12]}..., manifest {m.seq} says {o.size} "
                      f"bytes with {o.sha256[:12]}... (bytes {o.offset}.. of {rel})")
        for rel, f in m.files.items():
            fileio.truncate(fds[rel], f.size, rel)  # its stated size: a damaged object shows in the checks
            if durable:
                fileio.fsync(fds[rel], rel)
    finally:
        for fd in fds.values():
            os.close(fd)
    raw = to_backup(m).render()
    fileio.write_file_atomic(os.path.join(dest, MANIFEST), raw, durable)
    return total


def _once(report: Report, code: str, path: str, message: str) -> None:
    """An error finding, unless one with that code and path is there already."""
    if not any(f.code == code and f.path == path for f in report.findings):
        report.add(code, "error", path, message)


def verify_replica(url: str, *, retry: Retry | None = None) -> Report:
    """``verify-backup URL``: the manifest and every older one, every object named against its
    size and SHA-256, then every file, event hash and the chain. Problems are findings (exit 4);
    the history of manifests (what can be restored) is listed as ``replica-manifest`` notes."""
    report = Report("verify-backup", url)
    remote, m, listing = _load(url, retry, report)
    try:
        _history(remote, listing, report)
        if m is None:
            return report.finish()
        report.head = m.head
        with tempfile.TemporaryDirectory(prefix="kroniko-verify-replica-") as tmp:
            dest = os.path.join(tmp, "backup")
            read = materialize(remote, m, listing, dest, report)
            sub = Report("verify-backup", dest)
            with Container(dest) as container:
                verify.check(dest, container, sub, bases=False)
            for f in sub.findings:
                if f.code in ("backup-hash-mismatch", "backup-file-missing") and report.problems:
                    continue  # already reported object by object
                report.add(f.code, f.severity, f.path, f.message.replace(dest, url), f.position)
    finally:
        remote.close()
    report.finish()
    report.figures.update(manifest=m.seq, chain=m.chain, created_at=m.created_at, bytes=read,
                          head_committed_at=_when(m.head_time),
                          mb_per_s=round(read / max(report.seconds, 1e-9) / 1e6, 1))
    return report


def _history(remote: ObjectStore, listing: dict[str, int], report: Report) -> None:
    """Each manifest: parsed, its objects present with their sizes; a note saying what it holds."""
    named: set[str] = set()
    for key in sorted(k for k in listing if manifest_seq(k) is not None):
        seq = manifest_seq(key)
        assert seq is not None
        try:
            m = parse(remote.get(key, MAX_MANIFEST_BYTES), seq)
        except (ReplicaManifestError, Missing) as exc:
            report.add("backup-manifest-mismatch", "error", key, f"does not check: {exc}")
            continue
        for f in m.files.values():
            for o in f.objects:
                named.add(o.key)
                if listing.get(o.key) != o.size:
                    what = "is missing" if o.key not in listing else f"holds {listing[o.key]} bytes, not {o.size}"
                    _once(report, "backup-file-missing" if o.key not in listing else "backup-hash-mismatch", o.key,
                          f"named by manifest {seq}, {what}")
        report.add("replica-manifest", "info", key,
                   f"written {m.created_at}: restores any batch up to position {m.head}"
                   + (f" (committed {_when(m.head_time)})" if m.head_time else ""), m.head)
    for key in sorted(k for k in listing if manifest_seq(k) is None and k not in named):
        report.add("replica-orphan", "info", key, "named by no manifest (left by an interrupted replicate; "
                   "replicate --retain deletes it)")


def _when(us: int) -> str:
    from ..backup.pit import format_time

    return format_time(us) if us else ""


def restore_replica(url: str, target: str | os.PathLike[str], *, to_position: int | None = None,
                    to_time: str | datetime | None = None, retry: Retry | None = None, lock_timeout: float = 30.0,
                    progress: bool = False, durable: bool = True) -> Report:
    """``restore URL TARGET``: download the replica beside TARGET, checking every object, then
    restore it like a backup folder (verified, cut, indexed, fsck'd, renamed into place)."""
    target = os.fspath(target)
    report = Report("restore", target)
    # Every check of the arguments before anything is written or downloaded.
    refuse_overlap(url, target, "replica", "restore target")
    if os.path.lexists(target) and (not os.path.isdir(target) or os.path.islink(target) or os.listdir(target)):
        raise InvalidArgument(f"{target} exists and is not an empty folder; restore into a new or empty folder "
                              "(a restore never overwrites anything)")
    if to_position is not None and (isinstance(to_position, bool) or not isinstance(to_position, int)
                                    or to_position < 0):
        raise InvalidArgument(f"--to-position must be an integer >= 0, got {to_position!r}")
    if to_time is not None:
        pit.parse_time(to_time)
    parent = os.path.dirname(os.path.abspath(target)) or "."
    fileio.makedirs(parent)
    for path in sweep_stale(parent, "fetch", os.path.basename(target)):
        report.add("restore-stale-temp", "info", path, "removed a download left by an interrupted restore")
    remote, m, listing = _load(url, retry, report)
    tmp = temp_path(parent, "fetch", os.path.basename(target))
    try:
        if m is not None:
            materialize(remote, m, listing, tmp, report)
        if m is None or report.problems:
            report.add("restore-refused", "info", target, "the replica does not verify; nothing was written")
            return report.finish()
        sub = restore_backup(tmp, target, to_position=to_position, to_time=to_time, lock_timeout=lock_timeout,
                             progress=progress, durable=durable)
    finally:
        remote.close()
        remove_tree(tmp)
    for f in sub.findings:
        report.add(f.code, f.severity, f.path.replace(tmp, url), f.message.replace(tmp, url), f.position)
    report.head = sub.head
    report.finish()
    report.figures.update(sub.figures)
    report.figures.update(manifest=m.seq, events_per_s=round(sub.head / max(report.seconds, 1e-9)))
    return report


__all__ = ["is_replica", "materialize", "restore_replica", "verify_replica"]
