"""Class 2 of issue 13 (second half): what an interrupted maintenance command leaves behind.
compact, reindex, backup and restore are stopped half-way by SIGKILL or SIGTERM (a child,
stopped at a counted point of its disk writes); the next run of the same command clears its
own leftovers (temp packs, a temp index generation, a temp backup or store beside the
destination), succeeds, and fsck then finds the store clean with no temp name in it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile_helpers import Template, no_traceback, run_many
from interrupt_helpers import count_points, spread, stop_at, temp_names

# Each command as run on {s}, a store, and {d}, its destination (backup and restore only).
COMMANDS = {
    "compact": ["compact", "{s}", "--json", "--prune-age", "0"],
    "reindex": ["reindex", "{s}", "--json"],
    "backup": ["backup", "{s}", "{d}", "--json"],
    "restore": ["restore", "{b}", "{d}", "--json"],
}
STOPS = [("SIGKILL", 3), ("SIGTERM", 1)]  # signal, how many points of the run to stop at


def _args(name: str, store: str, dest: str, backup: str) -> list[str]:
    return [a.format(s=store, d=dest, b=backup) for a in COMMANDS[name]]


def _summary(out: str) -> dict:
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("name", list(COMMANDS))
def test_next_run_clears_what_an_interrupted_run_left(template: Template, tmp_path: Path, name: str) -> None:
    backup = template.copy_backup(tmp_path / "backup")
    points, full = count_points(_args(name, template.copy(tmp_path / "counted"), str(tmp_path / "counted-dest"),
                                      backup))
    assert full.code == 0, str(full)
    runs = []
    for signame, count in STOPS:
        for nth in spread(points, count):
            case = tmp_path / f"{signame}-{nth}"
            store = template.copy(case / "store")
            dest = str(case / "dest")
            stopped = stop_at(_args(name, store, dest, backup), nth, signame)
            # SIGTERM is handled like Ctrl-C (the run cleans up and exits 143); SIGKILL leaves all.
            ended = stopped.code < 0 or (signame == "SIGTERM" and stopped.code == 143)
            assert ended, f"{name} was not stopped by {signame} at point {nth} of {points}: {stopped}"
            runs.append((signame, nth, store, dest))
    # The same command again on each, then fsck of the store (and of what was restored).
    calls = []
    for _sig, _nth, store, dest in runs:
        calls.append(_args(name, store, dest, backup))
        calls.append(["fsck", dest if name == "restore" else store, "--json"])
    results = run_many(calls, per_call=60)
    for i, (signame, nth, store, dest) in enumerate(runs):
        again, fsck = results[2 * i], results[2 * i + 1]
        what = f"{name} stopped by {signame} at point {nth} of {points}"
        no_traceback(again)
        if name in ("backup", "restore") and again.code == 2 and os.path.exists(os.path.join(dest, "FORMAT"
                                                                                              if name == "restore"
                                                                                              else "MANIFEST.json")):
            pass  # stopped after the destination took its name: complete, and never overwritten
        else:
            # 1: reindex names what it cleared as a repaired finding (stale-temp-file)
            assert again.code in ((0, 1) if name == "reindex" else (0,)), f"{what}, run again:\n{again}"
        no_traceback(fsck)
        assert fsck.code == 0, f"{what}, run again, then fsck:\n{fsck}"
        assert _summary(fsck.out)["exit_code"] == 0
        checked = dest if name == "restore" else store
        assert temp_names(checked) == [], f"{what}: temp names left after the next run"
        if name == "backup":
            [verify] = run_many([["verify-backup", dest, "--json"]])
            assert verify.code == 0, f"{what}: the backup of the next run does not verify\n{verify}"
