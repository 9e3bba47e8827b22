"""Class 2 of issue 13: a FIFO or a socket where a store file belongs (a segment, an offset
index, a pack, FORMAT, locks/synced, the index database). No command hangs (each call is
interrupted after a timeout and fails the test) or crashes; fsck reports the file."""

from __future__ import annotations

import json
import os
import socket
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

LOCATIONS = ["active-segment", "sealed-segment", "idx", "pack", "FORMAT", "synced", "index-db", "index-wal",
             "extra-in-log"]


def _location(store: str, which: str) -> str:
    sealed, idxs, active = segments(store)
    return {"active-segment": f"log/{active}", "sealed-segment": f"log/{sealed[-1]}", "idx": f"log/{idxs[-1]}",
            "pack": f"packs/{packs(store)[0]}", "FORMAT": "FORMAT", "synced": "locks/synced",
            "index-db": f"index/{index_db(store)}", "extra-in-log": "log/000000009999.seg",
            "index-wal": f"index/{index_db(store)}-wal"}[which]


def _fifo(path: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)
    os.mkfifo(path)


@pytest.mark.parametrize("which", LOCATIONS)
def test_fifo_never_hangs(template: Template, tmp_path: Path, which: str) -> None:
    events = events_file(tmp_path)
    calls, sentinels = [], []
    names = list(STORE_COMMANDS)
    for name in names:
        store = template.copy(tmp_path / name / "store")
        _fifo(os.path.join(store, _location(store, which)))
        sentinels.append(Sentinel(tmp_path / name / "outside"))
        calls.append(args_for(name, store, str(tmp_path / name / "dest"), events))
    for name, sentinel, r in zip(names, sentinels, run_many(calls, per_call=20), strict=True):
        assert r.code != -1, f"{name} hung on a FIFO at {which}"
        no_traceback(r)
        sentinel.check(name)
        if name == "fsck":
            findings = [json.loads(line) for line in r.out.splitlines() if '"finding"' in line]
            assert r.code == 4 and any(f["severity"] == "error" for f in findings), str(r)


def test_socket_at_segment_and_synced(template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Unix socket (bound through a relative name: socket paths are short) at the active
    segment, and at locks/synced: every command still ends, fsck says so."""
    events = events_file(tmp_path)
    socks, calls = [], []
    for which in ("active-segment", "synced"):
        for name in STORE_COMMANDS:
            store = template.copy(tmp_path / which / name / "store")
            path = os.path.join(store, _location(store, which))
            os.unlink(path)
            monkeypatch.chdir(os.path.dirname(path))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(os.path.basename(path))
            socks.append(s)
            calls.append(args_for(name, store, str(tmp_path / which / name / "dest"), events))
    try:
        results = run_many(calls, per_call=20)
    finally:
        for s in socks:
            s.close()
    for args, r in zip(calls, results, strict=True):
        assert r.code != -1, f"{args} hung"
        no_traceback(r)
        if args[0] == "fsck":
            # The check reports it (4); --repair may refuse to open the store at all (8).
            assert r.code == 4 or (r.code == 8 and "--repair" in args), str(r)


def test_fifo_in_backup_and_legacy(template: Template, legacy_clean: str, tmp_path: Path) -> None:
    """verify-backup, restore, migrate and legacy fsck read a FIFO planted in their source (a
    backup's segment, a legacy log) without hanging; torture refuses a FIFO at locks/synced."""
    backup = template.copy_backup(tmp_path / "backup")
    seg = next(os.path.join(r, n) for r, _d, fs in os.walk(backup) for n in sorted(fs) if n.endswith(".seg"))
    _fifo(seg)
    _fifo(os.path.join(legacy_clean, "log", "append.log"))
    store = template.copy(tmp_path / "store")
    _fifo(os.path.join(store, "locks", "synced"))
    calls = [["verify-backup", backup, "--json"], ["restore", backup, str(tmp_path / "restored")],
             ["migrate", legacy_clean, str(tmp_path / "migrated")], ["fsck", legacy_clean, "--json"],
             ["torture", store, "--rounds", "1", "--workers", "1", "--no-fsync"]]
    for args, r in zip(calls, run_many(calls, per_call=30), strict=True):
        assert r.code not in (-1, 0), f"{args}: {r}"
        no_traceback(r)
        if args[0] == "verify-backup":
            assert '"backup-segment-corrupt"' in r.out, str(r)
        if args[0] in ("migrate", "fsck"):
            assert "not a regular file" in r.err + r.out, str(r)
    assert not os.path.exists(tmp_path / "restored" / "FORMAT")
    assert not os.path.exists(tmp_path / "migrated" / "FORMAT")
