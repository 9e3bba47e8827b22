"""compact: what a user relies on. Events keep their bytes and positions, reads answer the same,
nothing leaves the store except into lost-found/, and a damaged store is left alone."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from compact_helpers import contents, fill, problems, reads

from kroniko_ops import Event, EventStore, StoreLocked
from kroniko_ops.cli import cli
from kroniko_ops.locking import held
from kroniko_ops.ops.compact import compact
from kroniko_ops.packs import PackSet, list_packs, pack_name


def tree(path: str) -> dict[str, bytes]:
    """Every file of the store (but the locks) with its content."""
    out = {}
    for d, _subdirs, files in os.walk(path):
        for name in files:
            full = os.path.join(d, name)
            if "/locks/" not in full:
                out[os.path.relpath(full, path)] = Path(full).read_bytes()
    return out


def loose(path: str) -> list[str]:
    return sorted(os.listdir(os.path.join(path, "events")))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_an_empty_store_compacts_to_nothing(store_path: str) -> None:
    EventStore(store_path).close()
    report = compact(store_path)
    assert report.exit_code == 0 and report.head == 0
    assert report.figures["packs"] == 0 and report.figures["packed_events"] == 0
    assert os.listdir(os.path.join(store_path, "packs")) == []


def test_one_event_is_packed_and_compacting_again_changes_nothing(store_path: str) -> None:
    with EventStore(store_path) as s:
        s.append(Event("A", {"x": 1}, ["t"], id="only"))
    before = contents(store_path)
    first = compact(store_path)
    assert first.exit_code == 0 and first.figures["events_packed"] == 1
    assert loose(store_path) == [] and list_packs(os.path.join(store_path, "packs"))[0] == [(1, 1)]
    files = tree(store_path)
    second = compact(store_path)
    assert second.exit_code == 0 and "events_packed" not in second.figures
    assert tree(store_path) == files
    assert contents(store_path) == before
    assert problems(store_path) == []


def test_packed_bytes_are_the_event_files_bytes(store_path: str) -> None:
    fill(store_path, 20)
    files = {n: Path(store_path, "events", n).read_bytes() for n in loose(store_path)}
    compact(store_path)
    packs = PackSet(os.path.join(store_path, "packs"))
    with EventStore(store_path, create=False) as s:
        for e in s.read():
            assert packs.get(e.position) == files[e.id + ".json"]


def test_appends_and_compactions_in_turn_keep_every_read_the_same(store_path: str) -> None:
    for _round in range(4):
        fill_more(store_path, 11)
        before = reads(store_path)
        assert compact(store_path).exit_code == 0
        assert reads(store_path) == before
    assert len(list_packs(os.path.join(store_path, "packs"))[0]) == 4
    assert problems(store_path) == []


def fill_more(path: str, n: int) -> None:
    with EventStore(path, durable=False) as s:
        head = s.head()
        s.append([Event("T", {"i": head + i}, [f"k:{(head + i) % 3}"]) for i in range(n)])


def test_a_handle_opened_before_compaction_reads_the_same_after(store_path: str) -> None:
    fill(store_path, 40)
    with EventStore(store_path, create=False) as s:
        before = [(e.position, e.event) for e in s.read()]
        compact(store_path)
        assert [(e.position, e.event) for e in s.read()] == before
        assert [(e.position, e.event) for e in s.read(backwards=True, limit=5)] == before[::-1][:5]


def test_dry_run_says_what_it_would_do_and_changes_nothing(store_path: str) -> None:
    fill(store_path, 10)
    Path(store_path, "events", f".tmp-{dead_pid()}-abc").write_bytes(b"half")
    files = tree(store_path)
    report = compact(store_path, dry_run=True)
    assert report.exit_code == 0
    assert tree(store_path) == files
    messages = [f.message for f in report.findings]
    assert any(m.startswith("would pack positions 1..10") for m in messages)
    assert any("would be set aside" in m for m in messages)


def test_fewer_loose_events_than_min_loose_are_left_loose(store_path: str) -> None:
    fill(store_path, 5)
    report = compact(store_path, min_loose=6)
    assert report.exit_code == 0 and "compact-skip" in report.counts()
    assert len(loose(store_path)) == 5
    assert compact(store_path, min_loose=5).figures["events_packed"] == 5


def test_many_small_packs_are_merged(store_path: str) -> None:
    for _ in range(6):
        fill_more(store_path, 3)
        compact(store_path, max_packs=2)
    ranges = list_packs(os.path.join(store_path, "packs"))[0]
    assert len(ranges) <= 3 and ranges[0][0] == 1 and ranges[-1][1] == 18
    before = reads(store_path)
    report = compact(store_path, max_packs=1)
    assert report.counts().get("compact-merge") == 1
    assert list_packs(os.path.join(store_path, "packs"))[0] == [(1, 18)]
    assert reads(store_path) == before
    assert problems(store_path) == []


def test_a_store_fsck_calls_damaged_is_refused_and_left_alone(store_path: str) -> None:
    fill(store_path, 10)
    os.unlink(os.path.join(store_path, "events", "ev-3.json"))
    files = tree(store_path)
    report = compact(store_path)
    assert report.exit_code == 4
    assert "missing-event" in report.counts()
    assert tree(store_path) == files


def test_an_event_that_does_not_match_the_log_stops_packing_before_anything_is_removed(store_path: str) -> None:
    fill(store_path, 10)
    target = Path(store_path, "events", "ev-4.json")
    os.chmod(target, 0o644)
    target.write_bytes(target.read_bytes().replace(b'"i":4', b'"i":5'))
    report = compact(store_path)
    assert report.exit_code == 4 and "event-hash-mismatch" in report.counts()
    assert len(loose(store_path)) == 10
    assert [n for n in os.listdir(os.path.join(store_path, "packs"))] == []


def test_old_dangling_events_are_set_aside_young_ones_kept(store_path: str) -> None:
    fill(store_path, 3)
    events = os.path.join(store_path, "events")
    old, young = os.path.join(events, "old-one.json"), os.path.join(events, "young-one.json")
    for p in (old, young):
        Path(p).write_bytes(b'{"data":1,"id":"x","metadata":null,"tags":[],"type":"Z"}')
    week_ago = time.time() - 7 * 86400
    os.utime(old, (week_ago, week_ago))
    report = compact(store_path, prune_after=86400)
    assert report.exit_code == 0 and report.counts()["dangling-event"] == 1
    assert loose(store_path) == ["young-one.json"]
    lost = Path(store_path, "lost-found")
    [folder] = [d for d in lost.iterdir() if d.name.endswith("-dangling")]
    assert (folder / "old-one.json").exists() and "no log line names" in (folder / "NOTE.txt").read_text()
    assert compact(store_path, prune_after=float("inf")).figures.get("dangling_set_aside") is None
    assert loose(store_path) == ["young-one.json"]


def test_stale_temp_files_are_cleared_user_bytes_into_lost_found(store_path: str) -> None:
    fill(store_path, 3)
    pid = dead_pid()
    event_tmp = Path(store_path, "events", f".tmp-{pid}-aaaa")
    pack_tmp = Path(store_path, "packs", f".tmp-{pid}-bbbb.pack")
    index_tmp = Path(store_path, "index", f".tmp-{pid}-cccc")
    live_tmp = Path(store_path, "events", f".tmp-{os.getpid()}-dddd")
    for p in (event_tmp, pack_tmp, index_tmp, live_tmp):
        p.write_bytes(b"bytes")
    rebuild = Path(store_path, f".tmp-{pid}-eeee-reindex")  # an unfinished index rebuild
    (rebuild / "types").mkdir(parents=True)
    report = compact(store_path)
    assert report.counts()["stale-temp-file"] == 4
    assert not event_tmp.exists() and not pack_tmp.exists() and not index_tmp.exists() and live_tmp.exists()
    [folder] = [d for d in Path(store_path, "lost-found").iterdir() if d.name.endswith("-stale-temp")]
    assert (folder / event_tmp.name).read_bytes() == b"bytes"
    assert (folder / rebuild.name / "types").is_dir() and not rebuild.exists()


def test_a_loose_copy_of_a_packed_event_is_removed_only_when_identical(store_path: str) -> None:
    fill(store_path, 5)
    raw = Path(store_path, "events", "ev-2.json").read_bytes()
    compact(store_path)
    Path(store_path, "events", "ev-2.json").write_bytes(raw)  # as if the compaction died before removing it
    Path(store_path, "events", "ev-3.json").write_bytes(b'{"other":"bytes"}')
    report = compact(store_path)
    assert report.counts().get("loose-duplicate") == 1
    assert loose(store_path) == ["ev-3.json"]  # not a copy: left until it is old enough to prune
    assert problems(store_path) == [] or all("ev-3" in p for p in problems(store_path))


def test_leftovers_of_an_interrupted_merge_are_removed(store_path: str) -> None:
    fill(store_path, 6)
    compact(store_path)
    folder = os.path.join(store_path, "packs")
    ps = PackSet(folder)
    from kroniko_ops.ops.compact_write import PackWriter

    w = PackWriter(folder, 1, durable=False)
    w.add([raw for _p, raw in ps.iter_range(1, 3)])
    w.finish()
    w.publish()
    Path(folder, pack_name(7, 9) + ".idx").write_bytes(b"orphan")
    report = compact(store_path)
    assert report.counts() == {"pack-orphan-index": 1, "pack-superseded": 1}
    assert sorted(os.listdir(folder)) == [pack_name(1, 6) + ".idx", pack_name(1, 6) + ".pack"]


def test_cli_compact_json_dry_run_and_errors(store_path: str, tmp_path: Path) -> None:
    runner = CliRunner()
    fill(store_path, 4)
    res = runner.invoke(cli, ["compact", store_path, "--dry-run"])
    assert res.exit_code == 0 and "would pack positions 1..4 (4 events)" in res.output
    res = runner.invoke(cli, ["compact", store_path, "--json", "--prune-after", "3d"])
    assert res.exit_code == 0, res.output
    lines = [orjson.loads(line) for line in res.output.splitlines()]
    assert lines[-1]["kind"] == "summary" and lines[-1]["exit_code"] == 0 and lines[-1]["packs"] == 1
    assert any(x.get("code") == "compact-pack" for x in lines)
    res = runner.invoke(cli, ["compact", store_path, "--prune-after", "soon"])
    assert res.exit_code == 2 and "--prune-after" in res.output
    res = runner.invoke(cli, ["compact", str(tmp_path / "nowhere")])
    assert res.exit_code == 8
    fill_more(store_path, 2)
    os.unlink(os.path.join(store_path, "events", sorted(loose(store_path))[0]))
    res = runner.invoke(cli, ["compact", store_path])
    assert res.exit_code == 4 and "compact-refused" in res.output


def test_packs_are_within_a_few_percent_of_the_events_bytes(store_path: str) -> None:
    fill(store_path, 200)
    own = sum(len(Path(store_path, "events", n).read_bytes()) for n in loose(store_path))
    compact(store_path)
    folder = os.path.join(store_path, "packs")
    size = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
    assert size < own * 1.2  # 14 bytes per event (newline + offset line) and two trailers
    digest = hashlib.sha256(b"".join(raw for _p, raw in PackSet(folder).iter_range(1, 200))).hexdigest()
    assert digest == hashlib.sha256(b"".join(
        Path(folder, pack_name(1, 200) + ".pack").read_bytes()[:-106].split(b"\n")[:-1])).hexdigest()


def test_a_damaged_index_is_rebuilt_by_compaction(store_path: str) -> None:
    fill(store_path, 12)
    before = reads(store_path)
    checkpoint = Path(store_path, "index", "CHECKPOINT")
    checkpoint.write_bytes(b"garbage\n")
    report = compact(store_path)
    assert report.exit_code == 0, report.findings
    assert "index-compact" in report.counts()
    assert problems(store_path) == []
    assert reads(store_path) == before


def test_reindex_on_request(store_path: str) -> None:
    fill(store_path, 5)
    report = compact(store_path, reindex=True)
    assert report.exit_code == 0 and report.figures.get("index_rebuilt") == 1
    assert problems(store_path) == []


def test_a_second_maintenance_job_waits_for_the_lock_then_gives_up(store_path: str) -> None:
    fill(store_path, 3)
    with held(os.path.join(store_path, "locks", "maintenance.lock"), 1, "maintenance"), \
            pytest.raises(StoreLocked, match="maintenance"):
        compact(store_path, lock_timeout=0.05)
    assert len(loose(store_path)) == 3
