"""When a replica merges the byte ranges of a segment into one object, so that its manifest stays
small however many rounds shipped the segment.

Every round that finds new records past the replica's part of a segment uploads them as one more
range. Left alone, a 16 MiB segment written by one small batch a second would be named by some
50,000 ranges, and every manifest (uploaded each round) would name them all. Small ranges are
merged like a size-tiered LSM tree: a range's level is how many times ``FANOUT`` its size is
``UNIT``; when the last ``FANOUT`` ranges are none above the level of the newest of them, and
that level is below ``TOP``, they are uploaded again as one range. Ranges of ``UNIT * FANOUT **
TOP`` bytes (256 KiB) and more are never merged, so they are uploaded once; the small ranges just
before one are merged with each other. A segment sealed with more than ``SEALED_MAX`` ranges (a
safety valve; the rules above keep a 16 MiB segment to about 70) is uploaded again whole. Small
increments so cost a few uploads of each byte (one per level they climb: about 3 to 6 times,
measured), large ones one upload.
"""

from __future__ import annotations

from collections.abc import Sequence

FANOUT = 8
UNIT = 4096  # bytes: ranges under UNIT * FANOUT (32 KiB) are level 0
TOP = 2  # ranges of this level (256 KiB) and up are never merged while the segment is active
SEALED_MAX = 64  # a sealed segment named by more ranges is uploaded again as one


def level(size: int) -> int:
    """The tier of a range of ``size`` bytes."""
    lvl, cap = 0, UNIT * FANOUT
    while size >= cap:
        lvl, cap = lvl + 1, cap * FANOUT
    return lvl


def to_merge(sizes: Sequence[int], sealed: bool) -> tuple[int, int] | None:
    """Which of the segment's ranges (their ``sizes``, in file order) to upload again as one
    range now, as a slice ``(i, j)``; None for none."""
    n = len(sizes)
    if sealed and n > SEALED_MAX:
        return 0, n
    if n < 2:
        return None
    top = level(sizes[-1])
    if top >= TOP:
        # A large range ends the segment: the small ones just before it would stay apart for
        # good, as nothing after it can merge with them. Merge them (not it) now.
        i = n - 1
        while i > 0 and level(sizes[i - 1]) < TOP:
            i -= 1
        return (i, n - 1) if n - 1 - i >= 2 else None
    if n >= FANOUT and max(map(level, sizes[-FANOUT:])) <= top:
        return n - FANOUT, n
    return None
