"""``compact``: pack committed loose events, merge small packs, prune old dangling events and
clear stale temp files, like ``git gc``, while applications keep appending and reading.

Safety rests on three rules. A loose file is removed only after a pack holding its exact bytes
is published (written to temp files, fsynced, read back and checked against the log's hashes,
linked under its final name, folder fsynced). A pack is removed only when a published pack
holds all its events. Anything else that leaves ``events/`` (dangling events, a stale temp file
of a writer) is set aside into ``lost-found/``. So a crash at any step leaves every committed
event loose or packed, plus at worst temp files, an ``.idx`` without its pack, or a pack
superseded by a merged one, which fsck calls harmless and the next compaction removes.
"""

from __future__ import annotations

import os
import time
from collections import Counter

from .. import fileio, layout, locking
from ..errors import InvalidArgument
from ..packs import Pack, PackError, PackSet, list_packs, parse_name
from ..report import Report
from ..store import EventStore
from .compact_loose import PRUNE_LOCK_TIMEOUT, tidy_loose
from .compact_pack import LoosePacker, PackDamage
from .compact_plan import events, parse_age, plan_merges, uncovered
from .compact_write import PackWriter, remove_pack, verify_against_log

__all__ = ["compact", "parse_age"]

TWO_WEEKS = 14 * 86400.0
DEFAULT_MIN_LOOSE = 1
DEFAULT_MAX_PACKS = 32
DEFAULT_MAX_PACK_BYTES = 32 << 20
# What fsck --quick may find without compaction refusing: leftovers that compaction itself
# clears, a crashed writer's log tail (past the committed head, which is all compaction reads),
# and index problems (compaction never trusts the index: it checks what it finds there against
# the log). Anything else (the log, events, packs, the layout) is damage: compaction refuses.
TOLERATED = frozenset({
    "stale-temp-file", "dangling-event", "stray-file", "log-torn-tail", "log-uncommitted-tail",
})


def _tolerated(code: str) -> bool:
    return code in TOLERATED or code.startswith("index-")


class _Damage(Exception):
    """The store turned out damaged while compacting: stop, the findings say where."""


