"""Planning rules of compaction: ages, uncovered positions, which packs merge."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kroniko_ops import InvalidArgument
from kroniko_ops.ops.compact_plan import describe_age, parse_age, plan_merges, uncovered


@pytest.mark.parametrize(("text", "seconds"), [
    ("2w", 14 * 86400), ("3d", 3 * 86400), ("12h", 43200), ("30m", 1800), ("45s", 45), ("90", 90),
    ("0", 0), ("now", 0), ("1.5h", 5400), ("never", math.inf),
])
def test_ages(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "-1d", "2 weeks", "3x", "d", "1e3"])
def test_bad_ages_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid age"):
        parse_age(text)


@given(st.lists(st.integers(1, 5), max_size=12), st.integers(0, 70))
def test_uncovered_is_exactly_the_complement(lengths: list[int], head: int) -> None:
    covered, pos = [], 1
    for k, n in enumerate(lengths):
        if k % 2 == 0:
            covered.append((pos, pos + n - 1))
        pos += n
    out = uncovered(covered, head)
    held = {p for a, b in covered for p in range(a, b + 1)}
    assert [p for a, b in out for p in range(a, b + 1)] == [p for p in range(1, head + 1) if p not in held]


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=40), st.integers(1, 8), st.integers(1000, 5000))
def test_merge_plans_are_contiguous_capped_and_bring_the_count_down(sizes: list[int], max_packs: int,
                                                                     max_bytes: int) -> None:
    ranges = []
    pos = 1
    for n in sizes:
        ranges.append((pos, pos + n - 1))
        pos += n
    groups = plan_merges(ranges, sizes, max_packs, max_bytes)
    if len(sizes) <= max_packs:
        assert groups == []
        return
    last = -1
    for i, j in groups:
        assert last < i < j
        assert sum(sizes[i : j + 1]) <= max_bytes
        last = j
    merged = sorted([(i, j) for i, j in groups] + [(k, k) for k in range(len(sizes))
                                                  if not any(i <= k <= j for i, j in groups)])
    if len(merged) > max_packs:  # only when no two neighbours fit under the cap together
        totals = [sum(sizes[i : j + 1]) for i, j in merged]
        assert all(a + b > max_bytes for a, b in pairwise(totals))


def test_equal_small_packs_roll_up_into_one() -> None:
    ranges = [(k * 10 + 1, k * 10 + 10) for k in range(40)]
    assert plan_merges(ranges, [100] * 40, 32, 10**9) == [(0, 39)]


def test_a_big_old_pack_is_not_rewritten_for_a_few_small_ones() -> None:
    ranges = [(1, 1000)] + [(1000 + k, 1000 + k) for k in range(1, 34)]
    sizes = [100_000] + [100] * 33
    assert plan_merges(ranges, sizes, 32, 10**9) == [(1, 33)]


@pytest.mark.parametrize(("seconds", "text"), [(14 * 86400, "2w"), (3 * 86400, "3d"), (36 * 3600, "36h"),
                                               (90, "90s"), (0, "0s"), (math.inf, "never"), (120, "2m")])
def test_ages_are_described_in_the_units_they_are_given_in(seconds: float, text: str) -> None:
    assert describe_age(seconds) == text
    assert parse_age(text) == seconds
