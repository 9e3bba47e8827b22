"""``verify_backup``: is a backup (folder or archive) exactly what its manifest says, and whole?

Checks, in one read of every byte: the manifest's own checksum and canonical form; missing and
extra files; each file's size and SHA-256; the log's positions, CRCs and chain from ``first`` to
``head`` (starting from the base's chain for an incremental) ending at the manifest's chain; that
every position's event is held (a loose file whose hash is the log's, or a pack covering it);
each pack's trailer checksum; for an archive, every member header and padding byte; and for an
incremental, that its base is present and is the backup it names (head and chain), down to a
full backup.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .. import fileio
from ..errors import StoreNotFound
from ..report import Report, write_metrics
from .archive import BLOCK, CHUNK, ArchiveDamaged, Member, is_archive, member_header, scan_archive
from .backup_chain import LogWalker, TrailerHash, walk_log
from .manifest import MANIFEST, MAX_MANIFEST_BYTES, Manifest, ManifestError, parse

MAX_CHAIN = 10_000
SMALL = 1 << 16


# -- containers ----------------------------------------------------------------------------


@dataclass
class Found:
    """One file or folder found in a backup container."""

    rel: str
    is_dir: bool
    size: int
    problem: str = ""  # why it cannot be a backup file (link, device, ...)


def fd_chunks(fd: int, start: int, size: int, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """``size`` bytes of ``fd`` from ``start``, in chunks of ``chunk_size`` (the last may be shorter)."""
    done = 0
    while done < size:
        chunk = os.pread(fd, min(chunk_size, size - done), start + done)
        if not chunk:
            raise OSError(f"unexpected end of file at {start + done}")
        yield chunk
        done += len(chunk)


class _Folder:
    def __init__(self, root: str) -> None:
        self.root = root
        self.damage = ""
        self.dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def manifest(self) -> bytes:
        path = os.path.join(self.root, MANIFEST)
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path} is not a regular file of a sane size")
        return fileio.read_file(path)

    def entries(self) -> Iterator[Found]:
        stack = [("", self.root)]
        while stack:
            prefix, folder = stack.pop()
            with os.scandir(folder) as it:
                for entry in it:
                    rel = prefix + entry.name
                    if entry.is_symlink():
                        yield Found(rel, False, 0, "a symbolic link")
                    elif entry.is_dir(follow_symlinks=False):
                        yield Found(rel, True, 0)
                        stack.append((rel + "/", entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        yield Found(rel, False, -1)  # the size is taken when the file is read
                    else:
                        yield Found(rel, False, 0, "not a regular file (a device, FIFO or socket)")

    def chunks(self, rel: str, size: int = CHUNK) -> Iterator[bytes]:
        fd = os.open(rel, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self.dir_fd)
        try:
            while chunk := os.read(fd, size):
                yield chunk
        finally:
            os.close(fd)

    def close(self) -> None:
        os.close(self.dir_fd)


class _Archive:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.file_size = os.fstat(self.fd).st_size
        self.damage = ""
        self.end: int | None = None
        try:
            self.members, self.end = scan_archive(self.fd, self.file_size)
        except ArchiveDamaged as exc:
            self.members, self.damage = exc.args[1], str(exc.args[0])
        self.digests: dict[str, tuple[int, str]] = {}  # size and SHA-256 of small members, once read
        self.by_name: dict[str, Member] = {}
        for m in self.members:
            self.by_name.setdefault(m.name, m)

    def manifest(self) -> bytes:
        m = self.by_name.get(MANIFEST)
        if m is None:
            raise FileNotFoundError(MANIFEST)
        if not m.is_file or m.size > MAX_MANIFEST_BYTES:
            raise ManifestError("the archive's MANIFEST.json is not a regular member of a sane size")
        return b"".join(fd_chunks(self.fd, m.data, m.size))

    def entries(self) -> Iterator[Found]:
        for m in self.members:
            problem = "" if m.is_file or m.is_dir else "a link, device or other special member"
            yield Found(m.name, m.is_dir, m.size, problem)

    def chunks(self, rel: str, size: int = CHUNK) -> Iterator[bytes]:
        m = self.by_name[rel]
        return fd_chunks(self.fd, m.data, m.size, min(size, CHUNK))

    def layout_problems(self, manifest: Manifest) -> list[str]:
        """Every byte that is not member data: headers rebuilt from the manifest, zero padding,
        zero end blocks."""
        out = [self.damage] if self.damage else []
        mtime = manifest.created_epoch
        known = set(manifest.dirs)
        for m in self.members:
            end = m.data + m.size
            padded = end + (-end % BLOCK)
            small = m.size < SMALL
            # a small member is read once: headers, data and padding; its hash is kept for later
            raw = os.pread(self.fd, (padded if small else m.data) - m.offset, m.offset)
            head = raw[: m.data - m.offset]
            if (m.is_dir and m.name in known) or (m.is_file and (m.name == MANIFEST or m.name in manifest.files)):
                if head != member_header(m.name, m.size, mtime, m.is_dir):
                    out.append(f"the header of member {m.name!r} is not the one backup writes (damaged)")
            if small and m.is_file:
                data = raw[m.data - m.offset : end - m.offset]
                self.digests.setdefault(m.name, (len(data), hashlib.sha256(data).hexdigest()))
            pad = raw[end - m.offset :] if small else os.pread(self.fd, padded - end, end)
            if any(pad):
                out.append(f"the padding after member {m.name!r} is not zeros (damaged)")
        if self.end is not None:
            if self.file_size - self.end < 2 * BLOCK:
                out.append("the archive lacks its end-of-archive blocks (truncated)")
            for start in range(self.end, self.file_size, CHUNK):
                if any(os.pread(self.fd, min(CHUNK, self.file_size - start), start)):
                    out.append(f"bytes after the last member (from {start}) are not zeros (damaged or appended)")
                    break
        return out

    def close(self) -> None:
        os.close(self.fd)


def _open(path: str) -> _Folder | _Archive:
    if not os.path.exists(path):
        raise StoreNotFound(f"no backup at {path}")
    return _Archive(path) if is_archive(path) else _Folder(path)


def read_manifest(path: str) -> Manifest:
    """The checked manifest of the backup at ``path`` (folder or archive).

    Raises ``FileNotFoundError`` when it has none, :class:`ManifestError` when it does not check.
    """
    container = _open(path)
    try:
        return parse(container.manifest())
    finally:
        container.close()


def base_path(path: str, manifest: Manifest) -> str | None:
    """Where the base of the incremental at ``path`` should be: its recorded path, relative to
    the incremental's parent folder."""
    if manifest.base is None:
        return None
    parent = os.path.dirname(os.path.abspath(path))
    return os.path.normpath(os.path.join(parent, manifest.base.path))


