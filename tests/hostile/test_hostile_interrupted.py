"""Class 1 of issue 13 (second half): an interrupted migration, restore or reindex never looks
complete. Each is SIGKILLed half-way (a child, stopped at a counted point of its disk writes);
then the target either does not exist or every command refuses it (fsck, read, append, head),
and running the command again completes it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile_helpers import Template, events_file, no_traceback, run_many
from interrupt_helpers import count_points, spread, stop_at, temp_names

from kroniko_ops import EventStore
from kroniko_ops.legacy.synth import write_shop_store

LEGACY_EVENTS = 12_000  # three of migrate's batches of 5,000: a kill lands between batches too


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Ruby (format 1) store, never written to by the tests."""
    root = str(tmp_path_factory.mktemp("legacy") / "ruby")
    write_shop_store(root, LEGACY_EVENTS, seed=13)
    return root


def _head(store: str) -> int:
    with EventStore(store, create=False) as s:
        return s.head()


def _refused_or_absent(target: str, events: str) -> None:
    """Nothing at ``target`` is taken for a store: it does not exist, or fsck, read, append and
    head all refuse it (non-zero, no traceback) and append writes nothing."""
    if not os.path.lexists(target):
        return
    before = sorted(os.walk(target))
    calls = [["fsck", target, "--json"], ["read", target], ["append", target, "-f", events], ["head", target]]
    for argv, r in zip(calls, run_many(calls), strict=True):
        no_traceback(r)
        assert r.code not in (0, 1, -1), f"{argv} accepted an unfinished target\n{r}"
    assert sorted(os.walk(target)) == before, "a refusing command wrote into the unfinished target"


def _finished(target: str, head: int) -> bool:
    """True when ``target`` is the complete store (a kill after its publication)."""
    if not os.path.exists(os.path.join(target, "FORMAT")):
        return False
    return _head(target) == head


def _fsck_clean(store: str) -> None:
    [r] = run_many([["fsck", store, "--json"]])
    no_traceback(r)
    summary = json.loads(r.out.splitlines()[-1])
    assert r.code == 0, f"fsck of the finished store\n{r}"
    assert summary["exit_code"] == 0


def test_killed_migration_is_absent_or_refused_and_a_rerun_completes(legacy: str, tmp_path: Path) -> None:
    events = events_file(tmp_path)
    points, full = count_points(["migrate", legacy, str(tmp_path / "counted")])
    assert full.code == 0, str(full)
    for nth in [*spread(points, 4), points]:  # the last point: just before the new store takes its name
        target = str(tmp_path / f"new-{nth}")
        stopped = stop_at(["migrate", legacy, target], nth)
        assert stopped.code == -9, f"the migration was not killed at point {nth} of {points}: {stopped}"
        if _finished(target, LEGACY_EVENTS):
            continue  # killed after the rename: complete and durable already
        _refused_or_absent(target, events)
        [again] = run_many([["migrate", legacy, target, "--json"]], per_call=120)
        no_traceback(again)
        assert again.code == 0, f"migrating again after a kill at point {nth}\n{again}"
        assert _head(target) == LEGACY_EVENTS
        _fsck_clean(target)


def test_killed_restore_is_absent_or_refused_and_a_rerun_completes(template: Template, tmp_path: Path) -> None:
    events = events_file(tmp_path)
    backup = template.copy_backup(tmp_path / "backup")
    head = _head(template.store)
    points, full = count_points(["restore", backup, str(tmp_path / "counted")])
    assert full.code == 0, str(full)
    for nth in [*spread(points, 4), points]:
        target = str(tmp_path / f"restored-{nth}")
        stopped = stop_at(["restore", backup, target], nth)
        assert stopped.code == -9, f"the restore was not killed at point {nth} of {points}: {stopped}"
        if _finished(target, head):
            continue
        _refused_or_absent(target, events)
        [again] = run_many([["restore", backup, target, "--json"]])
        no_traceback(again)
        assert again.code == 0, f"restoring again after a kill at point {nth}\n{again}"
        assert _head(target) == head
        _fsck_clean(target)
        assert temp_names(target) == [], "the rerun left temp names beside or in the store"


def test_killed_reindex_leaves_a_working_store_and_a_rerun_completes(template: Template, tmp_path: Path) -> None:
    """A reindex's target is the next index generation: until it is published the store keeps
    serving from the current one, and whatever the kill left is cleared by the next reindex."""
    head = _head(template.store)
    points, full = count_points(["reindex", template.copy(tmp_path / "counted")])
    assert full.code == 0, str(full)
    for nth in [*spread(points, 3), points]:
        store = template.copy(tmp_path / f"store-{nth}")
        stopped = stop_at(["reindex", store], nth)
        assert stopped.code == -9, f"the reindex was not killed at point {nth} of {points}: {stopped}"
        assert _head(store) == head
        read, again = run_many([["read", store, "--json", "--tag", "k:1"], ["reindex", store, "--json"]])
        no_traceback(read)
        assert read.code == 0 and json.loads(read.out.splitlines()[-1])["events"] > 0, str(read)
        no_traceback(again)
        assert again.code in (0, 1), f"reindexing again after a kill at point {nth}\n{again}"
        _fsck_clean(store)
        assert temp_names(store) == [], "temp names left in the store after the rerun"
