"""Which manifests and objects a replica keeps.

The log is append-only, so the newest manifest restores every batch from the first to its head;
older manifests are the replica as it was (before a compaction replaced segments by a pack, or
small packs by a bigger one) and name objects the newest no longer does. A manifest is
**redundant** when the next kept one names every object it names: it is deleted at once (this
keeps one manifest per change of the object set, not one per round). With ``--retain D`` a
manifest is also deleted once it was superseded more than D ago, and then every object no kept
manifest names (superseded segments and packs, leftovers of killed runs) is deleted.

Manifests go first, objects after: a manifest never names a deleted object. Before deleting
objects the manifests are listed again, so one written meanwhile by another process keeps
what it names; a manifest that does not parse stops object deletion altogether.
"""

from __future__ import annotations

import itertools
import re

from ...errors import InvalidArgument
from .manifest import MANIFESTS, MAX_MANIFEST_BYTES, ReplicaManifestError, manifest_key, manifest_seq, parse
from .ship import History, Replicator

_DURATION = re.compile(r"\A(\d+(?:\.\d+)?)([smhdw]?)\Z")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit ``s``, ``m``, ``h``, ``d`` or ``w``
    (``90s``, ``36h``, ``7d``); raises InvalidArgument (exit 2)."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise InvalidArgument(f"--retain {text!r}: expected a duration such as 90s, 30m, 36h, 7d or 2w")
    return float(m.group(1)) * _UNIT[m.group(2)]


def plan(history: dict[int, History], now_us: int, retain_us: int | None) -> list[int]:
    """The manifests to delete: redundant ones, and with ``retain_us`` those whose successor
    (the next manifest present) was written longer ago than that. The newest is always kept."""
    seqs = sorted(history, reverse=True)
    drop: list[int] = []
    if not seqs:
        return drop
    nxt = seqs[0]
    for later, seq in itertools.pairwise(seqs):
        if history[seq].keys <= history[nxt].keys:
            drop.append(seq)
        elif retain_us is not None and history[later].created_us < now_us - retain_us:
            drop.append(seq)  # the replica left this state before the window began
        else:
            nxt = seq
    return drop


def prune(rep: Replicator, retain: float | None, now_us: int) -> tuple[int, int]:
    """Delete what :func:`plan` says, then (with ``retain``) the objects no manifest names;
    return how many manifests and objects were deleted."""
    drop = plan(rep.history, now_us, None if retain is None else int(retain * 1_000_000))
    for seq in sorted(drop):
        rep.remote.delete(manifest_key(seq))
        del rep.history[seq]
    if retain is None:
        return len(drop), 0
    for key in rep.remote.list(MANIFESTS):
        seq = manifest_seq(key)
        if seq is None or seq in rep.history:
            continue
        try:
            m = parse(rep.remote.get(key, MAX_MANIFEST_BYTES), seq)
        except ReplicaManifestError:
            return len(drop), 0  # cannot tell what it names: delete no object
        rep.history[seq] = History(m.created_us, m.keys())
    named = set().union(*(h.keys for h in rep.history.values()))
    doomed = sorted(k for k in rep.objects if k not in named)
    for key in doomed:
        rep.remote.delete(key)
        del rep.objects[key]
        rep.checked.discard(key)
    return len(drop), len(doomed)
