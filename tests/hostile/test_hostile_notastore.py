"""Class 4 of issue 13 (second half): a folder that is not a store is never written to.

Every command except ``init`` is run on an empty folder, on a foreign folder (some files of
someone else's), on a foreign folder that happens to hold a ``log/`` of non-segment files, and on
a missing path. Each refuses with a clear message and no traceback: exit 2 for a folder that is
not a store (8 for a missing path, "could not run"; verify-backup and restore, whose argument is a
backup, say "not a (complete) backup", exit 4). The folder's tree is byte-identical afterwards,
and no destination (backup, restore, migrate) appears.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hostile_helpers import events_file, no_traceback, run_many

# {s}: the folder under test; {d}: a destination that must not appear; {e}: events to append.
COMMANDS: dict[str, list[str]] = {
    "append": ["append", "{s}", "-f", "{e}"],
    "read": ["read", "{s}"],
    "head": ["head", "{s}"],
    "stats": ["stats", "{s}", "--json"],
    "fsck": ["fsck", "{s}", "--json"],
    "fsck-repair": ["fsck", "{s}", "--repair", "--json"],
    "recover": ["recover", "{s}", "--json"],
    "reindex": ["reindex", "{s}", "--json"],
    "compact": ["compact", "{s}", "--json"],
    "backup": ["backup", "{s}", "{d}", "--json"],
    "verify-backup": ["verify-backup", "{s}", "--json"],
    "restore": ["restore", "{s}", "{d}", "--json"],
    "migrate": ["migrate", "{s}", "{d}", "--json"],
}
KINDS = ["empty", "foreign", "foreign-log", "missing"]
BACKUP_SIDE = {"verify-backup", "restore"}  # their argument is a backup: "not a backup" is exit 4


def _make(folder: Path, kind: str) -> None:
    if kind == "missing":
        return
    folder.mkdir(parents=True)
    if kind == "empty":
        return
    (folder / "notes.txt").write_bytes(b"someone else's notes\n")
    (folder / "photos").mkdir()
    (folder / "photos" / "cat.jpg").write_bytes(bytes(range(256)) * 4)
    if kind == "foreign-log":
        (folder / "log").mkdir()
        (folder / "log" / "server.log").write_bytes(b"GET / 200\n")


def _tree(folder: Path) -> dict[str, tuple[int, bytes]] | None:
    if not os.path.lexists(folder):
        return None
    out: dict[str, tuple[int, bytes]] = {".": (os.lstat(folder).st_mode, b"")}
    for root, dirs, names in os.walk(folder):
        for n in dirs + names:
            p = os.path.join(root, n)
            data = open(p, "rb").read() if os.path.isfile(p) else b""
            out[os.path.relpath(p, folder)] = (os.lstat(p).st_mode, data)
    return out


def _expected(kind: str, name: str) -> set[int]:
    if kind == "missing":
        return {2, 8}  # 8: no store there, could not run; migrate: 2, not a folder
    if name in BACKUP_SIDE:
        return {4}  # the backup has no MANIFEST.json: not a (complete) backup, nothing written
    if kind == "foreign-log":
        return {2, 4}  # 4: a log/ without FORMAT may be a store that lost it: "run fsck"
    return {2}


def _check(tmp_path: Path, kind: str) -> None:
    events = events_file(tmp_path)
    names = list(COMMANDS)
    cases, calls = [], []
    for name in names:
        folder = tmp_path / kind / name / "folder"
        dest = tmp_path / kind / name / "dest"
        _make(folder, kind)
        cases.append((name, folder, dest, _tree(folder)))
        calls.append([a.format(s=folder, d=dest, e=events) for a in COMMANDS[name]])
    wrong = []
    for (name, folder, dest, before), r in zip(cases, run_many(calls), strict=True):
        assert r.code != -1, f"{name} hung on a {kind} folder"
        no_traceback(r)
        if _tree(folder) != before:
            wrong.append(f"{name} wrote into a {kind} folder")
        if os.path.lexists(dest):
            wrong.append(f"{name} created its destination from a {kind} folder")
        if r.code not in _expected(kind, name):
            wrong.append(f"{name} on a {kind} folder: exit {r.code}, expected {_expected(kind, name)}: {r.err[-300:]}")
        elif r.code in (2, 8) and not r.err.startswith("error: "):
            wrong.append(f"{name} on a {kind} folder: no clear message: {r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_that_is_not_a_store_is_refused_and_untouched(tmp_path: Path, kind: str) -> None:
    _check(tmp_path, kind)
