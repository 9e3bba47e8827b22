"""One compaction run, step by step, each step safe to interrupt at any point (see
:func:`kroniko_ops.ops.compact.compact` for the order and why a crash loses nothing)."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator

from ... import fileio, layout
from ...errors import StoreCorrupted
from ...format import pack as packfmt
from ...format import record as recfmt
from ...format import segment as segfmt
from ...logview import LogView
from ...progress import Meter
from ...report import Report
from . import inventory, packing, plan, prune, vacuum

RATIO_GUESS = 0.35  # compressed over raw bytes of a pack, before any pack says better


class Compaction:
    """The steps of one run under ``locks/maintenance.lock``; in a dry run each step only says
    what it would do."""

    def __init__(self, lay: layout.Layout, report: Report, *, dry_run: bool, prune_age: float,
                 block_bytes: int, durable: bool, show_progress: bool) -> None:
        self.lay, self.report, self.dry_run = lay, report, dry_run
        self.prune_age, self.block_bytes, self.show_progress = prune_age, block_bytes, show_progress
        self.syncer = fileio.Syncer(durable)
        self.counts: Counter[str] = Counter()
        self.view = LogView(lay)
        self._verified: dict[str, str | None] = {}  # pack name -> problem (None: verified)

    def close(self) -> None:
        """Release the view's files."""
        self.view.close()

    # -- findings ----------------------------------------------------------------------------

    def note(self, code: str, path: str, done: str, position: int | None = None) -> None:
        """An info finding: what was done, or in a dry run what would be."""
        self.report.add(code, "info", path, f"would: {done}" if self.dry_run else done, position)

    def damage(self, code: str, path: str, message: str, position: int | None = None) -> None:
        """An error finding: something compaction found damaged and left alone."""
        self.report.add(code, "error", path, message, position)

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> None:
        """Every step in order."""
        if self.dry_run:
            self.report.figures["dry_run"] = True
        inv = inventory.take(self.lay)
        self.report.figures["packs_before"] = len(inv.packs)
        self.report.figures["bytes_before"] = inv.bytes_on_disk()
        self.clear_temps(inv)
        the_plan = plan.plan(inv.segments, inv.packs)
        for rel in inv.symlinks:
            self.damage("layout-symlink", rel, "a symbolic link where a store file belongs; left alone (it would "
                        f"reach outside the store). Run: kroniko-ops fsck {self.lay.root}")
        for name, why in inv.unsealed:
            self.damage("segment-corrupt", f"log/{name}",
                        f"a segment older than the active one that is not sealed ({why}); not packed. "
                        f"Run: kroniko-ops fsck {self.lay.root}")
        for c in the_plan.overlaps:
            where = f"packs/{c.name}" if c.name.endswith(".pack") else f"log/{c.name}"
            self.damage("segment-overlap", where, f"positions {c.first}..{c.last} overlap a pack only in part; "
                        f"left alone. Run: kroniko-ops fsck {self.lay.root}", c.first)
        self.remove_leftovers(the_plan, inv)
        started = time.monotonic()
        self.compact_log(the_plan, inv)
        moved = self.counts["events_packed"] + self.counts["events_rewritten"]
        if moved and not self.dry_run:
            self.report.figures["events_per_second"] = round(moved / max(1e-9, time.monotonic() - started))
        self.tend_index()
        self.prune_lost_found()
        after = inventory.take(self.lay)
        self.report.figures["bytes_after"] = after.bytes_on_disk()
        self.report.figures["packs_after"] = len(after.packs)
        self.report.figures["events_in_packs"] = sum(p.last - p.first + 1 for p in plan.live_packs(after.packs)[0])
        self.report.figures.update(sorted(self.counts.items()))

    # -- leftovers of an interrupted compaction -------------------------------------------------

    def clear_temps(self, inv: inventory.Inventory) -> None:
        """Delete ``packs/.tmp-<pid>-*`` of compactions that died. Only compaction writes temp
        files in ``packs/``, and it removes the files a pack replaces only after linking the pack
        under its final name: so a temp pack is always a copy of records still held by segments
        or published packs, never the only copy. Deleted, not set aside."""
        for name in inv.stale_temps:
            self.note("stale-temp-file", f"packs/{name}",
                      "removed a temp pack of a compaction that died (a copy of records held elsewhere)")
            if not self.dry_run:
                _unlink_quiet(os.path.join(self.lay.packs, name))
                self.counts["temps_removed"] += 1
        if inv.stale_temps and not self.dry_run:
            self.syncer.dir(self.lay.packs)

    def _holder_ok(self, holder: plan.Container, position: int, chain: bytes | None) -> bool:
        """Whether the live pack ``holder`` verifies whole (checked once per run) and holds
        ``chain`` at ``position`` (when given)."""
        path = os.path.join(self.lay.packs, holder.name)
        if holder.name not in self._verified:
            problems = packfmt.verify_file(path)
            self._verified[holder.name] = problems[0] if problems else None
            if problems:
                self.damage("pack-corrupt", f"packs/{holder.name}", f"{problems[0]}; the files it holds are kept",
                            holder.first)
        if self._verified[holder.name] is not None:
            return False
        if chain is None:
            return True
        problem = packing.chain_differs(path, position, chain)
        if problem is not None:
            self.damage("segment-overlap", f"packs/{holder.name}", f"{problem}; the files it would replace are kept",
                        position)
        return problem is None

    def remove_leftovers(self, the_plan: plan.Plan, inv: inventory.Inventory) -> None:
        """Remove sealed segments and packs a live pack holds entirely (a compaction died after
        publishing the pack, before removing its inputs), once that pack verifies and holds the
        same chain hash at their last position (hence the same history up to there)."""
        removed_logs = removed_packs = False
        for seg, holder in the_plan.packed_segments:
            msg = f"removed sealed segment {seg.first}..{seg.last}, already held by pack {holder.name}"
            if self.dry_run:
                self.note("segment-packed", f"log/{seg.name}", msg, seg.first)
            elif self._holder_ok(holder, seg.last, inv.seals[seg.first].last_chain):
                self._remove_segment(seg.first)
                self.note("segment-packed", f"log/{seg.name}", msg, seg.first)
                self.counts["leftovers_removed"] += 1
                removed_logs = True
        for first in inv.orphan_idx:
            removed_logs |= self._remove_orphan_idx(first, the_plan.live_packs)
        for old, holder in the_plan.superseded_packs:
            msg = f"removed pack {old.name}, superseded by pack {holder.name}"
            if self.dry_run:
                self.note("pack-superseded", f"packs/{old.name}", msg, old.first)
                continue
            try:
                with packfmt.PackReader(os.path.join(self.lay.packs, old.name)) as r:
                    chain: bytes | None = r.last_chain
            except packfmt.PackError:
                chain = None  # a damaged copy: the holder verifying whole is enough
            ok = self._holder_ok(holder, old.last, chain)
            if ok:
                if chain is None:
                    msg = self._set_aside_damaged(os.path.join(self.lay.packs, old.name), holder.name, old.first)
                else:
                    _unlink_quiet(os.path.join(self.lay.packs, old.name))
                self.note("pack-superseded", f"packs/{old.name}", msg, old.first)
                self.counts["leftovers_removed"] += 1
                removed_packs = True
        if removed_logs:
            self.syncer.dir(self.lay.log_dir)
        if removed_packs:
            self.syncer.dir(self.lay.packs)

    def _remove_orphan_idx(self, first: int, live: list[plan.Container]) -> bool:
        """Remove ``log/<first>.idx`` whose segment is gone when a live pack holds its positions
        (a compaction died between removing a packed segment and its offset index); an offset
        index of a segment no pack holds is damage, left for fsck."""
        name = segfmt.idx_name(first)
        try:
            seal = segfmt.read_idx(os.path.join(self.lay.log_dir, name), first)
            last, chain = seal.last, seal.last_chain
        except (segfmt.SegmentError, OSError):
            last, chain = first, None  # torn by the crash: the holder verifying whole is enough
        holder = next((p for p in live if p.first <= first and last <= p.last), None)
        if holder is None:
            return False
        msg = f"removed the offset index of segment {first}, already packed into {holder.name}"
        if self.dry_run:
            self.note("segment-orphan-index", f"log/{name}", msg, first)
            return False
        if not self._holder_ok(holder, last, chain):
            return False
        if chain is None:
            msg = self._set_aside_damaged(os.path.join(self.lay.log_dir, name), holder.name, first)
        else:
            _unlink_quiet(os.path.join(self.lay.log_dir, name))
        self.note("segment-orphan-index", f"log/{name}", msg, first)
        self.counts["leftovers_removed"] += 1
        return True

    def _set_aside_damaged(self, path: str, holder: str, first: int) -> str:
        """A leftover that does not read whole is not provably a copy of what ``holder`` holds:
        it goes into ``lost-found/``, never deleted. Returns what was done."""
        folder = layout.set_aside(
            self.lay.root, "compact-leftover",
            f"{os.path.relpath(path, self.lay.root)}: a compaction's leftover from position {first} on that does not "
            f"read whole (damaged), set aside by compact. Pack {holder}, which verified, holds its positions; "
            "keep this copy until you are sure nothing is missing.",
            move=[path], durable=self.syncer.durable)
        return (f"set aside damaged {os.path.basename(path)} into {os.path.relpath(folder, self.lay.root)} "
                f"(pack {holder} holds its positions)")

    def _remove_segment(self, first: int) -> None:
        # .seg first: a reader opens the .idx, then the .seg, and on a missing file lists again.
        _unlink_quiet(os.path.join(self.lay.log_dir, segfmt.seg_name(first)))
        _unlink_quiet(os.path.join(self.lay.log_dir, segfmt.idx_name(first)))

    # -- packing sealed segments -----------------------------------------------------------------

    def _chain_before(self, first: int) -> bytes:
        """The chain hash of position ``first - 1`` (genesis before position 1); raises
        :class:`packing.Damage` when the container holding it cannot give it."""
        if first == 1:
            return recfmt.GENESIS
        self.view.refresh()
        try:
            return self.view.record(first - 1).chain
        except (packfmt.PackError, segfmt.SegmentError, recfmt.RecordError, StoreCorrupted) as exc:
            raise packing.Damage(f"the record before {first} cannot be read ({exc})", first - 1) from None

    def compact_log(self, the_plan: plan.Plan, inv: inventory.Inventory) -> None:
        """Write the new packs: each run of sealed segments no pack holds, together with the
        small packs it joins under the geometric rule, in one write. Then merge again on the
        packs' real sizes (the plan guessed the runs' compressed size), which rarely does more."""
        live = [p for p in plan.live_packs(inventory.take(self.lay).packs)[0] if p not in the_plan.overlaps]
        ratio = self._ratio(live)
        runs = {r[0].first: r for r in the_plan.runs}
        items = sorted(live + [plan.Container(r[0].first, r[-1].last, max(1, int(run_bytes(r) * ratio)),
                                              f"{plan.RUN_PREFIX}{r[0].first}") for r in the_plan.runs],
                       key=lambda c: c.first)
        groups = plan.with_rewrites(plan.write_groups(items), items, self._old_packs(items))
        spans = [(items[j].last - items[i].first + 1, sum(c.size for c in items[i:j + 1])) for i, j in groups]
        with Meter("compact", sum(e for e, _b in spans), progress=self.show_progress) as meter:
            for (i, j), span in zip(groups, spans, strict=True):
                self._write_group(items[i:j + 1], runs, inv)
                meter.add(*span)
        if self.dry_run:
            return
        live = [p for p in plan.live_packs(inventory.take(self.lay).packs)[0] if p not in the_plan.overlaps]
        for i, j in plan.with_rewrites(plan.geometric_merges(live), live, self._old_packs(live)):
            self._write_group(live[i:j + 1], runs, inv)

    def _old_packs(self, items: list[plan.Container]) -> set[int]:
        """Indexes of the packs in ``items`` written in an older pack version (rewritten now)."""
        old = set()
        for k, c in enumerate(items):
            if c.name.endswith(".pack"):
                try:
                    with packfmt.PackReader(os.path.join(self.lay.packs, c.name)) as r:
                        if r.version != packfmt.VERSION:
                            old.add(k)
                except (packfmt.PackError, OSError):
                    continue  # damaged: reported where it is verified, never merged
        return old

    def _ratio(self, live: list[plan.Container]) -> float:
        """Compressed over raw bytes in the newest pack (a guess of what a run will take)."""
        if not live:
            return RATIO_GUESS
        try:
            with packfmt.PackReader(os.path.join(self.lay.packs, live[-1].name)) as r:
                raw = r.raw_bytes
        except (packfmt.PackError, OSError):
            return RATIO_GUESS
        return min(1.0, max(0.05, live[-1].size / max(1, raw)))

    def _write_group(self, group: list[plan.Container], runs: dict[int, list[plan.Container]],
                     inv: inventory.Inventory) -> None:
        """One new pack from ``group`` (packs and runs of segments, contiguous); then the inputs
        go, in position order: while some remain, a reader lists the new pack before them."""
        first, last = group[0].first, group[-1].last
        packs = [c for c in group if not c.name.startswith(plan.RUN_PREFIX)]
        segs = [s for c in group if c.name.startswith(plan.RUN_PREFIX) for s in runs[c.first]]
        name = packfmt.name_of(first, last)
        label = " and ".join(x for x in (f"{len(packs)} packs" if packs else "",
                                         f"{len(segs)} sealed segments" if segs else "") if x)
        label += f" (positions {first}..{last})"
        code = "compact-merge" if packs else "compact-pack"
        if self.dry_run:
            self.note(code, f"packs/{name}", f"write packs/{name} from {label}", first)
            return
        sources: list[tuple[str, Iterator[tuple[int, bytes]]]] = []
        for c in group:
            if c.name.startswith(plan.RUN_PREFIX):
                sources += [(f"log/{s.name}", packing.segment_runs(self.lay.log_dir, s.first, inv.seals[s.first]))
                            for s in runs[c.first]]
            else:
                sources.append((f"packs/{c.name}", packing.pack_runs(os.path.join(self.lay.packs, c.name))))
        try:
            tail = group[-1]
            if tail.name.startswith(plan.RUN_PREFIX):
                last_chain = inv.seals[runs[tail.first][-1].first].last_chain
            else:
                with packfmt.PackReader(os.path.join(self.lay.packs, tail.name)) as r:
                    last_chain = r.last_chain
            chain_before = self._chain_before(first)
            info = packing.write(self.lay, self.syncer, sources, first, last, chain_before, last_chain,
                                 self.block_bytes)
        except (packing.Damage, packfmt.PackError) as exc:
            where = getattr(exc, "where", "packs")
            self.damage("segment-corrupt" if where.startswith("log/") else "pack-corrupt", where,
                        f"{exc}; {label} left as they are", getattr(exc, "position", None) or first)
            return
        for c in group:
            if c.name.startswith(plan.RUN_PREFIX):
                for s in runs[c.first]:
                    self._remove_segment(s.first)
            else:
                _unlink_quiet(os.path.join(self.lay.packs, c.name))
        if segs:
            self.syncer.dir(self.lay.log_dir)
        if packs:
            self.syncer.dir(self.lay.packs)
        rewritten = sum(p.last - p.first + 1 for p in packs)
        self.counts["packs_written"] += 1
        self.counts["packs_merged"] += len(packs)
        self.counts["segments_packed"] += len(segs)
        self.counts["events_rewritten"] += rewritten
        self.counts["events_packed"] += info.count - rewritten
        self.note(code, f"packs/{name}", f"wrote {info.size} bytes from {label} "
                  f"({sum(c.size for c in packs) + run_bytes(segs)} bytes)", first)

    # -- the index and lost-found -------------------------------------------------------------------

    def tend_index(self) -> None:
        """Optimize, checkpoint and (when worth it) vacuum the current index generation."""
        result = vacuum.upkeep(self.lay.index, self.dry_run)
        if result is None:
            return
        self.report.figures["index_free_pages"] = result.free_pages
        if result.vacuumed:
            self.counts["index_vacuumed"] = 1
        if result.error and not result.busy:
            self.report.add("index-upkeep", "warning", "index", f"{result.summary()}; if it persists, run: "
                            f"kroniko-ops fsck {self.lay.root}")
        else:
            self.report.add("index-upkeep", "info", "index", result.summary())

    def prune_lost_found(self) -> None:
        """Delete ``lost-found/`` entries older than the prune age (none when it is 0)."""
        if self.prune_age <= 0:
            return
        removed = False
        for name, age in prune.old_entries(self.lay.lost_found, self.prune_age):
            path = os.path.join(self.lay.lost_found, name)
            what = prune.describe(path)
            self.note("lost-found-pruned", f"lost-found/{name}",
                      f"deleted, set aside {age:.0f} days ago (prune age {self.prune_age:g} days)"
                      + (f": {what}" if what else ""))
            if not self.dry_run:
                self.counts["lost_found_bytes_freed"] += prune.remove_entry(path)
                self.counts["lost_found_pruned"] += 1
                removed = True
        if removed:
            self.syncer.dir(self.lay.lost_found)


def run_bytes(run: list[plan.Container]) -> int:
    """The bytes of a run of segments (with their offset indexes)."""
    return sum(s.size for s in run)


def _unlink_quiet(path: str) -> None:
    try:
        fileio.unlink(path)
    except FileNotFoundError:
        pass
