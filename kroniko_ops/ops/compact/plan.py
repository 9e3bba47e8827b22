"""Pure planning of ``compact``: which sealed segments go into which new pack, which packs to
merge (geometrically, like ``git repack --geometric=2``), and which files an interrupted
compaction left behind. Nothing here touches the disk; :mod:`.inventory` lists the store.
"""

from __future__ import annotations

from dataclasses import dataclass

FACTOR = 2  # each pack at least twice the size of the next newer one


@dataclass(frozen=True)
class Container:
    """A sealed segment or a pack: the positions it holds and its size on disk (bytes)."""

    first: int
    last: int
    size: int
    name: str


@dataclass(frozen=True)
class Plan:
    """What one compaction does, in order.

    ``runs``: groups of consecutive sealed segments, each becoming one new pack.
    ``live_packs``: the packs no other pack holds (see :func:`live_packs`).
    ``superseded_packs``: packs a live pack holds entirely (a crash between publishing a merged
    pack and removing its inputs); ``packed_segments``: sealed segments a live pack holds (a
    crash between publishing a pack and removing the segments). Both are removed once the live
    pack is verified. ``overlaps``: packs or segments that overlap a live pack only in part
    (damage: left alone, reported).
    """

    live_packs: list[Container]
    runs: list[list[Container]]
    superseded_packs: list[tuple[Container, Container]]  # (superseded, the live pack holding it)
    packed_segments: list[tuple[Container, Container]]  # (segment, the live pack holding it)
    overlaps: list[Container]


def live_packs(packs: list[Container]) -> tuple[list[Container], list[Container]]:
    """Split packs into the ones compaction keeps (held by no other pack) and the others (each
    held whole by a kept one: inputs of a merge whose pack was published before they were
    removed). Readers may still use the smaller ones meanwhile: both hold the same records."""
    kept: list[Container] = []
    held: list[Container] = []
    reach = 0
    for p in sorted(packs, key=lambda c: (c.first, -c.last, c.name)):
        if p.last <= reach:  # an earlier pack starts no later and ends no sooner: it holds p
            held.append(p)
        else:
            kept.append(p)
            reach = p.last
    return kept, held


def _holder(live: list[Container], c: Container) -> Container | None:
    """The live pack holding all of ``c``, if one does."""
    return next((p for p in live if p.first <= c.first and c.last <= p.last), None)


def plan(segments: list[Container], packs: list[Container]) -> Plan:
    """The plan for sealed ``segments`` (never the active one) and ``packs`` as listed."""
    kept, held = live_packs(packs)
    live: list[Container] = []
    overlaps: list[Container] = []
    for p in kept:  # kept packs overlapping in part: damage, neither is merged nor trusted to hold
        if live and p.first <= live[-1].last:
            overlaps.append(p)
        else:
            live.append(p)
    superseded: list[tuple[Container, Container]] = []
    for p in held:
        holder = _holder(live, p)
        if holder is None:
            overlaps.append(p)
        else:
            superseded.append((p, holder))
    packed: list[tuple[Container, Container]] = []
    free: list[Container] = []
    for s in sorted(segments, key=lambda c: c.first):
        holder = _holder(live, s)
        if holder is not None:
            packed.append((s, holder))
        elif any(p.first <= s.last and s.first <= p.last for p in live):
            overlaps.append(s)
        else:
            free.append(s)
    runs: list[list[Container]] = []
    for s in free:
        if runs and runs[-1][-1].last + 1 == s.first:
            runs[-1].append(s)
        else:
            runs.append([s])
    return Plan(live, runs, superseded, packed, overlaps)


def geometric_merges(packs: list[Container], factor: int = FACTOR) -> list[tuple[int, int]]:
    """Which packs to merge, as inclusive index ranges ``(i, j)``, ``i < j``, into ``packs``
    (sorted by position, disjoint): after merging each range into one pack, every pack of a run
    of contiguous packs is at least ``factor`` times the size of the next (newer) one.

    Within each run of contiguous packs, from the newest back, a group grows while the next
    older pack is smaller than ``factor`` times the group's size, like ``git repack
    --geometric=2``. So each event is rewritten O(log n) times over the store's life, the number
    of packs stays logarithmic in the store's size, and a big old pack is left alone while the
    new ones are small. Packs that are not contiguous (positions between them live in segments
    that could not be packed) are never merged.
    """
    if factor < 2:
        raise ValueError("factor must be at least 2")
    out: list[tuple[int, int]] = []
    start = 0
    for k in range(1, len(packs) + 1):
        if k == len(packs) or packs[k - 1].last + 1 != packs[k].first:
            out.extend(_roll_up([p.size for p in packs[start:k]], start, factor))
            start = k
    return out


def _roll_up(sizes: list[int], offset: int, factor: int) -> list[tuple[int, int]]:
    groups: list[tuple[int, int]] = []
    j = len(sizes) - 1
    while j >= 0:
        i, total = j, sizes[j]
        while i > 0 and sizes[i - 1] < factor * total:
            i -= 1
            total += sizes[i]
        groups.append((i, j))
        j = i - 1
    return [(offset + i, offset + j) for i, j in reversed(groups) if i < j]


RUN_PREFIX = "run:"  # the name of a run of sealed segments among packs, in :func:`write_groups`


def write_groups(items: list[Container], factor: int = FACTOR) -> list[tuple[int, int]]:
    """Which new packs to write, as inclusive index ranges into ``items``: live packs and runs
    of sealed segments (named ``run:<first>``, their size the pack they would make), sorted by
    position. Each range becomes one pack: the geometric merges (:func:`geometric_merges`), and
    each run left out of them on its own. So a run is packed together with the small packs it
    joins, in one write, rather than packed and then merged."""
    merges = geometric_merges(items, factor)
    inside = {k for i, j in merges for k in range(i, j + 1)}
    singles = [(k, k) for k, c in enumerate(items) if k not in inside and c.name.startswith(RUN_PREFIX)]
    return sorted(merges + singles)


def with_rewrites(groups: list[tuple[int, int]], items: list[Container], old: set[int]) -> list[tuple[int, int]]:
    """``groups`` (inclusive index ranges into ``items``, sorted, disjoint) grown so that every
    item in ``old`` (a pack of an older pack version) is written again: a group next to it takes
    it in, else it joins its contiguous neighbour (the next one first). A pack without a
    contiguous neighbour stays as it is (readable; rewritten once something joins it)."""
    out = [list(g) for g in groups]
    for k in sorted(old):
        if any(i <= k <= j for i, j in out):
            continue
        after = k + 1 < len(items) and items[k].last + 1 == items[k + 1].first
        before = k > 0 and items[k - 1].last + 1 == items[k].first
        if after:
            g = next((g for g in out if g[0] == k + 1), None)
            if g is not None:
                g[0] = k
            else:
                out.append([k, k + 1])
        elif before:
            g = next((g for g in out if g[1] == k - 1), None)
            if g is not None:
                g[1] = k
            else:
                out.append([k - 1, k])
        out.sort()
        merged: list[list[int]] = []
        for g in out:  # two groups that now touch become one
            if merged and g[0] <= merged[-1][1] + 1 and g[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], g[1])
            else:
                merged.append(g)
        out = merged
    return [(i, j) for i, j in out]
