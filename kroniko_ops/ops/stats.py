"""``stats``: counts and sizes of a store, like ``git count-objects -v``."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from ..layout import TMP_PREFIX, Layout
from ..store import EventStore


@dataclass
class StatsReport:
    """What a store holds and how much disk it takes."""

    path: str
    head: int
    loose_events: int
    loose_bytes: int
    packed_events: int
    packs: int
    pack_bytes: int
    log_bytes: int
    index_files: int
    index_bytes: int
    index_checkpoint: int
    temp_files: int
    lost_found_entries: int

    def as_dict(self) -> dict[str, object]:
        """The report as a plain dict (for JSON and for printing)."""
        return asdict(self)


def _walk(folder: str) -> tuple[int, int]:
    count = size = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
                count += 1
            except FileNotFoundError:
                continue  # removed while we walked (compaction)
    return count, size


def stats(path: str) -> StatsReport:
    """Count loose and packed events, index files and set-aside entries of the store at ``path``."""
    with EventStore(path, create=False) as store:
        lay = Layout(store.path)
        head = store.head()
        checkpoint = store.index.read_checkpoint().written
        packed_events = store.packs.count()
    loose = loose_bytes = temps = 0
    with os.scandir(lay.events) as it:
        for entry in it:
            if entry.name.endswith(".json"):  # an id may itself start with ".tmp-"
                loose += 1
                try:
                    loose_bytes += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    loose -= 1
            elif entry.name.startswith(TMP_PREFIX):
                temps += 1
    packs = pack_bytes = 0
    if os.path.isdir(lay.packs):
        for name in os.listdir(lay.packs):
            full = os.path.join(lay.packs, name)
            if name.endswith(".pack"):
                packs += 1
            if not name.startswith(TMP_PREFIX) and os.path.isfile(full):
                pack_bytes += os.path.getsize(full)
    index_files, index_bytes = _walk(lay.index)
    lost = len(os.listdir(lay.lost_found)) if os.path.isdir(lay.lost_found) else 0
    return StatsReport(store.path, head, loose, loose_bytes, packed_events, packs, pack_bytes, os.path.getsize(lay.log),
                       index_files, index_bytes, checkpoint, temps, lost)
