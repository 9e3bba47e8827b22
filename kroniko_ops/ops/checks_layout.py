"""Layout checks: the ``FORMAT`` file, stale temp files and stray files outside ``events/`` and
``index/`` (those two folders are walked by their own checks)."""

from __future__ import annotations

import os
import time

from ..layout import FORMAT_LINE, parse_format
from .checks_common import Context, stale_temp

FORMAT_OK, FORMAT_MISSING, FORMAT_GARBLED, FORMAT_OTHER = "ok", "missing", "garbled", "other"
# MANIFEST.json: a backup folder is itself an openable store, with its manifest on top.
KNOWN_TOP = {"FORMAT": False, "events": True, "log": True, "index": True, "packs": True, "locks": True,
             "lost-found": True, "MANIFEST.json": False}  # name -> is a folder


def check_format(ctx: Context) -> str:
    """Report a missing or unreadable ``FORMAT``; return which case it is."""
    path = ctx.layout.format_file
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError:
        ctx.add("format-missing", "error", "FORMAT",
                "the FORMAT file is missing (the log looks like format 2); --repair writes a new one "
                "with default options")
        return FORMAT_MISSING
    except OSError as exc:
        raw = b""
        why = str(exc)
    else:
        try:
            parse_format(raw)
            return FORMAT_OK
        except (ValueError, UnicodeDecodeError) as exc:
            why = str(exc)
    first = raw.split(b"\n", 1)[0].strip()
    if first.startswith(b"kroniko-ops format ") and first != FORMAT_LINE.encode():
        ctx.add("format-unknown", "error", "FORMAT",
                f"this store says {first.decode('utf-8', 'replace')!r}; this kroniko-ops knows "
                f"{FORMAT_LINE!r} only and does not check or change it")
        return FORMAT_OTHER
    ctx.add("format-unknown", "error", "FORMAT",
            f"the FORMAT file is unreadable ({why}); --repair sets it aside and writes a new one with "
            "default options")
    return FORMAT_GARBLED


def check_layout(ctx: Context) -> None:
    """Report stale temp files and stray files at the top, in ``log/``, ``locks/`` and ``packs/``
    (pack files themselves are checked by :func:`kroniko_ops.packs.check_packs`)."""
    now = time.time()
    lay = ctx.layout
    with os.scandir(ctx.root) as it:
        for entry in sorted(it, key=lambda e: e.name):
            want_dir = KNOWN_TOP.get(entry.name)
            if want_dir is not None:
                if (entry.is_dir(follow_symlinks=False) if want_dir else entry.is_file(follow_symlinks=False)):
                    continue
                ctx.add("layout-wrong-kind", "error", entry.name,
                        f"{entry.name} should be a {'folder' if want_dir else 'file'}: the store is damaged; "
                        "restore it from a backup")
                continue
            _other(ctx, entry, now, "at the top of the store")
    for folder, allowed in ((lay.log_dir, lambda n: n == "append.log"),
                            (lay.locks, lambda n: n.endswith(".lock")),
                            (lay.packs, lambda n: True)):
        if not os.path.isdir(folder) or os.path.islink(folder):
            continue
        with os.scandir(folder) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if stale_temp(entry.name, entry.path, now) is None and allowed(entry.name):
                    continue
                _other(ctx, entry, now, f"in {os.path.basename(folder)}/")


def _other(ctx: Context, entry: os.DirEntry[str], now: float, where: str) -> None:
    stale = stale_temp(entry.name, entry.path, now)
    rel = ctx.rel(entry.path)
    if stale is None:
        ctx.add("stray-file", "warning", rel,
                f"a file {where} that the layout does not know; --repair moves it to lost-found/")
    elif stale:
        ctx.add("stale-temp-file", "warning", rel,
                "a temp file left by a process that is gone; recover sets it aside into lost-found/")
