"""``stats``: counts and sizes of a store, like ``git count-objects -v``."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from ..format import pack as packfmt
from ..format import segment as segfmt
from ..layout import TMP_PREFIX, Layout
from ..store import EventStore
from .compact.plan import Container, live_packs


@dataclass
class PackStats:
    """One pack: its name, positions, events, bytes on disk, pack version, and its compression
    ratio (its bytes over those of the same records in log segments)."""

    name: str
    first: int
    last: int
    events: int
    bytes: int
    version: int
    ratio: float

    def text(self) -> str:
        """One line for people."""
        return (f"{self.name}: {self.events:,} events, {self.bytes:,} bytes, {self.ratio:.3f}x their records "
                f"(pack version {self.version})")


@dataclass
class StatsReport:
    """What a store holds and how much disk it takes."""

    path: str
    head: int
    segments: int
    sealed_segments: int
    segment_bytes: int
    segment_events: int
    packs: int
    packed_events: int
    pack_bytes: int
    index_bytes: int
    index_checkpoint: int
    index_terms: int
    temp_files: int
    lost_found_entries: int
    pack_files: list[PackStats] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """The report as a plain dict (for JSON and for printing)."""
        return asdict(self)


def _size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0  # removed while we looked (compaction)


def stats(path: str) -> StatsReport:
    """Count the events in segments and packs, the index and set-aside entries of ``path``."""
    with EventStore(path, create=False) as store:
        lay = Layout(store.path)
        head = store.head()
        checkpoint = store.index.checkpoint()[0]
        terms = store.index.counts()["terms"]
    segments = seg_bytes = temps = 0
    idx: set[int] = set()
    segs: set[int] = set()
    for name in os.listdir(lay.log_dir):
        parsed = segfmt.parse_name(name)
        if parsed is None:
            temps += name.startswith(TMP_PREFIX)
            continue
        (segs if parsed[1] == "seg" else idx).add(parsed[0])
        segments += parsed[1] == "seg"
        seg_bytes += _size(os.path.join(lay.log_dir, name)) if parsed[1] == "seg" else 0
    pack_bytes = 0
    details: list[PackStats] = []
    listed: list[Container] = []
    for name in sorted(os.listdir(lay.packs)) if os.path.isdir(lay.packs) else ():
        rng = packfmt.parse_name(name)
        if rng is None:
            temps += name.startswith(TMP_PREFIX)
            continue
        size = _size(os.path.join(lay.packs, name))
        pack_bytes += size
        listed.append(Container(rng[0], rng[1], size, name))
        details.append(_pack_stats(os.path.join(lay.packs, name), name, rng, size))
    # A compaction that died before removing its inputs leaves packs another pack holds whole
    # (and offset indexes of segments already packed): counted on disk, not as events twice.
    live, _held = live_packs(listed)
    packs, packed, sealed = len(live), sum(p.last - p.first + 1 for p in live), len(idx & segs)
    index_bytes = sum(_size(os.path.join(lay.index, n)) for n in os.listdir(lay.index))
    lost = len(os.listdir(lay.lost_found)) if os.path.isdir(lay.lost_found) else 0
    return StatsReport(store.path, head, segments, sealed, seg_bytes, max(0, head - packed), packs, packed,
                       pack_bytes, index_bytes, checkpoint, terms, temps, lost, details)


def _pack_stats(path: str, name: str, rng: tuple[int, int], size: int) -> PackStats:
    """What the table of the pack at ``path`` says (version 0 and ratio 0 when it does not open:
    ``fsck`` names the damage)."""
    try:
        with packfmt.PackReader(path) as reader:
            return PackStats(name, rng[0], rng[1], reader.count, size, reader.version,
                             round(size / max(1, reader.raw_bytes), 4))
    except (packfmt.PackError, OSError):
        return PackStats(name, rng[0], rng[1], rng[1] - rng[0] + 1, size, 0, 0.0)