class BaseProblem(Exception):
    """An incremental's base is missing (``backup-base-missing``) or is not the backup it names
    (``backup-base-mismatch``)."""

    def __init__(self, code: str, path: str, message: str) -> None:
        super().__init__(message)
        self.code, self.path = code, path


def walk_bases(path: str, manifest: Manifest, override: str | None = None) -> Iterator[tuple[str, Manifest]]:
    """The bases of the backup at ``path``, nearest first, down to a full backup: ``(path,
    manifest)`` each, checked by manifest checksum, head and chain. ``override`` replaces the
    recorded location of the nearest base. Raises :class:`BaseProblem`."""
    cur_path, cur = path, manifest
    for hop in range(MAX_CHAIN):
        if cur.base is None:
            return
        where = override if hop == 0 and override else base_path(cur_path, cur)
        assert where is not None
        if not os.path.exists(where):
            raise BaseProblem("backup-base-missing", cur_path,
                              f"the base of {cur_path} (head {cur.base.head}) is not at {where}; pass its "
                              "location with --base (verify-backup) or restore it explicitly")
        try:
            found = read_manifest(where)
        except (OSError, ManifestError, ValueError) as exc:
            raise BaseProblem("backup-base-mismatch", where, f"the base at {where} is unreadable ({exc})") from None
        if (found.head, found.chain) != (cur.base.head, cur.base.chain):
            raise BaseProblem("backup-base-mismatch", where,
                              f"{where} holds head {found.head} with chain {found.chain[:12]}..., but "
                              f"{cur_path} builds on head {cur.base.head} with chain {cur.base.chain[:12]}...")
        yield where, found
        cur_path, cur = where, found
    raise BaseProblem("backup-base-mismatch", cur_path, f"more than {MAX_CHAIN} bases: a cycle?")


