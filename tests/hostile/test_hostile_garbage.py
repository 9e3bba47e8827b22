"""Class 4 of issue 13: garbage the checker could miss. Bytes appended to a file the layout
derives or seals (a sealed segment, its offset index, a pack, the index database, locks/synced,
FORMAT), small (a page) or large (200 MB of zeros, sparse): fsck reports every one naming that
file (an error; a warning for the hand-kept FORMAT and locks/synced), never calls the store
clean, and the other commands end without a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile_helpers import Template, events_file, index_db, no_traceback, packs, run_many, segments

LOCATIONS = ["sealed-segment", "idx", "pack", "index-db", "synced", "FORMAT"]
PAD = 200 << 20  # the large garbage: zeros, as a hole


def _location(store: str, which: str) -> str:
    sealed, idxs, _active = segments(store)
    return {"sealed-segment": f"log/{sealed[-1]}", "idx": f"log/{idxs[-1]}", "pack": f"packs/{packs(store)[0]}",
            "index-db": f"index/{index_db(store)}", "synced": "locks/synced", "FORMAT": "FORMAT"}[which]


def _pad(path: str, how: str) -> None:
    if how == "zeros":
        os.truncate(path, os.path.getsize(path) + PAD)
    else:
        with open(path, "ab") as f:
            f.write(b"\x00garbage\n" * 400)


def _findings(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if '"finding"' in line]


@pytest.mark.parametrize("how", ["bytes", "zeros"])
@pytest.mark.parametrize("which", LOCATIONS)
def test_fsck_reports_trailing_garbage(template: Template, tmp_path: Path, which: str, how: str) -> None:
    store = template.copy(tmp_path / "store")
    rel = _location(store, which)
    _pad(os.path.join(store, rel), how)
    events = events_file(tmp_path)
    calls = [["fsck", store, "--json"], ["fsck", store, "--quick", "--json"], ["read", store], ["head", store],
             ["stats", store, "--json"], ["backup", store, str(tmp_path / "dest"), "--json"],
             ["append", store, "-f", events]]
    results = run_many(calls, per_call=60)
    for args, r in zip(calls, results, strict=True):
        assert r.code != -1, f"{args[0]} hung"
        no_traceback(r)
    for r in results[:2]:
        # FORMAT and locks/synced are no derived data: a warning (fixed by hand) is enough there.
        problems = [f for f in _findings(r.out) if f["severity"] in ("error", "warning")]
        assert r.code == 4 and problems, f"fsck called a store with garbage after {rel} clean: {r}"
        assert any(f["path"] == rel for f in problems), str(r)
        if which in ("sealed-segment", "idx", "pack", "index-db"):
            assert any(f["path"] == rel and f["severity"] == "error" for f in problems), str(r)
    if which == "index-db":
        assert any(f["code"] == "index-trailing-garbage" for f in _findings(results[0].out))


def test_padded_index_is_repaired(template: Template, tmp_path: Path) -> None:
    """fsck --repair rebuilds an index padded with 200 MB of zeros (derived data); then clean."""
    store = template.copy(tmp_path / "store")
    _pad(os.path.join(store, _location(store, "index-db")), "zeros")
    repair, again = run_many([["fsck", store, "--repair", "--json", "--lock-timeout", "5"], ["fsck", store, "--json"]],
                             per_call=60)
    no_traceback(repair)
    assert repair.code == 1 and '"index-trailing-garbage"' in repair.out, str(repair)
    assert again.code == 0, str(again)
