"""Pure planning helpers of ``compact``: ages, uncovered ranges, and which packs to merge."""

from __future__ import annotations

import math
import re
from itertools import pairwise

from ..errors import InvalidArgument

_AGE_RE = re.compile(r"\A(\d+(?:\.\d+)?)\s*([smhdw]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """Seconds in an age like ``2w``, ``3d``, ``12h``, ``30m``, ``45s``, ``90`` (seconds), ``0``
    or ``now`` (no grace), or ``never`` (infinity). Raises :class:`InvalidArgument`."""
    value = text.strip().lower()
    if value == "now":
        return 0.0
    if value == "never":
        return math.inf
    m = _AGE_RE.match(value)
    if not m:
        raise InvalidArgument(
            f"invalid age {text!r}: use a number with a unit s, m, h, d or w (e.g. 2w, 3d, 12h), "
            "0, now or never"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


def events(n: int) -> str:
    """``1 event``, ``2 events``."""
    return f"{n} event{'' if n == 1 else 's'}"


def describe_age(seconds: float) -> str:
    """The shortest exact spelling of an age in :func:`parse_age`'s units (``2w``, ``36h``)."""
    if seconds == math.inf:
        return "never"
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def uncovered(covered: list[tuple[int, int]], head: int) -> list[tuple[int, int]]:
    """The ranges of ``1..head`` outside the sorted disjoint ``covered`` ranges."""
    out: list[tuple[int, int]] = []
    pos = 1
    for a, b in covered:
        if a > head:
            break
        if a > pos:
            out.append((pos, a - 1))
        pos = max(pos, b + 1)
    if pos <= head:
        out.append((pos, head))
    return out


def plan_merges(ranges: list[tuple[int, int]], sizes: list[int], max_packs: int,
                max_bytes: int) -> list[tuple[int, int]]:
    """Which adjacent packs to merge, as index ranges ``(i, j)`` into ``ranges`` (sorted,
    disjoint) whose files take ``sizes`` bytes.

    Nothing while there are at most ``max_packs`` packs. Past that, first a geometric roll-up
    like ``git repack --geometric=2``: from the newest pack back, a group grows while the next
    older pack is less than twice the group's size. So a pack is at least twice the size of all
    newer ones together, each event is rewritten O(log n) times over the store's life, and the
    number of packs stays logarithmic in the store's size. If that still leaves more than
    ``max_packs``, the smallest adjacent pairs are merged until it does not. A group is always
    contiguous in positions and stays under ``max_bytes`` (full packs are never rewritten).
    """
    if len(ranges) <= max_packs:
        return []
    groups: list[list[int]] = []  # [i, j, bytes], oldest first
    j = len(ranges) - 1
    while j >= 0:
        i, total = j, sizes[j]
        while i > 0 and sizes[i - 1] < 2 * total and _joinable(ranges, i - 1, total + sizes[i - 1], max_bytes):
            i -= 1
            total += sizes[i]
        groups.append([i, j, total])
        j = i - 1
    groups.reverse()
    while len(groups) > max_packs:
        pairs = [(a[2] + b[2], k) for k, (a, b) in enumerate(pairwise(groups))
                 if _joinable(ranges, a[1], a[2] + b[2], max_bytes)]
        if not pairs:
            break
        total, k = min(pairs)
        groups[k : k + 2] = [[groups[k][0], groups[k + 1][1], total]]
    return [(i, j) for i, j, _total in groups if i < j]


def _joinable(ranges: list[tuple[int, int]], i: int, total: int, max_bytes: int) -> bool:
    """Whether pack ``i`` and the next one may share a merged pack of ``total`` bytes."""
    return total <= max_bytes and ranges[i][1] + 1 == ranges[i + 1][0]
