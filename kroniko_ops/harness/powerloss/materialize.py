"""Writing a crash state to a folder: the files that existed before the run, with the changes
the state keeps applied in order, as a fresh boot would find them."""

from __future__ import annotations

import os
import shutil

from ...synced import SIZE, SyncedFile, decode
from .model import CrashState, Model

SNAPSHOT = "snapshot"
FINAL_INDEX = "final-index"


def snapshot(root: str, dest: str) -> set[str]:
    """Copy every file under ``root`` to ``dest``; return their relative paths (the run's
    starting point, taken as durable)."""
    shutil.copytree(root, dest, symlinks=True)
    out = set()
    for dirpath, _dirs, files in os.walk(dest):
        for name in files:
            out.add(os.path.relpath(os.path.join(dirpath, name), dest))
    return out


def build(model: Model, state: CrashState, base: str, dest: str, index_dirs: list[str]) -> None:
    """Write ``state`` of ``model`` to ``dest``; ``base`` holds the snapshot and the final index
    copies (``base/final-index/<store>``); ``index_dirs`` are the stores' ``index`` folders."""
    files: dict[str, bytearray] = {}
    dirs: set[str] = set()
    snap = os.path.join(base, SNAPSHOT)
    for dirpath, subdirs, names in os.walk(snap):
        rel = os.path.relpath(dirpath, snap)
        for d in subdirs:
            dirs.add(os.path.normpath(os.path.join(rel, d)))
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as f:
                files[os.path.normpath(os.path.join(rel, n))] = bytearray(f.read())
    for ch in model.changes[: state.cut]:
        if ch.i in state.dropped:
            continue
        op, path = ch.op, ch.op["path"]
        if not path:
            continue
        kind = op["op"]
        if kind == "create":
            files.setdefault(path, bytearray())
        elif kind == "mkdir":
            dirs.add(path)
        elif kind == "write" and path in files:
            data = op["data"]
            if state.torn is not None and state.torn[0] == ch.i:
                data = bytes(len(data)) if state.torn[1] < 0 else data[: state.torn[1]]
            buf, off = files[path], op["offset"]
            if len(buf) < off:
                buf.extend(bytes(off - len(buf)))
            buf[off: off + len(data)] = data
        elif kind == "truncate" and path in files:
            buf = files[path]
            del buf[op["size"]:]
            buf.extend(bytes(op["size"] - len(buf)))
        elif kind == "rename" and op["src"] in files:
            files[path] = files.pop(op["src"])
        elif kind == "rename" and op["src"] in dirs:  # a folder renamed whole (a store published)
            _move_folder(op["src"], path, files, dirs)
        elif kind == "exchange" and op["src"] in files and path in files:
            files[path], files[op["src"]] = files[op["src"]], files[path]
        elif kind == "link" and op["src"] in files:
            files[path] = bytearray(files[op["src"]])
        elif kind == "unlink":
            files.pop(path, None)
        elif kind == "rmdir":
            dirs.discard(path)
    for d in index_dirs:  # SQLite writes outside fileio: the index is taken whole, in one of three states
        if state.index == "initial":
            continue
        for name in [p for p in files if os.path.dirname(p) == d]:
            del files[name]
        if state.index == "final":
            src = os.path.join(base, FINAL_INDEX, d)
            for n in os.listdir(src) if os.path.isdir(src) else ():
                with open(os.path.join(src, n), "rb") as f:
                    files[os.path.join(d, n)] = bytearray(f.read())
    os.makedirs(dest)
    # A name whose folder's own name was lost is lost with it (a boot finds no path to it).
    for d in sorted(d for d in dirs if _reachable(d, dirs)):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    for path, data in files.items():
        if _reachable(os.path.dirname(path), dirs):
            with open(os.path.join(dest, path), "wb") as f:
                f.write(data)


def _reachable(folder: str, dirs: set[str]) -> bool:
    """Whether ``folder`` and every folder above it (up to the run's root) exist."""
    while folder:
        if folder not in dirs:
            return False
        folder = os.path.dirname(folder)
    return True


def _move_folder(src: str, dst: str, files: dict[str, bytearray], dirs: set[str]) -> None:
    prefix = src + "/"
    for p in [p for p in files if p.startswith(prefix)]:
        files[dst + p[len(src):]] = files.pop(p)
    for d in [d for d in dirs if d == src or d.startswith(prefix)]:
        dirs.discard(d)
        dirs.add(dst + d[len(src):])


def as_rebooted(store: str) -> None:
    """A power cut is a reboot: give the synced position the mark of another boot, so the engine
    re-verifies what it claims (a torn or missing value stays as the cut left it)."""
    path = os.path.join(store, "locks", "synced")
    try:
        with open(path, "rb") as f:
            state = decode(f.read())
    except FileNotFoundError:
        return
    if state is None:
        return
    with open(path, "rb") as f:
        logend = decode(f.read()[SIZE:], b"logend")
    sf = SyncedFile(path)
    try:
        from dataclasses import replace

        from ... import fileio

        data = replace(state, boot="before-the-power-cut").encode()
        if logend is not None:  # the log's end as last written: of the earlier boot too
            data += replace(logend, boot="before-the-power-cut").encode(b"logend")
        fileio.pwrite_all(sf.fd, data, 0, path)
    finally:
        sf.close()
