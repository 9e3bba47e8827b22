"""``restore``: a new store from a full backup and its incrementals, verified before and after.

Order of work, so that a failure at any step leaves TARGET absent or empty and the backups
untouched:

1. refuse a TARGET that exists and is not an empty folder (exit 2);
2. resolve the chain: BACKUP itself, its recorded bases down to a full backup when BACKUP is an
   incremental, then each ``incrementals`` path in order, each naming the previous by head and
   chain; refuse an archive member that is not a plain layout file (exit 2);
3. verify every backup of the chain completely (manifest, files, hashes, chain): a problem is a
   finding and nothing is written (exit 4);
4. check ``to_position`` is a batch boundary inside the chain (exit 2 otherwise);
5. build the store in ``.tmp-restore-<name>-<pid>-<hex>`` beside TARGET (archives are
   extracted inside it first), flush it, check it with a full fsck (rebuilding the index when
   only the index disagrees), then, holding its maintenance lock, rename it to TARGET.

A run killed midway leaves only that temp folder, removed by the next restore to the same
TARGET.
"""

from __future__ import annotations

import inspect
import itertools
import os
import time
from collections.abc import Sequence

from .. import fileio, locking
from ..errors import InvalidArgument, StoreCorrupted, StoreNotFound
from ..log import LINE_LEN, ZERO_CHAIN
from ..report import Report, write_metrics
from ..store import EventStore
from .archive import check_members, check_sizes, is_archive, open_archive
from .backup_chain import LogWalker
from .backup_index import rebuild_index
from .backup_sink import publish, remove_tree, sweep_stale, sync_tree, temp_path
from .backup_verify import BaseProblem, fd_chunks, read_manifest, verify_backup, walk_bases
from .manifest import Manifest, ManifestError
from .restore_apply import Builder, Link, extract_archive


def restore(backup: str, target: str, to_position: int | None = None, *, dry_run: bool = False,
            incrementals: Sequence[str] = (), quiet: bool = True, durable: bool = True,
            lock_timeout: float = 30.0, metrics_file: str | None = None) -> Report:
    """Restore ``backup`` (a full backup, or an incremental whose bases are found through their
    manifests), then ``incrementals`` in order, into the new store ``target``, up to
    ``to_position`` (a batch boundary; default: the last backup's head).

    Returns the report: its findings are the verification problems (exit 4, nothing written) or
    the fsck notes of the new store. Raises InvalidArgument (exit 2) for a non-empty target, a
    bad position or an unsafe archive, StoreNotFound (exit 8) for a missing backup.
    """
    backup, target = os.fspath(backup), os.fspath(target)
    report = Report("restore", target)
    _check_target(target)
    if to_position is not None and (isinstance(to_position, bool) or not isinstance(to_position, int)
                                    or to_position < 0):
        raise InvalidArgument(f"--to-position must be an integer >= 0, got {to_position!r}")
    parent = os.path.dirname(os.path.abspath(target))
    chain = _resolve(backup, list(incrementals), target, report)
    if chain is None:
        return report.finish()
    for link in chain:
        if is_archive(link.path):
            _scan(link.path, target, link.manifest, parent)
    for link in chain:
        checked = verify_backup(link.path, bases=False)
        for f in checked.findings:
            if f.severity != "info":
                report.add(f.code, f.severity, f"{link.path}: {f.path}", f.message, f.position)
    if report.problems:
        report.add("restore-refused", "info", target, "the backups do not verify; nothing was written")
        return report.finish()
    head = chain[-1].manifest.head if to_position is None else to_position
    _check_position(chain, head)
    report.head = head
    used = [link for link in chain if link.manifest.first <= head or link is chain[0]]
    report.figures.update(backups=[link.path for link in used], events=head)
    if dry_run:
        report.add("restore-dry-run", "info", target,
                   f"would restore positions 1..{head} from {len(used)} backup(s); nothing was written")
        return report.finish()
    if os.path.exists(parent):
        for path in sweep_stale(parent, "restore", os.path.basename(target)):
            report.add("restore-stale-temp", "info", path, "removed a temp folder left by an interrupted restore")
    else:
        fileio.makedirs(parent)
    tmp = temp_path(parent, "restore", os.path.basename(target))
    try:
        builder = _build(tmp, used, head, quiet, durable)
        _check_result(tmp, head, builder.index_ok, durable, report)
        with locking.held(os.path.join(tmp, "locks", "maintenance.lock"), lock_timeout, "maintenance"):
            publish(tmp, target, durable)
    except BaseException:
        remove_tree(tmp)
        raise
    report.finish()
    secs = max(report.seconds, 1e-9)
    report.figures.update(bytes=builder.bytes, events_per_s=round(head / secs))
    if metrics_file:
        write_metrics(metrics_file, "kroniko_restore", {
            "last_head": head, "last_bytes": builder.bytes, "last_duration_seconds": report.seconds,
            "last_success_timestamp_seconds": time.time()}, {"target": os.path.abspath(target)})
    return report


