"""References between the log and ``events/``, both ways, like ``git fsck``: events the log names
that are missing, events no log line names (``dangling-event``) and ids named twice
(``log-duplicate-id``).

The fast path compares two digests: the ids of the log lines whose events are loose, and the
names in ``events/``. Equal means every loose file is named exactly once. Only when they differ
(or packs are involved, or the quick check must find missing files) does :func:`reconcile` spill
``(id, position)`` rows and the folder's names to disk by id hash and compare them partition by
partition, so memory never holds all ids.
"""

from __future__ import annotations

import os
import time
from itertools import islice

from ..codec import ID_RE
from ..log import LINE_LEN, BadLine, decode_line, find_head
from ..packs import PackSet
from .checks_common import DANGLING_PRUNE_AGE, MASK64, Context, Digest, age_of, describe_age, stale_temp
from .checks_spill import Spill

NAMED, LATE, FILE = 0, 1, 2


def list_events(ctx: Context) -> Digest:
    """Walk ``events/``: sum the event ids found, report stale temp files and stray files."""
    digest = Digest()
    folder = ctx.layout.events
    if not os.path.isdir(folder):
        return digest
    now = time.time()
    total = count = 0
    with os.scandir(folder) as it:
        while True:
            chunk = list(islice(it, 4096))
            if not chunk:
                break
            # A name that is not a valid id is caught by the digest: no log line can name it.
            ids = [e.name[:-5] for e in chunk
                   if e.name[-5:] == ".json" and e.is_file(follow_symlinks=False)]
            total += sum(map(hash, ids))
            count += len(ids)
            if len(ids) < len(chunk):
                _others(ctx, chunk, now)
    digest.total, digest.count = total & MASK64, count
    return digest


def _others(ctx: Context, chunk: list[os.DirEntry[str]], now: float) -> None:
    """Report the entries of ``events/`` that are not event files."""
    for entry in chunk:
        name = entry.name
        if name[-5:] == ".json" and entry.is_file(follow_symlinks=False):
            continue
        stale = stale_temp(name, entry.path, now)
        if stale is not None:
            if stale:
                ctx.add("stale-temp-file", "warning", f"events/{name}",
                        "a temp file left by a writer that is gone; recovery sets it aside")
            continue
        ctx.add("stray-file", "warning", f"events/{name}",
                "not an event file (events/<id>.json) nor a temp file; --repair moves it to lost-found/")


def _named_lines(fd: int, first: int, last: int) -> list[tuple[int, str]]:
    """``(line, id)`` of the checksum-valid lines in ``first..last``, for one chunk at a time."""
    out = []
    raw = os.pread(fd, (last - first + 1) * LINE_LEN, (first - 1) * LINE_LEN)
    for k in range(len(raw) // LINE_LEN):
        try:
            line = decode_line(raw[k * LINE_LEN : (k + 1) * LINE_LEN])
        except BadLine:
            continue
        out.append((first + k, line.event_id))
    return out


def _spill_lines(spill: Spill, fd: int, first: int, last: int, kind: int) -> None:
    pos = first
    while pos <= last:
        end = min(last, pos + 4095)
        for lineno, eid in _named_lines(fd, pos, end):
            spill.put(eid, [kind, eid, lineno])
        pos = end + 1


def reconcile(ctx: Context, fd: int, last_named: int, find_missing: bool, log_damaged: bool = False) -> None:
    """The exact comparison of the log's ids (lines ``1..last_named``) with ``events/``.

    Lines appended after the snapshot (up to the head seen after listing the folder) name their
    events too, so an event committed during the check is not dangling. ``find_missing``: also
    report named events that are neither in the folder nor packed (the quick check, which did
    not open them). ``log_damaged``: some lines could not be read, and may name what looks dangling.
    """
    folder = ctx.layout.events
    with Spill(2 * max(last_named, 1)) as spill:
        _spill_lines(spill, fd, 1, last_named, NAMED)
        if os.path.isdir(folder):
            with os.scandir(folder) as it:
                for entry in it:
                    name = entry.name
                    if name[-5:] == ".json" and entry.is_file(follow_symlinks=False):
                        if ID_RE.match(name[:-5]):
                            spill.put(name[:-5], [FILE, name[:-5], 0])
                        else:
                            ctx.add("stray-file", "warning", f"events/{name}", "not an event file: its name "
                                    "is not a valid event id; --repair moves it to lost-found/")
        # Taken after the listing: every event committed before the listing is named by now.
        late = find_head(fd).head
        _spill_lines(spill, fd, last_named + 1, late, LATE)
        packs = PackSet(ctx.layout.packs)
        now = time.time()
        for rows in spill.partitions():
            _compare(ctx, rows, find_missing, packs, now, log_damaged)


def _compare(ctx: Context, rows: list[list[object]], find_missing: bool, packs: PackSet, now: float,
             log_damaged: bool) -> None:
    named: dict[str, list[int]] = {}
    late: set[str] = set()
    files: list[str] = []
    for kind, eid, pos in rows:
        assert isinstance(eid, str) and isinstance(pos, int)
        if kind == NAMED:
            named.setdefault(eid, []).append(pos)
        elif kind == LATE:
            late.add(eid)
        else:
            files.append(eid)
    for eid in sorted(named):
        positions = named[eid]
        if len(positions) > 1:
            for pos in sorted(positions)[1:]:
                ctx.add("log-duplicate-id", "error", "log/append.log",
                        f"event id {eid} is named at positions {min(positions)} and {pos}; ids are unique "
                        "in a store: restore the log from a backup", pos)
    present = set(files)
    if find_missing:
        for eid in sorted(set(named) - present):
            pos = min(named[eid])
            if not _packed(packs, pos) and not os.path.exists(ctx.layout.event_file(eid)):
                ctx.add("missing-event", "error", f"events/{eid}.json",
                        f"position {pos} names event {eid}, which is neither loose nor packed; restore it "
                        "from a backup", pos)
    for eid in sorted(present - set(named) - late):
        age = age_of(ctx.layout.event_file(eid), now)
        if age is None:
            continue  # removed meanwhile (a rejected append cleaning up)
        if log_damaged:
            ctx.add("dangling-event", "warning", f"events/{eid}.json",
                    f"no readable log line names this event (age {describe_age(age)}), but the log has damaged "
                    "lines that may: keep it for the restore (--repair leaves it alone)")
        elif age < DANGLING_PRUNE_AGE:
            ctx.add("dangling-event", "info", f"events/{eid}.json",
                    f"no log line names this event (age {describe_age(age)}); it may belong to an append "
                    "in progress, or to one that failed or was cut")
        else:
            ctx.add("dangling-event", "warning", f"events/{eid}.json",
                    f"no log line names this event (age {describe_age(age)}): left by an append that "
                    "never committed; --repair or compact sets it aside into lost-found/")


def _packed(packs: PackSet, pos: int) -> bool:
    try:
        return packs.get(pos) is not None
    except NotImplementedError:
        return False
