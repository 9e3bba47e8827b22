"""Retention: redundant manifests go at once; with --retain, manifests superseded before the
window go, and with them the objects only they name (segments a pack replaced); what is kept
always verifies and restores, and the history shows what can be restored."""

from __future__ import annotations

import time
from pathlib import Path

from replica_helpers import cli, contents, fill, objects

from kroniko_ops import compact
from kroniko_ops.ops.replicate import replicate, restore, verify_backup
from kroniko_ops.ops.replicate.retention import parse_duration, plan
from kroniko_ops.ops.replicate.ship import History


def _manifests(url: str) -> list[str]:
    return sorted(k for k in objects(url) if k.startswith("manifests/"))


def test_rounds_that_only_add_objects_leave_one_manifest(url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    for i in range(4):
        fill(src, 10, start=10 * i)
        replicate(src, url, once=True)
    assert len(_manifests(url)) == 1


def test_retain_keeps_the_window_and_deletes_what_only_older_manifests_name(url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 60)
    replicate(src, url, once=True)
    segments = {k for k in objects(url) if k.startswith("log/")}
    compact(src, durable=False)  # the segments are now in a pack
    fill(src, 5, start=60)
    replicate(src, url, once=True, retain=3600)
    assert len(_manifests(url)) == 2, "the manifest before the compaction is inside the window"
    history = [f for f in verify_backup(url).findings if f.code == "replica-manifest"]
    assert len(history) == 2 and history[0].position < history[1].position
    time.sleep(1.1)
    fill(src, 5, start=65)
    done = cli("replicate", src, url, "--once", "--retain", "1s")
    assert done.returncode == 0, done.stderr
    assert len(_manifests(url)) == 1
    left = set(objects(url))
    gone = {k for k in segments if k not in left}
    assert gone and all(k.startswith("log/") for k in gone)
    assert any(k.startswith("packs/") for k in left)
    assert verify_backup(url).exit_code == 0
    restore(url, str(tmp_path / "r"), durable=False)
    assert contents(str(tmp_path / "r")) == contents(src)


def test_plan_keeps_the_newest_and_every_manifest_naming_something_newer_ones_do_not() -> None:
    h = {1: History(100, {"a", "b"}), 2: History(200, {"a", "b", "c"}), 3: History(300, {"c", "p"}),
         4: History(400, {"c", "p", "d"})}
    assert sorted(plan(h, 500, None)) == [1, 3]  # 2 names a and b, which 4 does not: kept
    assert sorted(plan(h, 500, 150)) == [1, 2, 3]  # 2 was superseded (by 3, at 300) before 500 - 150
    assert sorted(plan(h, 500, 250)) == [1, 3]  # ... but within 250
    assert plan({7: History(1, {"x"})}, 10**9, 0) == []


def test_parse_duration() -> None:
    assert parse_duration("90s") == 90 and parse_duration("36h") == 36 * 3600 and parse_duration("7d") == 7 * 86400
    assert parse_duration("1.5m") == 90 and parse_duration("2w") == 14 * 86400 and parse_duration("5") == 5
    bad = cli("replicate", "/nonexistent", "/tmp/x", "--once", "--retain", "forever")
    assert bad.returncode == 2 and "--retain" in bad.stderr