def verify_backup(dest: str, base: str | None = None, *, quiet: bool = True,
                  metrics_file: str | None = None, bases: bool = True) -> Report:
    """Check the backup at ``dest`` (folder or ``.tar``) against its manifest and its log's chain;
    for an incremental (unless ``bases`` is False), that its bases are present and match down to
    a full backup (``base`` overrides where the nearest one is). Problems are findings (exit 4);
    a missing ``dest`` raises StoreNotFound."""
    report = Report("verify-backup", dest)
    dest = os.fspath(dest)
    try:
        container = _open(dest)
    except OSError as exc:
        raise StoreNotFound(f"cannot read the backup at {dest}: {exc}") from None
    try:
        _verify(container, dest, base if bases else False, report, quiet)
    finally:
        container.close()
    return _done(report, dest, metrics_file)


def _done(report: Report, dest: str, metrics_file: str | None) -> Report:
    report.finish()
    secs = max(report.seconds, 1e-9)
    report.figures["mb_per_s"] = round(report.figures.get("bytes", 0) / secs / 1e6, 1)
    if metrics_file:
        write_metrics(metrics_file, "kroniko_backup_verify", {
            "ok": int(report.exit_code == 0), "head": report.head, "bytes": report.figures.get("bytes", 0),
            "duration_seconds": report.seconds, "last_run_timestamp_seconds": time.time(),
            "problems": len(report.problems)}, {"backup": os.path.abspath(dest)})
    return report


def _verify(container: _Folder | _Archive, dest: str, base: str | bool | None, report: Report,
            quiet: bool) -> None:
    if container.damage:
        report.add("backup-archive-corrupt", "error", dest, container.damage)
    try:
        manifest = parse(container.manifest())
    except FileNotFoundError:
        report.add("backup-file-missing", "error", MANIFEST, f"{dest} has no {MANIFEST}: not a (complete) backup")
        return
    except (ManifestError, OSError) as exc:
        report.add("backup-manifest-mismatch", "error", MANIFEST, f"{MANIFEST} does not check: {exc}")
        return
    report.head = manifest.head
    report.figures.update(backup_kind=manifest.kind, first=manifest.first, chain=manifest.chain,
                          created_at=manifest.created_at)
    found: dict[str, Found] = {}
    for f in container.entries():
        if f.rel in found:
            report.add("backup-file-extra", "error", f.rel, "appears twice in the archive")
            if f.problem or not found[f.rel].problem:
                continue
        found[f.rel] = f
    events = {rel: e.sha256 for rel, e in manifest.files.items() if rel.startswith("events/")}
    walker = LogWalker(manifest.first, manifest.prev_chain, events, list(manifest.packs.values()))
    log = found.get(manifest.log_name)
    size = manifest.files[manifest.log_name].size if manifest.log_name in manifest.files else 0
    wait = walk_log(walker, container.chunks, manifest.log_name, size) if log and not log.problem else None
    try:
        if isinstance(container, _Archive):
            for msg in container.layout_problems(manifest)[1 if container.damage else 0 :]:
                report.add("backup-archive-corrupt", "error", dest, msg)
        _presence(manifest, found, isinstance(container, _Folder), report)
        total = _hash_files(container, manifest, found, report)
    finally:
        if wait is not None:
            wait()  # also reaps the child when hashing failed
    report.figures["bytes"] = total
    report.figures["files"] = len(manifest.files)
    _log_result(manifest, walker, found, report)
    if manifest.kind == "incremental" and base is not False:
        try:
            for where, _m in walk_bases(dest, manifest, base or None):
                report.add("backup-base", "info", where, "base present and matching")
        except BaseProblem as exc:
            report.add(exc.code, "error", exc.path, str(exc))


