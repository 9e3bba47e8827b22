"""The loose files compaction did not pack: copies of packed events (left when a compaction died
between publishing a pack and removing the files it replaced) are removed once they are proven
byte-identical to the packed event; dangling events (no log line names them) older than the
prune age are set aside into ``lost-found/``. Committed events no pack holds yet are left alone.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import TYPE_CHECKING

from .. import fileio, layout, locking
from ..log import iter_lines, read_line
from ..packs import merge_ranges
from .compact_plan import describe_age, uncovered

if TYPE_CHECKING:
    from .compact import _Compaction

PRUNE_LOCK_TIMEOUT = 30.0


def _covered(ranges: list[tuple[int, int]], pos: int) -> bool:
    return any(a <= pos <= b for a, b in ranges)


def _scan_ids(fd: int, wanted: set[str], first: int, last: int) -> dict[str, int]:
    """Positions of the ``wanted`` ids among log lines ``first..last``."""
    found: dict[str, int] = {}
    if wanted:
        for line in iter_lines(fd, first, last):
            if line.event_id in wanted:
                found[line.event_id] = line.position
    return found


def tidy_loose(job: _Compaction, head: int) -> None:
    """Classify the loose files that are not committed-and-unpacked events, and act on them."""
    lay, store = job.lay, job.store
    try:
        names = os.listdir(lay.events)
    except FileNotFoundError:
        return
    cands = {n[:-5] for n in names if n.endswith(".json") and not n.startswith(layout.TMP_PREFIX)}
    if not cands:
        return
    head_now = max(head, store.head())
    covered = merge_ranges(job.packs.ranges())
    for a, b in uncovered(covered, head_now):
        for line in iter_lines(job.fd, a, b):
            cands.discard(line.event_id)
    now = time.time()
    copies: list[tuple[str, int]] = []
    old: list[str] = []
    for eid in sorted(cands):
        pos = store.index.id_position(eid, head_now)
        if pos is not None and _covered(covered, pos):
            copies.append((eid, pos))
            continue
        try:
            age = now - os.lstat(lay.event_file(eid)).st_mtime
        except FileNotFoundError:
            continue
        if age >= job.prune_after:
            old.append(eid)
    dangling: list[str] = []
    if old:
        # The index may lag or be damaged: only the log itself proves that no line names an id.
        found = _scan_ids(job.fd, set(old), 1, head_now)
        copies.extend((eid, found[eid]) for eid in old if eid in found and _covered(covered, found[eid]))
        dangling = [eid for eid in old if eid not in found]
    mismatched = [eid for eid, pos in copies if not _drop_copy(job, eid, pos)]
    dangling.extend(eid for eid in mismatched if _age(lay.event_file(eid), now) >= job.prune_after)
    if dangling:
        _prune(job, sorted(dangling), head_now)


def _age(path: str, now: float) -> float:
    try:
        return now - os.lstat(path).st_mtime
    except FileNotFoundError:
        return -1.0


def _drop_copy(job: _Compaction, eid: str, pos: int) -> bool:
    """Remove the loose copy of the packed event at ``pos`` if it is byte-identical to the packed
    bytes and to the log's hash; return False when it is not such a copy."""
    path = job.lay.event_file(eid)
    line = read_line(job.fd, pos)
    if line.event_id != eid:
        return True  # the index is wrong about this id; leave the file for a later run
    try:
        raw = fileio.read_file(path)
    except FileNotFoundError:
        return True
    if hashlib.sha256(raw).hexdigest() != line.event_hash or job.packs.get(pos) != raw:
        return False
    what = f"a loose copy of the packed event at position {pos} (an interrupted compaction)"
    job.note("loose-duplicate", path, f"removed {what}", f"would remove {what}", pos)
    if not job.dry_run:
        try:
            fileio.unlink(path)
        except FileNotFoundError:
            pass
        job.counts["loose_copies_removed"] += 1
    return True


def _prune(job: _Compaction, dangling: list[str], head: int) -> None:
    """Set the dangling events aside, deciding under the append lock so that no append commits
    one of them in between."""
    lay = job.lay
    age = describe_age(job.prune_after)
    if job.dry_run:
        for eid in dangling:
            job.note("dangling-event", lay.event_file(eid), "",
                     f"would set aside into lost-found: no log line names it and it is older than {age}")
        return
    with locking.held(lay.append_lock, PRUNE_LOCK_TIMEOUT, "append"):
        now_head = job.store.head()
        if now_head > head:
            named = _scan_ids(job.fd, set(dangling), head + 1, now_head)
            dangling = [eid for eid in dangling if eid not in named]
        paths = [lay.event_file(eid) for eid in dangling if os.path.exists(lay.event_file(eid))]
        if not paths:
            return
        folder = layout.set_aside(
            lay.root, "dangling",
            f"Dangling events: event files that no log line names, older than {age} when compact "
            "ran. An append wrote them and then failed or died before its commit, so none was ever "
            "acknowledged. Kept here in case someone wants them.",
            move=paths, durable=job.store.durable)
    for path in paths:
        job.note("dangling-event", path, f"set aside into {os.path.relpath(folder, lay.root)}: no log line "
                 f"names it and it is older than {age}", "")
    job.counts["dangling_set_aside"] += len(paths)