def compact(path: str, *, dry_run: bool = False, prune_after: float = TWO_WEEKS,
            min_loose: int = DEFAULT_MIN_LOOSE, max_packs: int = DEFAULT_MAX_PACKS,
            max_pack_bytes: int = DEFAULT_MAX_PACK_BYTES, reindex: bool = False, lock_timeout: float = 30.0,
            quiet: bool = True) -> Report:
    """Compact the store at ``path`` online and return the report (exit code 0, or 4 when the
    store is damaged and nothing was done).

    Packs the committed loose events (when there are at least ``min_loose``) into packs of at
    most about ``max_pack_bytes``; merges packs when there are more than ``max_packs``; sets
    dangling events older than ``prune_after`` seconds aside into ``lost-found/``; clears stale
    temp files; rebuilds the index (with reindex's atomic swap) when fsck --quick found it damaged
    or ``reindex`` asks for it. ``dry_run`` reports the plan and changes nothing. Holds
    ``locks/maintenance.lock`` (waiting up to ``lock_timeout`` seconds); writers and readers
    carry on meanwhile.
    """
    for name, value in (("min_loose", min_loose), ("max_packs", max_packs), ("max_pack_bytes", max_pack_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgument(f"{name} must be an int >= 1, got {value!r}")
    if isinstance(prune_after, bool) or not isinstance(prune_after, (int, float)) or not prune_after >= 0:
        raise InvalidArgument(f"prune_after must be a number of seconds >= 0, got {prune_after!r}")
    report = Report("compact", os.fspath(path))
    with EventStore(path, create=False) as store:
        report.path = store.path
        with locking.held(store.layout.maintenance_lock, lock_timeout, "maintenance"):
            index_problems = _precheck(store, report)
            if index_problems is not None:
                job = _Compaction(store, report, dry_run, float(prune_after), min_loose, max_packs,
                                  max_pack_bytes, quiet)
                job.index_problems = index_problems if not reindex else [*index_problems, "asked for"]
                try:
                    job.run()
                except _Damage:
                    pass
                finally:
                    job.packs.close()
    return report.finish()


def _precheck(store: EventStore, report: Report) -> list[str] | None:
    """Run ``fsck --quick`` (or, without it, the pack checks); refuse a damaged store (None),
    else return the codes of the index problems found (compaction rebuilds the index then)."""
    try:
        from .fsck import fsck
    except ImportError:
        fsck = None
    if fsck is not None:
        found = fsck(store.path, level="quick")
    else:
        from ..packs import check_packs

        found = Report("fsck", store.path)
        check_packs(store.path, found, full=False)
    damage = [f for f in found.problems if not _tolerated(f.code)]
    if not damage:
        return sorted({f.code for f in found.problems if f.code.startswith("index-")})
    report.findings.extend(damage)
    codes = ", ".join(sorted({f.code for f in damage}))
    report.add("compact-refused", "error", ".",
               f"fsck --quick finds damage ({codes}); compaction changed nothing. Run: kroniko-ops fsck "
               f"{store.path} (and repair or restore) first")
    return None


class _Compaction:
    """One run: the steps in order, each acting or, in a dry run, saying what it would do."""

    def __init__(self, store: EventStore, report: Report, dry_run: bool, prune_after: float,
                 min_loose: int, max_packs: int, max_pack_bytes: int, quiet: bool) -> None:
        self.store, self.report, self.dry_run = store, report, dry_run
        self.prune_after, self.min_loose, self.quiet = prune_after, min_loose, quiet
        self.max_packs, self.max_pack_bytes = max_packs, max_pack_bytes
        self.lay = store.layout
        self.packs = PackSet(self.lay.packs)
        self.fd = os.open(self.lay.log, os.O_RDONLY | os.O_CLOEXEC)
        self.counts: Counter[str] = Counter()
        self.index_problems: list[str] = []

    def note(self, code: str, path: str, done: str, would: str, position: int | None = None) -> None:
        """An info finding saying what was done (or, in a dry run, what would be)."""
        self.add(code, "info", path, would if self.dry_run else done, position)

    def add(self, code: str, severity: str, path: str, message: str, position: int | None = None) -> None:
        """A finding, its path relative to the store (as fsck names files)."""
        self.report.add(code, severity, os.path.relpath(path, self.lay.root), message, position)

    def run(self) -> None:
        """Every step, in an order that keeps each crash point safe."""
        if self.dry_run:
            self.report.figures["dry_run"] = True
        try:
            head = self.store.head()
            self.report.head = head
            started = time.monotonic()
            self.tidy_packs_folder()
            packed = self.pack_loose(head)
            if packed:
                # Everything included: packing, checking, publishing, removing the loose files.
                self.report.figures["events_per_second"] = round(packed / max(1e-9, time.monotonic() - started))
            self.merge()
            tidy_loose(self, head)
            self.clear_temps()
            self.compact_index()
        finally:
            os.close(self.fd)
            self._figures()

    def _figures(self) -> None:
        ranges = self.packs.ranges()
        head = self.store.head()
        self.report.figures.update({
            "packs": len(list_packs(self.lay.packs)[0]),
            "packed_events": sum(b - a + 1 for a, b in ranges if a <= head),
            "loose_events": sum(b - a + 1 for a, b in uncovered(ranges, head)),
            **{k: v for k, v in sorted(self.counts.items())},
        })

    # -- packs/ leftovers ----------------------------------------------------------------------

    def tidy_packs_folder(self) -> None:
        """Remove what an interrupted compaction left in ``packs/``: temp files (copies of events
        that are still loose or packed), offset indexes without their pack, and packs that a
        published merged pack supersedes."""
        ranges, other = list_packs(self.lay.packs)
        for name in other:
            path = os.path.join(self.lay.packs, name)
            parsed = parse_name(name)
            if name.startswith(layout.TMP_PREFIX) and _stale(name, path):
                what = "a temp file of a compaction that died (a copy of events still held elsewhere)"
            elif parsed is not None and parsed[2] == "idx":
                what = "an offset index without its pack (an interrupted compaction)"
            else:
                continue
            self.note("stale-temp-file" if parsed is None else "pack-orphan-index", path,
                      f"removed {what}", f"would remove {what}")
            if not self.dry_run:
                _unlink_quiet(path)
                self.counts["pack_leftovers_removed"] += 1
        packs = [Pack(self.lay.packs, a, b) for a, b in ranges]
        for p in packs:
            container = next((q for q in packs if q is not p and q.first <= p.first and p.last <= q.last
                              and (q.first, -q.last) < (p.first, -p.last)), None)
            if container is None:
                continue
            msg = f"pack {p.first}..{p.last}, superseded by the merged pack {container.first}..{container.last}"
            if not self.dry_run:
                try:
                    verify_against_log(container, self.fd)  # before anything it stands in for goes
                except (PackError, ValueError) as exc:
                    self.add("pack-corrupt", "error", container.pack_path, str(exc), container.first)
                    continue
                remove_pack(p)
                fileio.fsync_dir(self.lay.packs)
                self.counts["packs_superseded_removed"] += 1
            self.note("pack-superseded", p.pack_path, f"removed {msg}", f"would remove {msg}", p.first)
        self.packs.refresh()

    # -- packing loose events ------------------------------------------------------------------

    def pack_loose(self, head: int) -> int:
        """Pack every committed position no pack holds yet; return how many were packed."""
        runs = uncovered(self.packs.ranges(), head)
        loose = sum(b - a + 1 for a, b in runs)
        if loose == 0:
            return 0
        if loose < self.min_loose:
            self.add("compact-skip", "info", self.lay.events,
                     f"{loose} loose committed events, fewer than --min-loose {self.min_loose}: not packed")
            return 0
        if self.dry_run:
            for a, b in runs:
                self.note("compact-pack", self.lay.packs, "", f"would pack positions {a}..{b} ({events(b - a + 1)})", a)
            return 0
        try:
            LoosePacker(self).run(runs, loose)
        except PackDamage:
            raise _Damage from None
        return loose

    # -- merging ---------------------------------------------------------------------------------

    def merge(self) -> None:
        """Merge adjacent small packs when there are more than ``max_packs`` (geometric)."""
        packs = self.packs.refresh()
        ranges = [(p.first, p.last) for p in packs]
        sizes = []
        for p in packs:
            try:
                sizes.append(os.path.getsize(p.pack_path))
            except FileNotFoundError:
                return  # cannot happen under the maintenance lock; plan again next time
        for i, j in plan_merges(ranges, sizes, self.max_packs, self.max_pack_bytes):
            group = packs[i : j + 1]
            msg = f"{len(group)} packs into positions {group[0].first}..{group[-1].last}"
            if self.dry_run:
                self.note("compact-merge", self.lay.packs, "", f"would merge {msg}", group[0].first)
            elif self._merge_group(group):
                self.note("compact-merge", self.lay.packs, f"merged {msg}", "", group[0].first)
        self.packs.refresh()

    def _merge_group(self, group: list[Pack]) -> bool:
        for p in group:
            try:
                p.checksums()
            except PackError as exc:
                self.add("pack-corrupt", "error", p.pack_path, f"{exc}; not merged", p.first)
                return False
        writer = PackWriter(self.lay.packs, group[0].first, self.store.durable)
        try:
            for p in group:
                for _start, raws in p.batches(p.first, p.last):
                    writer.add(raws)
            pack = writer.finish()
            try:
                verify_against_log(pack, self.fd)
            except (PackError, ValueError) as exc:
                self.add("pack-corrupt", "error", pack.pack_path,
                         f"the merged pack does not read back as written ({exc}); nothing was removed", pack.first)
                writer.abort()
                return False
            writer.publish()
        except BaseException:
            writer.abort()
            raise
        for p in group:
            p.close()
            remove_pack(p)
        fileio.fsync_dir(self.lay.packs)
        self.counts["packs_merged"] += len(group)
        return True

    # -- temp files and the index --------------------------------------------------------------

    def clear_temps(self) -> None:
        """Stale ``.tmp-*`` files: an event's is set aside (it may hold the only copy of an
        uncommitted event), the others (index, FORMAT) hold derived data and are removed."""
        aside: list[str] = []
        folders = [self.lay.root, self.lay.events, self.lay.log_dir]
        folders += [d for d, _subdirs, _files in os.walk(self.lay.index)]
        for folder in folders:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:
                path = os.path.join(folder, name)
                if not name.startswith(layout.TMP_PREFIX) or not _stale(name, path):
                    continue
                # An event's temp may be the only copy of an uncommitted event; a folder is an
                # unfinished index rebuild: both go to lost-found, like recover does.
                holds_events = folder == self.lay.events or os.path.isdir(path)
                verb = "set aside into lost-found" if holds_events else "removed"
                self.note("stale-temp-file", path, f"{verb} a temp file left by a process that died",
                          f"would be {verb}: a temp file left by a process that died")
                if self.dry_run:
                    continue
                if holds_events:
                    aside.append(path)
                else:
                    _unlink_quiet(path)
                self.counts["temps_cleared"] += 1
        if aside:
            layout.set_aside(self.lay.root, "stale-temp", "Temp files of appends whose process died before "
                             "publishing them: uncommitted events, never acknowledged. Set aside by compact.",
                             move=aside, durable=self.store.durable)

    def compact_index(self) -> None:
        """Rebuild the index, swapped in atomically by reindex, when it pays: when fsck --quick
        found it damaged (or the caller asked). The index is append-only, sorted and fixed-width,
        so a healthy one has no slack a rewrite would remove."""
        if not self.index_problems:
            return
        why = ", ".join(self.index_problems)
        self.note("index-compact", self.lay.index, f"rebuilt the index ({why})", f"would rebuild the index ({why})")
        if self.dry_run:
            return
        from .reindex import rebuild

        rebuild(self.lay.root, self.report, PRUNE_LOCK_TIMEOUT, self.quiet)
        self.counts["index_rebuilt"] = 1


def _stale(name: str, path: str) -> bool:
    """A temp file whose writer is gone: a dead pid, or older than a day (a reused pid)."""
    return bool(layout.stale_temp(name, path))


def _unlink_quiet(path: str) -> None:
    try:
        fileio.unlink(path)
    except FileNotFoundError:
        pass
