"""Class 3 of issue 13: unbounded bytes. A store file (a segment, an offset index, a pack, the
index database) extended to 2 GiB (sparse: no disk is used), or a legacy log extended so. Every
command runs in a child whose address space is capped at 1 GiB, so reading such a file whole is
a MemoryError (a traceback, which fails the test); nothing copies gigabytes into lost-found/
(moving a file there whole is fine: it allocates nothing); fsck reports the damage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile_helpers import (
    STORE_COMMANDS,
    Template,
    args_for,
    events_file,
    index_db,
    no_traceback,
    packs,
    run_many,
    segments,
)

BIG = 2 << 30  # bytes a planted file is extended to (sparse)
MEMORY = 1 << 30  # the children's address space: far less than BIG
ALLOCATED = 64 << 20  # disk lost-found/ may take (what a command wrote there, never GBs)
LOCATIONS = ["active-segment", "sealed-segment", "idx", "pack", "index-db"]


def _location(store: str, which: str) -> str:
    sealed, idxs, active = segments(store)
    return {"active-segment": f"log/{active}", "sealed-segment": f"log/{sealed[-1]}", "idx": f"log/{idxs[-1]}",
            "pack": f"packs/{packs(store)[0]}", "index-db": f"index/{index_db(store)}"}[which]


def _extend(path: str, size: int = BIG) -> None:
    """Make ``path`` ``size`` bytes long without writing them (a hole reads as zeros)."""
    os.truncate(path, size)


def allocated(folder: str) -> int:
    """The disk space the files under ``folder`` take (holes take none)."""
    total = 0
    for root, _dirs, names in os.walk(folder):
        for n in names:
            total += os.lstat(os.path.join(root, n)).st_blocks * 512
    return total


def _codes(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if '"finding"' in line]


@pytest.mark.parametrize("which", LOCATIONS)
def test_huge_store_file_bounded_memory(template: Template, tmp_path: Path, which: str) -> None:
    events = events_file(tmp_path)
    calls, stores = [], []
    for name in STORE_COMMANDS:
        store = template.copy(tmp_path / name / "store")
        _extend(os.path.join(store, _location(store, which)))
        stores.append(store)
        calls.append(args_for(name, store, str(tmp_path / name / "dest"), events))
    for name, store, r in zip(STORE_COMMANDS, stores, run_many(calls, per_call=60, memory=MEMORY), strict=True):
        assert r.code != -1, f"{name} hung on a 2 GiB {which}"
        no_traceback(r)  # a MemoryError would show as one
        lost = os.path.join(store, "lost-found")
        assert allocated(lost) < ALLOCATED, f"{name} copied GBs into lost-found/ ({allocated(lost)} bytes)"
        dest = str(tmp_path / name / "dest")
        assert allocated(dest) < ALLOCATED, f"{name} copied GBs into its destination"
        if name == "fsck":
            findings = _codes(r.out)
            assert r.code == 4 and any(f["severity"] == "error" for f in findings), str(r)
        if name == "backup" and which not in ("index-db", "active-segment"):
            # A backup of a damaged sealed file refuses; it copies the active segment up to the
            # synced end only, and never the index (derived data).
            assert r.code != 0, str(r)


def test_active_tail_extended_is_damage_not_tail(template: Template, tmp_path: Path) -> None:
    """A log extended by 2 GiB past its last commit: fsck calls it oversized damage (no
    recovery action), recover leaves it where it is instead of copying it aside."""
    store = template.copy(tmp_path / "store")
    _extend(os.path.join(store, _location(store, "active-segment")))
    fsck_r, recover_r = run_many([["fsck", store, "--json"], ["recover", store, "--json", "--lock-timeout", "5"]],
                                 per_call=60, memory=MEMORY)
    no_traceback(fsck_r)
    oversized = [f for f in _codes(fsck_r.out) if f["code"] == "log-tail-oversized"]
    assert oversized and oversized[0]["severity"] == "error", str(fsck_r)
    no_traceback(recover_r)
    assert recover_r.code != 0, str(recover_r)
    assert os.path.getsize(os.path.join(store, _location(store, "active-segment"))) == BIG
    assert allocated(os.path.join(store, "lost-found")) < ALLOCATED


def test_legacy_log_extended(legacy_clean: str, tmp_path: Path) -> None:
    """A legacy log/append.log extended by 2 GiB of zeros (no newline): fsck and migrate read it
    in bounded memory and keep at most a bounded part of it in the new store's lost-found/."""
    _extend(os.path.join(legacy_clean, "log", "append.log"),
            os.path.getsize(os.path.join(legacy_clean, "log", "append.log")) + BIG)
    target = str(tmp_path / "migrated")
    results = run_many([["fsck", legacy_clean, "--json"], ["migrate", legacy_clean, target]], per_call=120,
                       memory=MEMORY)
    for r in results:
        assert r.code != -1, str(r)
        no_traceback(r)
    assert results[0].code == 4 and '"log-torn-tail"' in results[0].out, str(results[0])
    assert allocated(target) < 2 * ALLOCATED


def test_legacy_event_file_extended(legacy_clean: str, tmp_path: Path) -> None:
    """A legacy event file extended to 2 GiB: fsck and migrate report it as unreadable (its size
    is checked before reading) in bounded memory, and never copy it into the new store."""
    events = os.path.join(legacy_clean, "events")
    victim = os.path.join(events, sorted(os.listdir(events))[0])
    _extend(victim)
    target = str(tmp_path / "migrated")
    results = run_many([["fsck", legacy_clean, "--json"], ["migrate", legacy_clean, target]], per_call=120,
                       memory=MEMORY)
    for r in results:
        assert r.code != -1, str(r)
        no_traceback(r)
    assert results[0].code == 4 and "bytes, over the" in results[0].out, str(results[0])
    assert allocated(target) < 2 * ALLOCATED
