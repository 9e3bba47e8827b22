"""Pruning ``lost-found/``: entries older than the prune age are deleted, each one reported.

``lost-found/`` is where recovery, repair and restore set aside bytes the store no longer uses
(torn tails, damaged files, stale temp files), so that nothing leaves the store silently. It is
the end of the line: there is nowhere further to move an entry to, so pruning deletes it. That
is the user's explicit policy (``--prune-age``), and every entry deleted is named in the report.
"""

from __future__ import annotations

import calendar
import os
import re
import time

from ... import fileio

SECONDS_PER_DAY = 86400.0
_STAMP_RE = re.compile(r"\A(\d{8}T\d{6}Z)-")


def entry_time(path: str, name: str) -> float:
    """When an entry was set aside: the UTC stamp that :func:`kroniko_ops.layout.set_aside` puts
    at the start of its name, else (an entry made by hand) its modification time."""
    m = _STAMP_RE.match(name)
    if m is not None:
        try:
            return float(calendar.timegm(time.strptime(m.group(1), "%Y%m%dT%H%M%SZ")))
        except ValueError:
            pass
    return os.lstat(path).st_mtime


def old_entries(folder: str, max_age_days: float, now: float | None = None) -> list[tuple[str, float]]:
    """``(name, age in days)`` of the entries of ``folder`` older than ``max_age_days``, oldest first."""
    now = time.time() if now is None else now
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        try:
            age = (now - entry_time(os.path.join(folder, name), name)) / SECONDS_PER_DAY
        except FileNotFoundError:
            continue
        if age > max_age_days:
            out.append((name, age))
    return sorted(out, key=lambda e: -e[1])


def describe(path: str) -> str:
    """The first line of an entry's ``NOTE.txt`` (what was set aside and why), or ''."""
    try:
        note = fileio.read_small(os.path.join(path, "NOTE.txt"), 64 * 1024)
    except OSError:
        return ""
    return note.decode("utf-8", "replace").strip().splitlines()[0][:200] if note.strip() else ""


def remove_entry(path: str) -> int:
    """Delete a file, a symlink (never what it points to) or a folder tree; return the bytes freed."""
    freed = 0
    if not os.path.isdir(path) or os.path.islink(path):
        freed = os.lstat(path).st_size
        fileio.unlink(path)
        return freed
    for folder, dirs, files in os.walk(path, topdown=False, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            p = os.path.join(folder, name)
            freed += os.lstat(p).st_size
            fileio.unlink(p)
        # fileio has no rmdir (no fault injection point here): removing an empty folder
        # loses no bytes, and a crash before it leaves an empty folder the next run removes.
        os.rmdir(folder)
    return freed
