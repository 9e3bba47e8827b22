"""What ``compact`` finds in a store: its sealed segments (never the active one), its packs, and
the temp files an interrupted compaction left in ``packs/``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ... import layout
from ...format import pack as packfmt
from ...format import segment as segfmt
from .plan import Container


@dataclass
class Inventory:
    """One listing of ``log/`` and ``packs/``.

    ``segments``: sealed segments with a readable offset index whose size matches the segment
    (the active segment, the highest-numbered ``.seg``, is never listed, even when a writer has
    just written its ``.idx``: it is the writer's until the next segment exists).
    ``unsealed``: older segments without a usable offset index (damage: fsck's to name).
    ``stale_temps``: ``packs/.tmp-<pid>-*`` files whose process is gone (or is this one).
    """

    active_first: int
    segments: list[Container] = field(default_factory=list)
    packs: list[Container] = field(default_factory=list)
    unsealed: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    stale_temps: list[str] = field(default_factory=list)
    orphan_idx: list[int] = field(default_factory=list)  # firsts of .idx files whose .seg is gone
    symlinks: list[str] = field(default_factory=list)  # store-relative paths of links where files belong
    seals: dict[int, segfmt.Seal] = field(default_factory=dict)

    def bytes_on_disk(self) -> int:
        """Bytes of the sealed segments (with their offset indexes) and the packs."""
        return sum(c.size for c in self.segments) + sum(c.size for c in self.packs)


def take(lay: layout.Layout) -> Inventory:
    """List the store's containers now."""
    kinds: dict[int, set[str]] = {}
    links: list[str] = []
    for name in os.listdir(lay.log_dir):
        parsed = segfmt.parse_name(name)
        if parsed is not None:
            kinds.setdefault(parsed[0], set()).add(parsed[1])
            if os.path.islink(os.path.join(lay.log_dir, name)):
                links.append(f"log/{name}")
    firsts = sorted(f for f, k in kinds.items() if "seg" in k)
    inv = Inventory(active_first=firsts[-1] if firsts else 1, symlinks=links)
    inv.orphan_idx = sorted(f for f, k in kinds.items() if "seg" not in k)
    for first in firsts[:-1]:
        if f"log/{segfmt.seg_name(first)}" in links or f"log/{segfmt.idx_name(first)}" in links:
            continue  # never read or removed through a link: it would reach outside the store
        seg_path = os.path.join(lay.log_dir, segfmt.seg_name(first))
        idx_path = os.path.join(lay.log_dir, segfmt.idx_name(first))
        try:  # read even when the listing showed no .idx: a listing races a writer sealing
            seal = segfmt.read_idx(idx_path, first)
            size = os.lstat(seg_path).st_size
        except FileNotFoundError:
            inv.unsealed.append((segfmt.seg_name(first), "it has no offset index (.idx)"))
            continue
        except (segfmt.SegmentError, OSError) as exc:
            inv.unsealed.append((segfmt.seg_name(first), f"its offset index is unusable: {exc}"))
            continue
        if size != seal.size:
            inv.unsealed.append((segfmt.seg_name(first), f"it is {size} bytes, its offset index says {seal.size}"))
            continue
        inv.seals[first] = seal
        inv.segments.append(Container(first, seal.last, size + os.lstat(idx_path).st_size, segfmt.seg_name(first)))
    for name in sorted(os.listdir(lay.packs)):
        path = os.path.join(lay.packs, name)
        rng = packfmt.parse_name(name)
        if os.path.islink(path):
            inv.symlinks.append(f"packs/{name}")
        elif rng is not None:
            inv.packs.append(Container(rng[0], rng[1], os.lstat(path).st_size, name))
        elif layout.stale_temp(name, path) or name.startswith(f"{layout.TMP_PREFIX}{os.getpid()}-"):
            # Ours too: only compaction writes temp files here, under the maintenance lock that
            # this process now holds, so one with our pid is what an earlier, failed run left.
            inv.stale_temps.append(name)
    return inv
