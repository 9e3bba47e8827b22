"""Class 1 of issue 13: a symbolic link anywhere inside a store (a layout name, a segment, an
offset index, a pack, the index database, a lock file, something in lost-found/) pointing
outside. No command writes, truncates or removes anything outside; none hangs or crashes;
fsck reports every link as ``layout-symlink``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hostile_helpers import (
    STORE_COMMANDS,
    Sentinel,
    Template,
    args_for,
    events_file,
    index_db,
    no_traceback,
    packs,
    run_many,
    segments,
)


def _location(store: str, which: str) -> str:
    sealed, idxs, active = segments(store)
    return {
        "FORMAT": "FORMAT", "log": "log", "index": "index", "packs": "packs", "locks": "locks",
        "lost-found": "lost-found", "active-segment": f"log/{active}", "sealed-segment": f"log/{sealed[-1]}",
        "idx": f"log/{idxs[-1]}", "pack": f"packs/{packs(store)[0]}", "index-db": f"index/{index_db(store)}",
        "synced": "locks/synced", "append-lock": "locks/append.lock", "maintenance-lock": "locks/maintenance.lock",
        "lost-found-entry": "lost-found/20260101T000000Z-1-abcdef-tail", "extra-in-log": "log/notes.txt",
    }[which]


LOCATIONS = ["FORMAT", "log", "index", "packs", "locks", "lost-found", "active-segment", "sealed-segment", "idx",
             "pack", "index-db", "synced", "append-lock", "maintenance-lock", "lost-found-entry", "extra-in-log"]


def _plant(store: str, rel: str, sentinel: Sentinel) -> None:
    """Replace ``rel`` (file or folder) by a link to the sentinel file or folder outside."""
    path = os.path.join(store, rel)
    is_dir = os.path.isdir(path)
    if is_dir:
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    os.symlink(sentinel.dir if is_dir or rel.startswith("lost-found/") else sentinel.file, path)


@pytest.mark.parametrize("which", LOCATIONS)
def test_symlink_inside_store_never_writes_outside(template: Template, tmp_path: Path, which: str) -> None:
    events = events_file(tmp_path)
    calls, sentinels = [], []
    for name in STORE_COMMANDS:
        store = template.copy(tmp_path / name / "store")
        sentinel = Sentinel(tmp_path / name / "outside")
        _plant(store, _location(store, which), sentinel)
        sentinels.append(sentinel)
        calls.append(args_for(name, store, str(tmp_path / name / "dest"), events))
    results = run_many(calls)
    for name, sentinel, r in zip(STORE_COMMANDS, sentinels, results, strict=True):
        assert r.code != -1, f"{name} hung"
        no_traceback(r)
        sentinel.check(f"{name} with {which} a symlink")
        if name == "fsck":
            codes = [json.loads(line).get("code") for line in r.out.splitlines() if line.startswith("{")]
            assert "layout-symlink" in codes, f"fsck did not report the link at {which}: {r}"
            assert r.code == 4
        if name in ("backup",) and r.code == 0:
            # A backup copies the bytes of the store: never a link that would escape on restore.
            dest = str(tmp_path / name / "dest")
            for root, dirs, files in os.walk(dest):
                assert not any(os.path.islink(os.path.join(root, n)) for n in dirs + files)


def test_symlinks_in_backup_and_restore_target(template: Template, tmp_path: Path) -> None:
    """verify-backup and restore on a backup holding a link to a file outside; restore into a
    target whose parent path holds a link; nothing outside changes."""
    sentinel = Sentinel(tmp_path / "outside")
    backup = template.copy_backup(tmp_path / "backup")
    victim = next(os.path.join(r, n) for r, _d, fs in os.walk(backup) for n in sorted(fs) if n.endswith(".seg"))
    os.unlink(victim)
    os.symlink(sentinel.file, victim)
    target_link = tmp_path / "target-link"
    os.symlink(sentinel.dir, target_link)
    results = run_many([["verify-backup", backup, "--json"], ["restore", backup, str(tmp_path / "restored")],
                        ["restore", template.backup, str(target_link)]])
    for r in results:
        assert r.code not in (-1, 0), str(r)
        no_traceback(r)
    sentinel.check("verify-backup/restore with links")
    assert not os.path.exists(tmp_path / "restored" / "FORMAT")


def test_symlink_in_legacy_store_and_torture(legacy_clean: str, template: Template, tmp_path: Path) -> None:
    """migrate reads a legacy store holding a link (never writing to it or through it); torture
    refuses a store holding a link."""
    sentinel = Sentinel(tmp_path / "outside")
    log = os.path.join(legacy_clean, "log", "append.log")
    os.rename(log, log + ".real")
    os.symlink(sentinel.file, log)
    store = template.copy(tmp_path / "store")
    _plant(store, "locks/synced", sentinel)
    results = run_many([["migrate", legacy_clean, str(tmp_path / "migrated")],
                        ["torture", store, "--rounds", "1", "--workers", "1", "--no-fsync"]], per_call=60)
    for r in results:
        assert r.code != -1, str(r)
        no_traceback(r)
    sentinel.check("migrate/torture with links")