def _check_target(target: str) -> None:
    if os.path.lexists(target) and (not os.path.isdir(target) or os.path.islink(target) or os.listdir(target)):
        raise InvalidArgument(f"{target} exists and is not an empty folder; restore into a new or empty folder "
                              "(a restore never overwrites anything)")


def _scan(path: str, target: str, manifest: Manifest | None, parent: str) -> None:
    """Refuse an archive with a member restore would not extract (raises UnsafeArchive)."""
    tar, members = open_archive(path)
    tar.close()
    check_members(path, members, target)
    if manifest is not None:
        check_sizes(path, members, manifest, parent if os.path.isdir(parent) else "/")


def _resolve(backup: str, incrementals: list[str], target: str, report: Report) -> list[Link] | None:
    """The chain of backups to apply, full first; None (with findings) when it does not hold.
    Archives are scanned for hostile members before their manifest is even read."""
    links = []
    for path in [backup, *incrementals]:
        if not os.path.exists(path):
            raise StoreNotFound(f"no backup at {path}")
        if is_archive(path):
            _scan(path, target, None, "")
        try:
            links.append(Link(path, read_manifest(path)))
        except FileNotFoundError:
            report.add("backup-file-missing", "error", path, "no MANIFEST.json: not a (complete) backup")
        except (ManifestError, ValueError) as exc:
            report.add("backup-manifest-mismatch", "error", path, f"MANIFEST.json does not check: {exc}")
    if report.problems:
        return None
    try:
        bases = []
        for p, m in walk_bases(links[0].path, links[0].manifest):
            if is_archive(p):
                _scan(p, target, None, "")
            bases.append(Link(p, m))
    except BaseProblem as exc:
        report.add(exc.code, "error", exc.path, str(exc))
        return None
    chain = [*reversed(bases), *links]
    for prev, link in itertools.pairwise(chain):
        base = link.manifest.base
        if base is None or (base.head, base.chain) != (prev.manifest.head, prev.manifest.chain):
            report.add("backup-base-mismatch", "error", link.path,
                       f"{link.path} does not build on {prev.path} (head {prev.manifest.head}); give the "
                       "incrementals in the order they were made")
            return None
    return chain


def _check_position(chain: list[Link], head: int) -> None:
    """Refuse a restore point past the chain or inside a batch (a batch is all or nothing)."""
    last = chain[-1].manifest.head
    if head > last:
        raise InvalidArgument(f"--to-position {head} is past the last backup's head {last}")
    if head == 0:
        return
    link = next(x for x in chain if x.manifest.first <= head <= x.manifest.head)
    m = link.manifest
    start = 0
    if is_archive(link.path):
        tar, members = open_archive(link.path)
        tar.close()
        start = next(x.offset_data for x in members if x.name == m.log_name)
        fd = os.open(link.path, os.O_RDONLY | os.O_CLOEXEC)
    else:
        fd = os.open(os.path.join(link.path, *m.log_name.split("/")), os.O_RDONLY | os.O_CLOEXEC)
    try:
        def mark(pos: int) -> bytes:
            return os.pread(fd, 1, start + (pos - m.first) * LINE_LEN + 208)

        if mark(head) == b"C":
            return
        before = next((p for p in range(head - 1, m.first - 1, -1) if mark(p) == b"C"), m.first - 1)
        after = next((p for p in range(head + 1, m.head + 1) if mark(p) == b"C"), m.head)
    finally:
        os.close(fd)
    raise InvalidArgument(f"position {head} is inside a batch (batches are all or nothing); restore to "
                          f"{before} or {after} instead")


