"""``prune``: keep the backups a retention policy names, and every base they need; delete the rest.

The policy is restic's ``forget``: ``keep_last`` newest backups, and the newest backup of each
of the last ``keep_daily`` days, ``keep_weekly`` ISO weeks and ``keep_monthly`` months that have
one (UTC, from the backups' names). A backup the policy keeps keeps its whole chain down to its
full backup: an incremental is useless without its bases. Every policy keeps the newest backup,
so ``latest`` never dangles. A backup whose manifest does not read, or whose chain is broken (a
base damaged or missing), is never deleted, nor is the base it names (it is reported: a person
decides). Each backup is deleted by renaming it to a temp name first, newest
first, so a killed prune leaves every remaining backup restorable and its leftovers are removed
by the next run. The set's lock is held throughout: no backup picks a base that prune deletes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime

from ... import fileio
from ...errors import InvalidArgument, StoreNotFound
from ...report import Report
from .sets import Entry, is_set, lock, scan, sweep
from .sink import remove_tree

_BUCKETS: dict[str, Callable[[datetime], str]] = {
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: t.strftime("%Y-%m"),
}


def keep_reasons(entries: list[Entry], *, keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0,
                 keep_monthly: int = 0) -> dict[str, list[str]]:
    """Why each backup the policy keeps is kept (name -> reasons), chains included."""
    good = [e for e in entries if e.restorable]
    reasons: dict[str, list[str]] = {}
    for e in reversed(good[-keep_last:] if keep_last else []):
        reasons.setdefault(e.name, []).append("last")
    for label, count in (("daily", keep_daily), ("weekly", keep_weekly), ("monthly", keep_monthly)):
        seen: list[str] = []
        for e in reversed(good):
            bucket = _BUCKETS[label](e.when)
            if len(seen) >= count:
                break
            if bucket not in seen:
                seen.append(bucket)
                reasons.setdefault(e.name, []).append(f"{label} {bucket}")
    if entries:  # whatever the policy: the newest backup (``latest`` names it) stays
        reasons.setdefault(entries[-1].name, []).append("newest")
    names = {e.name for e in entries}
    for e in entries:
        if e.manifest is not None and not e.restorable:
            # Its chain is broken (a base damaged or moved away): restoring that base, or putting
            # it back, makes it restorable again. A person decides; prune never does.
            reasons.setdefault(e.name, []).append(f"not restorable, left for a person: {e.problem}")
            oldest = next(x for x in entries if x.name == e.chain[0])
            ref = oldest.manifest.base if oldest.manifest is not None else None
            wanted = os.path.basename(os.path.normpath(ref.path)) if ref is not None else None
            if wanted in names and wanted != oldest.name:
                reasons.setdefault(wanted, []).append(f"named as base by {oldest.name}")
    by_name = {e.name: e for e in entries}
    for name in list(reasons):
        for base in by_name[name].chain[:-1]:
            reasons.setdefault(base, []).append(f"base of {name}")
    return reasons


def prune(root: str | os.PathLike[str], *, keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0,
          keep_monthly: int = 0, dry_run: bool = False, lock_timeout: float = 30.0) -> Report:
    """Delete from the backup set at ``root`` every backup that neither the policy nor a kept
    incremental needs; with ``dry_run`` only say so. Findings: ``prune-kept`` and
    ``prune-removed`` (info, one per backup), ``prune-incomplete`` (info: a backup whose manifest
    does not read, left alone)."""
    root = os.fspath(root)
    counts = {"keep_last": keep_last, "keep_daily": keep_daily, "keep_weekly": keep_weekly,
              "keep_monthly": keep_monthly}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"{key} must be an integer >= 0, got {value!r}")
    if not any(counts.values()):
        raise InvalidArgument("give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly "
                              "(without one, prune would delete every backup); nothing was deleted")
    if not os.path.isdir(root):
        raise StoreNotFound(f"no backup set at {root}")
    if not is_set(root):  # an empty folder too: nothing is written there, not even a lock file
        raise InvalidArgument(f"{root} is not a backup set (backups made by backup --into); nothing was deleted")
    report = Report("prune", root)
    with lock(root, lock_timeout):
        for path in [] if dry_run else sweep(root):
            report.add("backup-stale-temp", "info", path, "removed what an interrupted run left")
        entries = scan(root)
        reasons = keep_reasons(entries, keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly,
                               keep_monthly=keep_monthly)
        freed = removed = 0
        for e in reversed(entries):  # newest first: what stays is restorable at every moment
            if e.manifest is None:
                report.add("prune-incomplete", "info", e.name, f"left alone: {e.problem}")
            elif e.name in reasons:
                report.add("prune-kept", "info", e.name, f"kept ({', '.join(reasons[e.name])})")
            else:
                size = e.size
                if not dry_run:
                    _delete(root, e)
                removed += 1
                freed += size
                what = f"{e.kind} backup of head {e.manifest.head}, {size} bytes"
                report.add("prune-removed", "info", e.name, f"would remove: {what}" if dry_run else f"removed: {what}")
    report.head = max((e.manifest.head for e in entries if e.manifest is not None), default=0)
    report.figures.update(kept=len(entries) - removed, removed=removed, bytes_freed=freed, dry_run=dry_run,
                          backups=len(entries) - (0 if dry_run else removed))
    return report.finish()


def _delete(root: str, entry: Entry) -> None:
    """Rename the backup away first (a killed run never leaves half a backup under its name),
    then remove it."""
    tmp = os.path.join(root, f".tmp-prune-{entry.name}-{os.getpid()}-{os.urandom(4).hex()}")
    fileio.rename(entry.path, tmp)
    fileio.fsync_dir(root)
    remove_tree(tmp)
