"""The pure planning of compaction: geometric merges and the plan over segments and packs."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from kroniko_ops.ops.compact.plan import Container, geometric_merges, live_packs, plan


def packs_of(sizes: list[int], gaps: list[bool] | None = None) -> list[Container]:
    """Packs of ten positions each, in order, with the given sizes (a gap of ten positions before
    pack ``k`` when ``gaps[k]``)."""
    out, pos = [], 1
    for k, size in enumerate(sizes):
        if gaps and gaps[k]:
            pos += 10
        out.append(Container(pos, pos + 9, size, f"p{k}"))
        pos += 10
    return out


def apply(packs: list[Container], merges: list[tuple[int, int]]) -> list[list[Container]]:
    """The packs after the merges, as groups of the input packs."""
    out, k = [], 0
    for i, j in merges:
        out += [[p] for p in packs[k:i]]
        out.append(packs[i:j + 1])
        k = j + 1
    return out + [[p] for p in packs[k:]]


@given(st.lists(st.integers(1, 10_000), max_size=30), st.lists(st.booleans(), max_size=30))
def test_merged_packs_form_a_geometric_progression_and_only_contiguous_packs_merge(sizes: list[int],
                                                                                   gaps: list[bool]) -> None:
    packs = packs_of(sizes, gaps + [False] * len(sizes))
    merges = geometric_merges(packs)
    assert all(i < j for i, j in merges)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(merges))  # disjoint, in order
    groups = apply(packs, merges)
    for g in groups:  # a merge never spans a gap in positions
        assert all(a.last + 1 == b.first for a, b in itertools.pairwise(g))
    for older, newer in itertools.pairwise(groups):
        if older[-1].last + 1 == newer[0].first:  # the rule holds between contiguous packs
            assert sum(p.size for p in older) >= 2 * sum(p.size for p in newer)


@given(st.lists(st.integers(1, 10_000), max_size=30))
def test_packs_already_geometric_are_left_alone(sizes: list[int]) -> None:
    geometric = sorted(sizes, reverse=True)
    for k in range(len(geometric) - 2, -1, -1):
        geometric[k] = max(geometric[k], 2 * geometric[k + 1])
    assert geometric_merges(packs_of(geometric)) == []


def test_a_new_small_pack_rolls_up_only_as_far_as_needed() -> None:
    assert geometric_merges(packs_of([1000, 100, 20, 30])) == [(2, 3)]  # 100 >= 2 * 50: 100 stays
    assert geometric_merges(packs_of([1000, 100, 40, 30])) == [(1, 3)]  # 100 < 2 * 70: 100 joins
    assert geometric_merges(packs_of([8, 4, 2, 1, 1])) == [(0, 4)]  # a carry all the way, like a binary counter
    assert geometric_merges(packs_of([1_000_000, 10, 10])) == [(1, 2)]  # the big old pack stays


def test_the_plan_groups_consecutive_sealed_segments_and_spots_leftovers() -> None:
    segs = [Container(1, 10, 1, "s1"), Container(11, 20, 1, "s11"), Container(21, 30, 1, "s21"),
            Container(31, 40, 1, "s31"), Container(51, 60, 1, "s51"), Container(61, 70, 1, "s61")]
    packs = [Container(1, 20, 5, "a"), Container(1, 10, 3, "old"), Container(41, 50, 2, "b")]
    p = plan(segs, packs)
    assert [c.name for c in p.live_packs] == ["a", "b"]
    assert [(s.name, h.name) for s, h in p.packed_segments] == [("s1", "a"), ("s11", "a")]
    assert [(o.name, h.name) for o, h in p.superseded_packs] == [("old", "a")]
    assert [[s.name for s in run] for run in p.runs] == [["s21", "s31"], ["s51", "s61"]]
    assert p.overlaps == []


def test_a_pack_or_segment_overlapping_a_live_pack_in_part_is_left_alone() -> None:
    segs = [Container(15, 25, 1, "s15")]
    packs = [Container(1, 20, 5, "a"), Container(10, 30, 5, "c")]
    p = plan(segs, packs)
    assert [c.name for c in p.overlaps] == ["c", "s15"]
    assert p.runs == [] and p.superseded_packs == [] and p.packed_segments == []


def test_the_inputs_of_a_published_merge_are_superseded_by_it() -> None:
    packs = [Container(1, 50, 1, "a"), Container(51, 100, 1, "b"), Container(1, 100, 1, "m")]
    used, others = live_packs(packs)
    assert [p.name for p in used] == ["m"] and [p.name for p in others] == ["a", "b"]
    assert [(o.name, h.name) for o, h in plan([], packs).superseded_packs] == [("a", "m"), ("b", "m")]
