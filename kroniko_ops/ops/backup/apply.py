"""``restore``: a new store from a backup (and its bases), verified before and after.

Order of work, so that a failure at any step leaves TARGET absent (or the empty folder it was)
and the backups untouched:

1. refuse a TARGET that exists and is not an empty folder (exit 2);
2. refuse a hostile archive before reading any member's data (exit 2, :mod:`.container`);
3. verify the backup and its bases completely: a problem is a finding and nothing is written
   (exit 4);
4. check ``to_position``: the record there must carry a commit mark (a batch boundary), else
   exit 2, nothing written;
5. build the store in ``.tmp-restore-<name>-<pid>-<hex>`` beside TARGET: ``FORMAT``, the packs
   and sealed segments wholly at or before the cut, copied; the container holding the cut becomes
   the active segment, its records up to the cut rewritten byte for byte (an empty active
   segment follows when the cut ends a pack or sealed segment); ``locks/synced`` set to the cut;
   the index built from the log; every file and folder fsynced; fsck run on the result;
6. holding the new store's maintenance lock, rename the temp folder to TARGET.

A run killed midway leaves only the temp folder, removed by the next restore to the same TARGET.
Positions after the cut are not in the restored store; they stay in the backup.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from ... import fileio, locking
from ...errors import InvalidArgument, StoreNotFound
from ...format import pack as packfmt
from ...format import record as recfmt
from ...format import segment as segfmt
from ...indexdb import generations
from ...layout import Layout
from ...progress import Meter
from ...rebuild import build_generation
from ...rebuild import publish as publish_index
from ...report import Report
from ...store import EventStore
from ...synced import SyncedFile, SyncedState
from . import pit, verify
from .chain import Chain, Part, open_chain, parts_of
from .container import Container, check_archive, is_archive
from .places import refuse_overlap
from .sink import fd_chunks, publish, remove_tree, sweep_stale, temp_path

STORE_DIRS = ("log", "packs", "index", "locks", "lost-found")


def restore(backup: str | os.PathLike[str], target: str | os.PathLike[str], *, to_position: int | None = None,
            to_time: str | datetime | None = None, lock_timeout: float = 30.0, progress: bool = False,
            durable: bool = True) -> Report:
    """Restore ``backup`` (a full or incremental backup, folder or archive; the bases of an
    incremental are found where its manifest says; or a backup set's folder, meaning its newest
    backup) into the new store ``target``, up to ``to_position`` (a batch boundary; default: the
    backup's head) or ``to_time`` (an ISO 8601 timestamp with a zone: the last batch committed at
    or before it).

    Returns the report: its findings are the verification problems (exit 4, nothing written) or
    the fsck notes of the new store. Raises InvalidArgument (exit 2) for a non-empty target, a
    position that is not a batch boundary or an unsafe archive, StoreNotFound (exit 8) for a
    missing backup. ``durable=False`` skips the fsyncs (tests only).
    """
    backup, target = os.fspath(backup), os.fspath(target)
    from .sets import resolve  # a backup set's folder (backup --into) means its newest backup

    refuse_overlap(backup, target, "backup", "restore target")  # a set's folder as given, too
    backup = resolve(backup)
    report = Report("restore", target)
    refuse_overlap(backup, target, "backup", "restore target")
    if os.path.lexists(target) and (not os.path.isdir(target) or os.path.islink(target) or os.listdir(target)):
        raise InvalidArgument(f"{target} exists and is not an empty folder; restore into a new or empty folder "
                              "(a restore never overwrites anything)")
    if to_position is not None and (isinstance(to_position, bool) or not isinstance(to_position, int)
                                    or to_position < 0):
        raise InvalidArgument(f"--to-position must be an integer >= 0, got {to_position!r}")
    if to_position is not None and to_time is not None:
        raise InvalidArgument("give --to-position or --to-time, not both; nothing was written")
    when = None if to_time is None else pit.parse_time(to_time)
    if not os.path.exists(backup):
        raise StoreNotFound(f"no backup at {backup}")
    if is_archive(backup):
        check_archive(backup, target)
    with Container(backup) as container:
        checked = Report("verify-backup", backup)
        verify.check(backup, container, checked, bases=True, progress=progress)
        for f in checked.findings:
            if f.severity != "info":
                report.add(f.code, f.severity, f"{backup}: {f.path}", f.message, f.position)
        if report.problems:
            report.add("restore-refused", "info", target, "the backup does not verify; nothing was written")
            return report.finish()
        with open_chain(backup, container, container.manifest()) as chain:
            if when is not None:
                to_position = pit.position_at(parts_of(chain.top.manifest)[0],
                                              lambda part: (rec for rec, _raw in _records(chain, part, 1 << 62)),
                                              when)
                report.figures["to_time"] = pit.format_time(when)
            plan = _plan(chain, to_position)
            _run(chain, plan, target, lock_timeout, progress, durable, report)
    report.head = plan.cut
    report.finish()
    report.figures.update(events=plan.cut, events_per_s=round(plan.cut / max(report.seconds, 1e-9)))
    return report


@dataclass
class Plan:
    """What the restored store holds: whole files copied, and the active segment."""

    cut: int
    chain: bytes
    whole: list[tuple[str, Part]] = field(default_factory=list)  # (file, its container)
    active_first: int = 1
    active_source: Part | None = None  # the container whose records up to the cut become the active segment


def _plan(chain: Chain, to_position: int | None) -> Plan:
    """Decide what is copied; refuse a cut past the head or inside a batch (exit 2)."""
    m = chain.top.manifest
    cut = m.head if to_position is None else to_position
    if cut > m.head:
        raise InvalidArgument(f"--to-position {cut} is past the backup's head {m.head}; nothing was written")
    plan = Plan(cut, recfmt.GENESIS, active_first=cut + 1)
    parts, _odd = parts_of(m)
    last_whole: Part | None = None
    for part in parts:
        if part.first > cut:
            break
        if part.last is not None:
            last = part.last
        elif part.kind == "sealed":
            last = _seal(chain, part).last
        else:
            last = m.head  # the active segment ends at the head
        if last <= cut:
            plan.whole.append((part.rel, part))
            if part.kind == "sealed":
                plan.whole.append((part.idx_rel, part))
            if part.kind == "active":
                plan.active_first = part.first  # copied whole: it stays the active segment
            last_whole = part
            continue
        rec = _record(chain, part, cut)
        if not rec.commit:
            before, after = _batch_ends_around(chain, part, cut)
            raise InvalidArgument(
                f"position {cut} is inside a batch (its record carries no commit mark): a restore stops only at "
                f"the end of a batch; the nearest are --to-position {before} (before the batch) and "
                f"--to-position {after} (its end); nothing was written")
        plan.chain, plan.active_first, plan.active_source = rec.chain, part.first, part
        return plan
    if cut == m.head:
        plan.chain = bytes.fromhex(m.chain)
    elif last_whole is not None and last_whole.kind == "sealed":
        plan.chain = _seal(chain, last_whole).last_chain
    elif last_whole is not None:
        with chain.holder(last_whole.rel).container.real_path(last_whole.rel) as path, \
                packfmt.PackReader(path) as reader:
            plan.chain = reader.last_chain
    return plan


def _seal(chain: Chain, part: Part) -> segfmt.Seal:
    holder = chain.holder(part.idx_rel)
    return segfmt.decode_idx(b"".join(holder.container.chunks(part.idx_rel)), part.first)


def _records(chain: Chain, part: Part, upto: int) -> Iterator[tuple[recfmt.Record, bytes]]:
    """The records of ``part`` from its first up to ``upto``, each with its raw bytes."""
    holder = chain.holder(part.rel)
    with holder.container.real_path(part.rel) as path:
        if part.kind == "pack":
            with packfmt.PackReader(path) as reader:
                for raw in reader.read_range(part.first, min(upto, reader.last)):
                    for rec in recfmt.iter_records(raw):
                        yield rec, raw[rec.offset:rec.end]
            return
        fd = fileio.open_read(path)
        try:
            for rec in segfmt.scan(fd, 0, segfmt.data_end(fd)):
                if rec.position > upto:
                    break
                yield rec, b""
        finally:
            os.close(fd)


def _batch_ends_around(chain: Chain, part: Part, cut: int) -> tuple[int, int]:
    """The batch ends nearest to ``cut`` (inside a batch of ``part``): the last before it (the
    position before ``part`` when none is in it; files end on batch ends) and the next after it."""
    before = part.first - 1
    for rec, _raw in _records(chain, part, 1 << 62):
        if rec.commit and rec.position < cut:
            before = rec.position
        elif rec.commit and rec.position > cut:
            return before, rec.position
    return before, cut  # unreachable in a verified backup: its head carries a commit mark


def _record(chain: Chain, part: Part, position: int) -> recfmt.Record:
    found = None
    for rec, _raw in _records(chain, part, position):
        found = rec
    if found is None or found.position != position:
        raise InvalidArgument(f"position {position} is not in the backup ({part.rel}); nothing was written")
    return found


def _run(chain: Chain, plan: Plan, target: str, lock_timeout: float, progress: bool, durable: bool,
         report: Report) -> None:
    parent = os.path.dirname(os.path.abspath(target)) or "."
    fileio.makedirs(parent)
    for path in sweep_stale(parent, "restore", os.path.basename(target)):
        report.add("restore-stale-temp", "info", path, "removed a temp folder left by an interrupted restore")
    tmp = temp_path(parent, "restore", os.path.basename(target))
    try:
        _build(chain, plan, tmp, progress, durable)
        _index(tmp, plan.cut, lock_timeout, durable, progress)
        _sync_tree(tmp, durable)
        if _fsck(tmp, report, progress):
            report.add("restore-refused", "info", target, "the restored store does not check (errors above); nothing "
                       "was written")
            remove_tree(tmp)
            return
        with locking.held(Layout(tmp).maintenance_lock, lock_timeout, "maintenance"):
            publish(tmp, target, durable)
    except BaseException:
        remove_tree(tmp)
        raise


def _write(path: str, chunks: Iterable[bytes], durable: bool) -> int:
    fd = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    size = 0
    try:
        for chunk in chunks:
            fileio.write_all(fd, chunk, path)
            size += len(chunk)
        if durable:
            fileio.fsync(fd, path)
    finally:
        os.close(fd)
    return size


def _build(chain: Chain, plan: Plan, tmp: str, progress: bool, durable: bool) -> None:
    lay = Layout(tmp)
    fileio.makedirs(tmp)
    for d in STORE_DIRS:
        fileio.makedirs(os.path.join(tmp, d))
    _write(lay.format_file, chain.holder("FORMAT").container.chunks("FORMAT"), durable)
    sizes = [chain.holder(rel).manifest.files[rel].size for rel, _part in plan.whole]
    with Meter("restore: copy", nbytes=sum(sizes), unit="B", progress=progress) as meter:
        for (rel, _part), size in zip(plan.whole, sizes, strict=True):
            _write(os.path.join(tmp, rel), chain.holder(rel).container.chunks(rel), durable)
            meter.add(nbytes=size)
    end = 0
    active = os.path.join(lay.log_dir, segfmt.seg_name(plan.active_first))
    src = plan.active_source
    if src is not None:
        end = _write(active, _cut_bytes(chain, src, plan.cut), durable)
    elif not os.path.exists(active):
        end = _write(active, [], durable)
    else:
        end = os.path.getsize(active)
    synced = SyncedFile(lay.synced_file)
    try:
        synced.reset(SyncedState(plan.cut, plan.active_first, end, plan.chain))
        if durable:
            fileio.fsync(synced.fd, lay.synced_file)
    finally:
        synced.close()


def _cut_bytes(chain: Chain, part: Part, cut: int) -> Iterator[bytes]:
    """The exact bytes of ``part``'s records up to ``cut``: a prefix of a segment, or the records
    a pack holds, as they were in the log."""
    if part.kind == "pack":
        for _rec, raw in _records(chain, part, cut):
            yield raw
        return
    end = 0
    for rec, _raw in _records(chain, part, cut):
        end = rec.end
    holder = chain.holder(part.rel)
    with holder.container.real_path(part.rel) as path:
        fd = fileio.open_read(path)
        try:
            yield from fd_chunks(fd, 0, end)
        finally:
            os.close(fd)


def _index(tmp: str, cut: int, lock_timeout: float, durable: bool, progress: bool = False) -> None:
    """Build the derived index from the restored log (one new generation, then published)."""
    with EventStore(tmp, create=False, durable=durable, lock_timeout=lock_timeout) as st:
        with st.locked():
            if cut:
                next(st.records(cut, cut))  # lets the view read the active segment up to the synced end
            gens = generations(st.layout.index)
            generation = (gens[-1] if gens else 0) + 1
            with Meter("restore: index", cut, progress=progress) as meter:
                path, _pos, _chain = build_generation(st, generation, cut, meter.to)
            publish_index(st, path, generation)


def _sync_tree(root: str, durable: bool) -> None:
    """fsync every folder of the new store (its files were fsynced as they were written)."""
    if not durable:
        return
    for d in (*STORE_DIRS, ""):
        fileio.fsync_dir(os.path.join(root, d))


def _fsck(tmp: str, report: Report, progress: bool = False) -> bool:
    """Check the restored store with a full fsck (with the reference fields its FORMAT records);
    return whether it found errors, which refuse the restore (``restore-<code>``). Warnings never
    do (a dangling reference is the events' business, restored as they were backed up): each is
    reported as a note, with a summary of them."""
    from ..fsck import fsck  # imported when needed: backup and verify-backup do without it

    checked = fsck(tmp, progress=progress)
    warned: dict[str, int] = {}
    for f in checked.findings:
        if f.severity == "error":
            report.add(f"restore-{f.code}", f.severity, f.path, f.message, f.position)
        elif f.severity == "warning":
            warned[f.code] = warned.get(f.code, 0) + 1
            report.add(f"restore-{f.code}", "info", f.path, f"warning in the restored store: {f.message}", f.position)
        else:
            report.add(f.code, f.severity, f.path, f.message, f.position)
    if warned:
        counts = ", ".join(f"{code} x{n}" for code, n in sorted(warned.items()))
        report.add("restore-warnings", "info", "", f"the restored store checks with {sum(warned.values())} "
                   f"warning(s) ({counts}): warnings never block a restore; see fsck on the new store")
    return any(f.severity == "error" for f in checked.findings)