def _build(tmp: str, chain: list[Link], head: int, quiet: bool, durable: bool) -> Builder:
    builder = Builder(tmp, head, quiet)
    staging = os.path.join(tmp, ".restore-staging")
    links = []
    for i, link in enumerate(chain):
        if is_archive(link.path):
            folder = os.path.join(staging, str(i))
            extract_archive(link.path, link.manifest, folder)
            link = Link(folder, link.manifest)
        links.append(link)
    builder.start(links[0])
    for link in links:
        builder.apply(link)
    builder.finish()
    remove_tree(staging)
    if durable:
        sync_tree(tmp)
    return builder


def _fsck_function():  # type: ignore[no-untyped-def]
    try:
        from .fsck import fsck
    except ImportError:
        return None
    return fsck


def _check_result(tmp: str, head: int, index_ok: bool, durable: bool, report: Report) -> None:
    """A full check of the new store; a disagreeing index is rebuilt from the events (it is
    derived); anything else aborts the restore."""
    if not index_ok:
        _rebuild(tmp, head, durable, report, "an index file of the backup does not parse")
    problems = _full_check(tmp, head, report)
    if problems and all(code.startswith("index-") for code, _ in problems):
        _rebuild(tmp, head, durable, report, ", ".join(sorted({c for c, _ in problems})))
        problems = _full_check(tmp, head, report)
    if problems:
        detail = "; ".join(f"{code}: {msg}" for code, msg in problems[:5])
        raise StoreCorrupted(f"the restored store does not check ({detail}); nothing was put at the target")


def _rebuild(tmp: str, head: int, durable: bool, report: Report, why: str) -> None:
    with EventStore(tmp, create=False, durable=False) as s:
        rebuild_index(tmp, s._entries(1, head), head, durable)
    report.add("restore-index-rebuilt", "info", tmp, f"the index was rebuilt from the events ({why})")


def _full_check(tmp: str, head: int, report: Report) -> list[tuple[str, str]]:
    """``(code, message)`` of every problem: kroniko_ops fsck when it is there, else our own walk."""
    fsck = _fsck_function()
    if fsck is not None:
        kwargs = {"quiet": True} if "quiet" in inspect.signature(fsck).parameters else {}
        checked = fsck(tmp, **kwargs)
        report.figures["fsck_exit_code"] = checked.exit_code
        report.figures["fsck_seconds"] = round(checked.seconds, 3)
        return [(f.code, f.message) for f in checked.problems]
    return _self_check(tmp, head)


def _self_check(root: str, head: int) -> list[tuple[str, str]]:
    """Chain, every event against its hash, and the index against what the events imply."""
    from .backup_index import index_lines, merge_index

    out: list[tuple[str, str]] = []
    walker = LogWalker(1, ZERO_CHAIN)
    fd = os.open(os.path.join(root, "log", "append.log"), os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        for chunk in fd_chunks(fd, 0, size):
            walker.feed(chunk)
    finally:
        os.close(fd)
    out += [("chain-mismatch", msg) for _c, _p, msg in walker.problems]
    if size != head * LINE_LEN:
        out.append(("log-torn-tail", f"the log has {size} bytes, expected {head * LINE_LEN}"))
    with EventStore(root, create=False, durable=False) as s:
        if s.head() != head:
            out.append(("log-uncommitted-tail", f"head is {s.head()}, expected {head}"))
        try:
            entries = list(s._entries(1, head))
        except (StoreCorrupted, ValueError) as exc:
            return [*out, ("missing-event", str(exc))]
    files, names = index_lines(entries)
    want = dict(merge_index({}, {}, files, names))
    index = os.path.join(root, "index")
    have = {}
    for kind in ("types", "tags", "ids"):
        folder = os.path.join(index, kind)
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            have[f"index/{kind}/{name}"] = fileio.read_file(os.path.join(folder, name))
    for rel in sorted(set(want) | set(have)):
        if want.get(rel) != have.get(rel):
            out.append(("index-missing-entry" if rel in want else "index-extra-entry", f"{rel} differs"))
    return out