def _hash_files(container: _Folder | _Archive, manifest: Manifest, found: dict[str, Found], report: Report) -> int:
    """Hash every file the manifest lists and is there; return the bytes read."""
    total = 0
    for rel in sorted(manifest.files):
        entry, f = manifest.files[rel], found.get(rel)
        if f is None or f.is_dir or f.problem:
            continue
        known = container.digests.get(rel) if isinstance(container, _Archive) else None
        if known is not None and not rel.startswith("packs/"):
            total += known[0]
            if known != (entry.size, entry.sha256):
                report.add("backup-hash-mismatch", "error", rel,
                           f"{known[0]} bytes with SHA-256 {known[1][:12]}..., the manifest says {entry.size} "
                           f"bytes with {entry.sha256[:12]}...")
            continue
        h = hashlib.sha256()
        trailer = TrailerHash(entry.size) if rel.startswith("packs/") else None
        size = 0
        # one read for a small file (most index files and events), chunks for a big one
        for chunk in container.chunks(rel, entry.size + 1 if entry.size < SMALL else CHUNK):
            h.update(chunk)
            size += len(chunk)
            if trailer is not None:
                trailer.feed(chunk)
        total += size
        if size != entry.size or h.hexdigest() != entry.sha256:
            report.add("backup-hash-mismatch", "error", rel,
                       f"{size} bytes with SHA-256 {h.hexdigest()[:12]}..., the manifest says {entry.size} bytes "
                       f"with {entry.sha256[:12]}...")
        elif trailer is not None and not trailer.ok():
            report.add("backup-pack-corrupt", "error", rel, "its trailer checksum does not match its content")
    return total


def _presence(manifest: Manifest, found: dict[str, Found], folder: bool, report: Report) -> None:
    for rel in manifest.files:
        f = found.get(rel)
        if f is None or f.is_dir:
            report.add("backup-file-missing", "error", rel, "listed in the manifest but not in the backup")
        elif f.problem:
            report.add("backup-file-extra", "error", rel, f"is {f.problem}, not the file the manifest lists")
    for d in manifest.dirs:
        if d not in found or not found[d].is_dir:
            report.add("backup-file-missing", "warning", d, "folder listed in the manifest is missing")
    dirs = set(manifest.dirs)
    for rel, f in found.items():
        if rel == MANIFEST or rel in manifest.files or (f.is_dir and rel in dirs):
            continue
        if folder and rel.startswith("locks/") and rel.endswith(".lock") and not f.problem:
            report.add("backup-file-extra", "info", rel, "a lock file made by a process that opened the backup")
        else:
            report.add("backup-file-extra", "error", rel, "not listed in the manifest")


def _log_result(manifest: Manifest, walker: LogWalker, found: dict[str, Found], report: Report) -> None:
    log = manifest.log_name
    if log not in manifest.files:
        report.add("backup-file-missing", "error", log, "the manifest lists no log")
        return
    lines = walker.pos - manifest.first
    want = manifest.head - manifest.first + 1
    for code, pos, msg in walker.problems:
        report.add(code, "error", log if code == "backup-chain-mismatch" else "events", msg, pos)
    if walker.dropped:
        report.add("backup-chain-mismatch", "error", log, f"{walker.dropped} more damaged lines not listed")
    if walker.rest or lines != want:
        report.add("backup-chain-mismatch", "error", log,
                   f"the log holds {lines} whole lines (+{len(walker.rest)} bytes), the manifest says {want}")
    elif walker.chain != manifest.chain:
        report.add("backup-chain-mismatch", "error", log, "the chain at the head differs from the manifest's",
                   manifest.head)
    elif want and not walker.last_commit:
        report.add("backup-chain-mismatch", "error", log, "the last line carries no commit mark", manifest.head)
    for rel in walker.unnamed:
        report.add("backup-file-extra", "warning", rel, "an event file no log line of the backup names")
    ranges = sorted(manifest.packs.values())
    for (a, b), nxt in zip(ranges, [*ranges[1:], None]):  # noqa: B905
        if a < manifest.first or b > manifest.head or a > b or (nxt is not None and nxt[0] <= b):
            report.add("backup-pack-corrupt", "error", "packs",
                       f"pack range {a}..{b} is outside the backup or overlaps another")
    for rel in manifest.packs:
        if rel[:-5] + ".idx" not in manifest.files:
            report.add("backup-file-missing", "error", rel[:-5] + ".idx", "a pack without its offset index")
    del found
