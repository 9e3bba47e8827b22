"""``compact``: pack sealed log segments, merge packs geometrically, tend the index and prune old
``lost-found/`` entries, online (like ``git gc``), on format 3 (``docs/FORMAT.md``).

Safety rests on one rule: a file is removed only when a published pack holds its records. A
pack is written under a temp name in ``packs/`` from records checked one by one (position, event
hash, chain continuing from the previous container), fsynced, read back (every block compared
with what went in), linked under its final name, and ``packs/`` fsynced; only then are the
segments or packs it replaces removed, in position order and a segment's ``.seg`` before its
``.idx`` (readers and the writer rely on that order to notice), and their folder fsynced.
Sealed segments and packs are immutable, so what is removed is a copy of bytes now in a verified
pack. A crash at any point leaves every record in a segment or a pack, plus at worst a temp pack
(cleared by the next run) or inputs beside the pack that replaced them (readers use either, the
next run removes the inputs after verifying the pack).
"""

from __future__ import annotations

import math
import os

from ... import fileio, layout
from ...errors import InvalidArgument
from ...format import pack as packfmt
from ...report import Report
from ...synced import decode as decode_synced
from ..recovery.common import maintenance_lock, require_store
from .run import Compaction

__all__ = ["DEFAULT_PRUNE_DAYS", "compact"]

DEFAULT_PRUNE_DAYS = 30.0


def compact(path: str | os.PathLike[str], *, prune_age: float = DEFAULT_PRUNE_DAYS, dry_run: bool = False,
            lock_timeout: float = 30.0, block_bytes: int = packfmt.BLOCK_BYTES, progress: bool = False,
            durable: bool = True) -> Report:
    """Compact the store at ``path`` online; return the report (exit code 0, or 4 when something
    was found damaged and left alone).

    Steps, under ``locks/maintenance.lock`` (waiting up to ``lock_timeout`` seconds; ``-1``
    waits forever), while applications keep appending and reading:

    1. remove what an interrupted compaction left: temp packs of dead processes, segments and
       packs a published pack already holds (after verifying that pack);
    2. pack each run of consecutive sealed segments into Zstandard-compressed blocks of at most
       ``block_bytes`` uncompressed bytes, together with the small packs it joins: packs are
       merged geometrically, like ``git repack --geometric=2`` (from the newest pack back, small
       packs are merged until each pack is at least twice the size of the next newer one), in
       one write per new pack; then the segments and packs it replaces are removed. The active
       segment is never read for this, nor sealed: the writer seals it when it rolls, and the
       next compaction packs it;
    3. merge again on the packs' real sizes (the plan guessed a run's compressed size);
    4. the index's current generation: ``PRAGMA optimize``, a WAL checkpoint that truncates the
       WAL, and ``VACUUM`` when SQLite's freelist holds a quarter or more of its pages;
    5. delete ``lost-found/`` entries set aside more than ``prune_age`` days ago (each one named
       in the report). ``lost-found/`` is where repairs put bytes aside, the last place they go,
       so pruning deletes; ``prune_age=0`` disables pruning.

    ``dry_run`` reports what would be done and changes nothing. ``progress`` shows bars on a
    terminal. ``durable=False`` skips the fsyncs (tests and benchmarks only).
    """
    if isinstance(prune_age, bool) or not isinstance(prune_age, (int, float)) or not math.isfinite(prune_age) \
            or prune_age < 0:
        raise InvalidArgument(f"prune_age must be a number of days >= 0 (0 disables pruning), got {prune_age!r}")
    if isinstance(block_bytes, bool) or not isinstance(block_bytes, int) or not 4096 <= block_bytes <= 64 << 20:
        raise InvalidArgument(f"block_bytes must be an int in 4096..{64 << 20}, got {block_bytes!r}")
    # Refuse a missing path, an empty or foreign folder before anything is written (the
    # maintenance lock file included); then let the engine check FORMAT.
    root = require_store(path)
    layout.open_store(root, False, None, durable)
    lay = layout.Layout(root)
    report = Report("compact", root)
    with maintenance_lock(root, lock_timeout):
        job = Compaction(lay, report, dry_run=dry_run, prune_age=float(prune_age), block_bytes=block_bytes,
                         durable=durable, show_progress=progress)
        try:
            job.run()
        finally:
            job.close()
    report.head = _head(lay)
    return report.finish()


def _head(lay: layout.Layout) -> int:
    """The synced position (what readers see), 0 when unknown."""
    try:
        state = decode_synced(fileio.read_small(lay.synced_file, 4096))
    except OSError:
        return 0
    return state.position if state is not None else 0
