"""Layout checks: the ``FORMAT`` file, the folders, and every name in the store (symbolic links,
FIFOs and devices, stale temp files, stray files). Names are looked at with ``lstat`` only:
nothing is followed and nothing is opened, so a FIFO cannot make the check hang."""

from __future__ import annotations

import os
import re
import stat
import time

from ... import fileio
from ...errors import access_denied, denied
from ...format import pack as packfmt
from ...format import segment as segfmt
from ...layout import FORMAT_LINE, parse_format, stale_temp
from .context import MAKE_DIR, RECOVER, SET_ASIDE, Context

FORMAT_OK, FORMAT_MISSING, FORMAT_BAD, FORMAT_OTHER = "ok", "missing", "bad", "other"
FOLDERS = ("log", "index", "packs", "locks", "lost-found")
TOP_FILES = ("FORMAT", "MANIFEST.json")  # MANIFEST.json: a backup folder is a store with its manifest
_INDEX_RE = re.compile(r"\A\d{6}\.sqlite3(-wal|-shm|-journal)?\Z")


def check_format(ctx: Context) -> str:
    """Report a missing or unreadable ``FORMAT``; return which case it is."""
    path = ctx.layout.format_file
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        mode = stat.S_IFREG  # missing: reported below by the read
    if stat.S_ISLNK(mode) or not stat.S_ISREG(mode):
        # Never followed nor opened: a link may point anywhere, a FIFO would block the read.
        with os.scandir(ctx.root) as it:
            entry = next((e for e in it if e.name == "FORMAT"), None)
        if entry is not None and _special(ctx, entry):
            return FORMAT_BAD
    try:
        raw = fileio.read_small(path, 4096)
    except FileNotFoundError:
        ctx.add("format-missing", "error", "FORMAT", "the FORMAT file is missing: this folder has a log but "
                "does not say which format it is; restore FORMAT from a backup (never written by --repair)")
        return FORMAT_MISSING
    except OSError as exc:
        if denied(exc):  # the check cannot run: exit 8, not a verdict on the store
            raise access_denied(path, exc) from None
        ctx.add("format-unknown", "error", "FORMAT", f"the FORMAT file is unreadable ({exc})")
        return FORMAT_BAD
    try:
        parse_format(raw)
        extra = [line for line in raw.split(b"\n")[1:] if line.strip() and (b"=" not in line or b"\0" in line)]
        if extra:
            # parse_format skips such lines (a later version may add keys), so they would pass unseen.
            ctx.add("format-garbage", "warning", "FORMAT", f"{len(extra)} line(s) after the format line are no "
                    f"key=value setting (first: {extra[0][:60]!r}): bytes no kroniko-ops wrote; restore FORMAT "
                    "from a backup or remove those lines by hand")
        return FORMAT_OK
    except (ValueError, UnicodeDecodeError) as exc:
        first = raw.split(b"\n", 1)[0].strip()
        if first.startswith(b"kroniko-ops format ") and first != FORMAT_LINE.encode():
            ctx.add("format-unknown", "error", "FORMAT", f"this store says {first.decode('utf-8', 'replace')!r}; "
                    f"this kroniko-ops knows {FORMAT_LINE!r} only and does not check or change it")
            return FORMAT_OTHER
        ctx.add("format-unknown", "error", "FORMAT", f"the FORMAT file does not parse ({exc})")
        return FORMAT_BAD


def _known(folder: str, name: str) -> bool:
    """Whether ``name`` belongs in the store folder ``folder`` (temp names aside)."""
    if folder == "log":
        return segfmt.parse_name(name) is not None or name == segfmt.SPARE_NAME
    if folder == "packs":
        return packfmt.parse_name(name) is not None
    if folder == "index":
        return _INDEX_RE.match(name) is not None
    if folder == "locks":
        return name == "synced" or name.endswith(".lock")
    return False


def check_tree(ctx: Context) -> None:
    """Walk the whole store with ``lstat``: missing folders, symbolic links anywhere (never
    followed), FIFOs, sockets and devices, stale temp files and names the layout does not know."""
    root, now = ctx.root, time.time()
    for name in FOLDERS:
        path = os.path.join(root, name)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            if name == "log":
                ctx.add("layout-missing", "error", name, "the log folder is missing: no event can be read; "
                        "restore the store from a backup")
            else:
                ctx.add("layout-missing", "warning", name, f"the {name}/ folder is missing", action=MAKE_DIR)
            continue
        if not stat.S_ISDIR(mode) and not stat.S_ISLNK(mode):
            ctx.add("layout-wrong-kind", "error", name, f"{name} should be a folder: the store is damaged")
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if _special(ctx, entry):
            continue
        if entry.name in FOLDERS:
            if entry.is_dir(follow_symlinks=False):
                _walk_folder(ctx, entry.name, now)
            continue
        if entry.name in TOP_FILES:
            if not entry.is_file(follow_symlinks=False):
                ctx.add("layout-wrong-kind", "error", entry.name, f"{entry.name} should be a file")
            continue
        _other(ctx, entry, now, "at the top of the store")


def _special(ctx: Context, entry: os.DirEntry[str]) -> bool:
    """Report a symbolic link, FIFO, socket or device; True when ``entry`` is one (or is gone:
    a writer renamed its temp file meanwhile)."""
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except FileNotFoundError:
        return True
    rel = ctx.rel(entry.path)
    if stat.S_ISLNK(mode):
        ctx.add("layout-symlink", "error", rel, f"a symbolic link (to {os.readlink(entry.path)!r}) inside the "
                "store: tools refuse to write through it; replace it by the real file or remove it")
        return True
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        ctx.add("layout-special-file", "error", rel, f"a {kind} inside the store (never opened by fsck); "
                "remove it by hand")
        return True
    return False


def _walk_folder(ctx: Context, folder: str, now: float) -> None:
    base = os.path.join(ctx.root, folder)
    if folder == "lost-found":
        # Whatever was set aside stays as it is; only links and special files are reported.
        for dirpath, dirs, _files in os.walk(base, followlinks=False):
            with os.scandir(dirpath) as it:
                for entry in it:
                    _special(ctx, entry)
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))]
        return
    with os.scandir(base) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if _special(ctx, entry):
            continue
        if _known(folder, entry.name) and stale_temp(entry.name, entry.path, now) is None:
            if not entry.is_file(follow_symlinks=False):
                ctx.add("layout-wrong-kind", "error", ctx.rel(entry.path), "should be a file, is a folder")
            continue
        _other(ctx, entry, now, f"in {folder}/")


def _other(ctx: Context, entry: os.DirEntry[str], now: float, where: str) -> None:
    stale = stale_temp(entry.name, entry.path, now)
    rel = ctx.rel(entry.path)
    if stale is None:
        ctx.add("stray-file", "warning", rel, f"a {'folder' if entry.is_dir(follow_symlinks=False) else 'file'} "
                f"{where} that the layout does not know", action=SET_ASIDE)
    elif stale:
        ctx.add("stale-temp-file", "warning", rel, "a temp file left by a process that is gone", action=RECOVER)
