"""What ``compact`` does to a store a user relies on: sealed segments packed, every read the
same before and after, the active segment untouched, appends carrying on, leftovers of an
interrupted run cleared, damage left alone and reported, old lost-found/ entries pruned."""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from compact_helpers import (
    SMALL,
    compact_dying_at,
    contents,
    files,
    fill,
    fsck_problems,
    reads,
    removing_packs,
    soundness,
)

from kroniko_ops import Event, EventStore, InvalidArgument, LegacyStore, StoreLocked, locking
from kroniko_ops.cli import cli
from kroniko_ops.format import pack as packfmt
from kroniko_ops.format import segment as segfmt
from kroniko_ops.layout import Layout, set_aside
from kroniko_ops.ops.compact import compact


def tree(path: str, *folders: str) -> dict[str, bytes]:
    """The bytes of every file in the given folders of the store."""
    out = {}
    for folder in folders:
        for d, _s, names in os.walk(os.path.join(path, folder)):
            for n in names:
                out[os.path.relpath(os.path.join(d, n), path)] = Path(d, n).read_bytes()
    return out


def pack_sizes(path: str) -> list[int]:
    """The sizes of the packs in position order."""
    return [os.path.getsize(os.path.join(path, "packs", n)) for n in files(path, "packs")]


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_an_empty_store_compacts_to_nothing(store_path: str) -> None:
    EventStore(store_path).close()
    report = compact(store_path)
    assert report.exit_code == 0 and report.head == 0
    assert files(store_path, "packs") == [] and files(store_path, "log") == ["000000000001.seg"]


def test_sealed_segments_are_packed_and_every_read_is_the_same(store_path: str) -> None:
    fill(store_path, 300)
    before = reads(store_path)
    active = [f for f in files(store_path, "log") if f.endswith(".seg")][-1]
    report = compact(store_path)
    assert report.exit_code == 0, report.findings
    # Only the active segment (and the preallocated next one) is left in log/.
    assert files(store_path, "log") == [active, "next.prealloc"]
    assert len(files(store_path, "packs")) == 1
    assert report.figures["segments_packed"] > 10 and report.figures["packs_written"] == 1
    assert report.figures["bytes_after"] < report.figures["bytes_before"]
    assert reads(store_path) == before
    assert soundness(store_path) == []
    again = compact(store_path)  # nothing left to do
    assert again.exit_code == 0 and "packs_written" not in again.figures and reads(store_path) == before


def test_the_store_is_fsck_clean_after_compaction(store_path: str) -> None:
    fill(store_path, 200)
    assert compact(store_path).exit_code == 0
    fill(store_path, 100, start=200)
    assert compact(store_path).exit_code == 0
    assert fsck_problems(store_path) == []


def test_the_active_segment_is_never_touched(store_path: str) -> None:
    fill(store_path, 100)
    active = os.path.join(store_path, "log", files(store_path, "log")[-1])
    st, data = os.stat(active), Path(active).read_bytes()
    compact(store_path)
    assert os.path.exists(active) and Path(active).read_bytes() == data
    assert (os.stat(active).st_ino, os.stat(active).st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_handles_opened_before_compaction_read_and_append_on(store_path: str) -> None:
    expected = fill(store_path, 150)
    with EventStore(store_path, durable=False) as old:
        assert [e.event for e in old.read()] == expected
        for _ in range(3):
            assert compact(store_path).exit_code == 0
            more = [Event("T", {"i": len(expected) + k}, ["k:1"], id=f"late-{len(expected) + k}") for k in range(25)]
            for e in more:
                old.append(e)
            expected += more
            assert [e.event for e in old.read()] == expected
            assert [e.event for e in old.read(backwards=True, limit=7)] == expected[::-1][:7]
    with EventStore(store_path, durable=False, segment_bytes=SMALL) as new:
        new.append(Event("T", {"i": -1}, ["k:1"], id="last"))
    assert [e for _p, e in contents(store_path)] == [*expected, Event("T", {"i": -1}, ["k:1"], id="last")]
    assert compact(store_path).exit_code == 0 and soundness(store_path) == []


def test_dry_run_says_what_it_would_do_and_changes_nothing(store_path: str) -> None:
    fill(store_path, 200)
    compact(store_path)
    fill(store_path, 200, start=200)
    Path(store_path, "packs", f".tmp-{dead_pid()}-feed.pack").write_bytes(b"half a pack")
    old = Path(store_path, "lost-found", "20000101T000000Z-1-abcdef-torn-tail")
    old.mkdir()
    (old / "NOTE.txt").write_text("old bytes\n")
    before = tree(store_path, "log", "packs", "lost-found")
    report = compact(store_path, dry_run=True)
    assert report.exit_code == 0 and report.figures["dry_run"] is True
    assert tree(store_path, "log", "packs", "lost-found") == before
    codes = {f.code for f in report.findings}
    assert {"compact-merge", "stale-temp-file", "lost-found-pruned"} <= codes
    assert any("1 packs and" in f.message and "sealed segments" in f.message for f in report.findings)
    assert all(f.message.startswith("would") for f in report.findings if f.code != "index-upkeep")


def test_repeated_compactions_keep_packs_geometric(store_path: str) -> None:
    expected = []
    for k in range(8):
        expected += fill(store_path, 60, start=60 * k)
        assert compact(store_path).exit_code == 0
        sizes = pack_sizes(store_path)
        assert all(a >= 2 * b for a, b in itertools.pairwise(sizes)), sizes
    assert [e for _p, e in contents(store_path)] == expected
    assert soundness(store_path) == []


def test_packs_take_little_more_disk_than_the_events_json(store_path: str) -> None:
    events = [Event("OrderPlaced", {"order": f"order-{i:06d}", "customer": f"customer-{i % 50}",
                                    "lines": [{"sku": f"SKU-{(i + j) % 20}", "qty": j + 1, "price": "19.90"}
                                              for j in range(3)], "currency": "EUR", "channel": "web"},
                    [f"customer:{i % 50}", f"order:{i}"], {"source": "checkout"}) for i in range(3000)]
    with EventStore(store_path, durable=False, segment_bytes=64 * 1024) as s:
        for k in range(0, len(events), 50):
            s.append(events[k:k + 50])
        json_bytes = sum(len(r.body) for r in s.records(1, s.head()))
    assert compact(store_path).exit_code == 0
    packed = sum(pack_sizes(store_path))
    active = os.path.getsize(os.path.join(store_path, "log", files(store_path, "log")[-1]))
    assert packed <= 1.5 * json_bytes, (packed, json_bytes, active)


def test_a_damaged_sealed_segment_is_reported_and_left_alone(store_path: str) -> None:
    fill(store_path, 200)
    seg = os.path.join(store_path, "log", [n for n in files(store_path, "log") if n.endswith(".seg")][4])
    data = bytearray(Path(seg).read_bytes())
    data[300] ^= 1  # a byte of the first record's JSON: its event hash no longer matches
    Path(seg).write_bytes(bytes(data))
    before = tree(store_path, "log")
    report = compact(store_path)
    assert report.exit_code == 4
    assert [f.code for f in report.problems] == ["segment-corrupt"]
    assert tree(store_path, "log") == before and files(store_path, "packs") == []


@pytest.mark.parametrize(("suffix", "code"), [(".seg", "segment-packed"), (".idx", "segment-orphan-index")])
def test_leftovers_of_an_interrupted_run_are_cleared_by_the_next(store_path: str, suffix: str, code: str) -> None:
    fill(store_path, 150)
    compact(store_path)
    expected = fill(store_path, 150, start=150)
    before = reads(store_path)
    # The run dies where it removes the inputs of a pack.
    compact_dying_at(store_path, lambda op, path: op == "unlink" and path.endswith(suffix))
    assert reads(store_path) == before
    names = files(store_path, "log")
    assert len(names) > 2 and len(files(store_path, "packs")) == 1
    live_tmp = Path(store_path, "packs", f".tmp-{os.getppid()}-busy.pack")  # another, living process
    live_tmp.write_bytes(b"a pack being written right now")
    Path(store_path, "packs", f".tmp-{dead_pid()}-feed.pack").write_bytes(b"half a pack")
    report = compact(store_path)
    assert report.exit_code == 0, report.findings
    codes = [f.code for f in report.findings]
    assert code in codes and "stale-temp-file" in codes
    assert live_tmp.exists()  # its process lives: it may still be written
    live_tmp.unlink()
    assert reads(store_path) == before and [e for _p, e in contents(store_path)][150:] == expected
    assert soundness(store_path) == [] and fsck_problems(store_path) == []


def test_the_inputs_of_a_published_merge_are_removed_by_the_next_run(store_path: str) -> None:
    fill(store_path, 150)
    compact(store_path)
    fill(store_path, 150, start=150)
    before = reads(store_path)

    compact_dying_at(store_path, removing_packs)
    assert len(files(store_path, "packs")) == 2 and reads(store_path) == before  # the old pack, the new one
    report = compact(store_path)
    codes = [f.code for f in report.findings]
    assert report.exit_code == 0 and codes.count("pack-superseded") == 1 and "segment-packed" in codes
    assert len(files(store_path, "packs")) == 1 and reads(store_path) == before and soundness(store_path) == []


def test_a_damaged_superseded_pack_is_set_aside_not_deleted(store_path: str) -> None:
    # A leftover whose last chain hash cannot be read cannot be proven a copy of the merged
    # pack: it goes into lost-found/ as it was, and the run still ends clean.
    fill(store_path, 150)
    compact(store_path)
    [old] = files(store_path, "packs")
    fill(store_path, 150, start=150)
    before = reads(store_path)

    compact_dying_at(store_path, removing_packs)
    old_path = Path(store_path, "packs", old)
    damaged = bytearray(old_path.read_bytes())
    for at in range(len(damaged) - 40, len(damaged)):  # its trailer: it no longer says its chain
        damaged[at] ^= 0xFF
    old_path.write_bytes(bytes(damaged))
    report = compact(store_path)
    assert report.exit_code == 0, report.findings
    [note] = [f for f in report.findings if f.code == "pack-superseded"]
    assert "lost-found" in note.message
    kept = list(Path(store_path, "lost-found").glob(f"*-compact-leftover/{old}"))
    assert len(kept) == 1 and kept[0].read_bytes() == bytes(damaged)
    assert files(store_path, "packs") != [old] and len(files(store_path, "packs")) == 1
    assert reads(store_path) == before and soundness(store_path) == []


def test_a_packed_segment_left_beside_a_damaged_pack_is_kept(store_path: str) -> None:
    fill(store_path, 100)

    compact_dying_at(store_path, lambda op, path: op == "unlink" and path.endswith(".seg"))
    [name] = files(store_path, "packs")
    pack = os.path.join(store_path, "packs", name)
    data = bytearray(Path(pack).read_bytes())
    data[20] ^= 0xFF  # inside the first compressed block
    Path(pack).write_bytes(bytes(data))
    segs = tree(store_path, "log")
    report = compact(store_path)
    assert report.exit_code == 4 and {f.code for f in report.problems} == {"pack-corrupt"}
    assert tree(store_path, "log") == segs  # the only good copy stays


def test_old_lost_found_entries_are_pruned_and_each_named(store_path: str) -> None:
    fill(store_path, 20)
    lay = Layout(store_path)
    young = set_aside(store_path, "torn-tail", "young bytes", files={"tail.bin": b"abc"}, durable=False)
    old = Path(lay.lost_found, "20000101T000000Z-1-abcdef-torn-tail")
    (old / "sub").mkdir(parents=True)
    (old / "NOTE.txt").write_text("an old torn tail\n")
    (old / "sub" / "x.bin").write_bytes(b"x" * 100)
    os.symlink("/etc/passwd", old / "link")
    by_hand = Path(lay.lost_found, "copied-by-hand.bin")
    by_hand.write_bytes(b"y")
    month_ago = time.time() - 31 * 86400
    os.utime(by_hand, (month_ago, month_ago))
    assert compact(store_path, prune_age=0).figures.get("lost_found_pruned") is None  # 0 disables
    report = compact(store_path, prune_age=30)
    pruned = sorted(f.path for f in report.findings if f.code == "lost-found-pruned")
    assert pruned == ["lost-found/20000101T000000Z-1-abcdef-torn-tail", "lost-found/copied-by-hand.bin"]
    assert any("an old torn tail" in f.message for f in report.findings)
    assert report.figures["lost_found_pruned"] == 2 and report.exit_code == 0
    assert os.listdir(lay.lost_found) == [os.path.basename(young)] and os.path.exists("/etc/passwd")


def test_the_index_is_vacuumed_when_much_of_it_is_free(store_path: str) -> None:
    fill(store_path, 50)
    [db] = [n for n in os.listdir(os.path.join(store_path, "index")) if n.endswith(".sqlite3")]
    con = sqlite3.connect(os.path.join(store_path, "index", db))
    con.execute("CREATE TABLE junk(x)")
    con.executemany("INSERT INTO junk VALUES (?)", [(b"z" * 1000,) for _ in range(2000)])
    con.commit()
    con.execute("DROP TABLE junk")
    con.commit()
    con.close()
    report = compact(store_path)
    assert report.figures.get("index_vacuumed") == 1 and report.figures["index_free_pages"] > 256
    assert compact(store_path).figures["index_free_pages"] == 0
    assert len(reads(store_path)["tag"]) > 0


def test_one_maintenance_job_at_a_time(store_path: str) -> None:
    fill(store_path, 20)
    with locking.held(Layout(store_path).maintenance_lock, 1.0, "maintenance"):
        with pytest.raises(StoreLocked):
            compact(store_path, lock_timeout=0.1)


def test_bad_arguments_and_stores_are_refused(store_path: str, legacy_clean: str) -> None:
    fill(store_path, 5)
    for kw in ({"prune_age": -1}, {"prune_age": float("nan")}, {"block_bytes": 10}, {"prune_age": True}):
        with pytest.raises(InvalidArgument):
            compact(store_path, **kw)
    with pytest.raises(LegacyStore):
        compact(legacy_clean)


def test_cli_compact(store_path: str) -> None:
    fill(store_path, 100)
    runner = CliRunner()
    dry = runner.invoke(cli, ["compact", store_path, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    lines = [orjson.loads(line) for line in dry.output.splitlines()]
    assert lines[-1]["kind"] == "summary" and lines[-1]["dry_run"] is True
    assert files(store_path, "packs") == []
    done = runner.invoke(cli, ["compact", store_path, "--prune-age", "7", "--lock-timeout", "5"])
    assert done.exit_code == 0 and "compact" in done.output and len(files(store_path, "packs")) == 1
    assert runner.invoke(cli, ["compact", store_path, "--prune-age", "-3"]).exit_code == 2
    assert runner.invoke(cli, ["compact", store_path + "-missing"]).exit_code == 8


def test_packs_hold_the_segments_exact_bytes(store_path: str) -> None:
    fill(store_path, 120)
    log = os.path.join(store_path, "log")
    sealed = [p[0] for n in files(store_path, "log") if (p := segfmt.parse_name(n)) and p[1] == "seg"][:-1]
    raw = b"".join(Path(log, segfmt.seg_name(f)).read_bytes() for f in sealed)
    compact(store_path, block_bytes=4096)
    [name] = files(store_path, "packs")
    with packfmt.PackReader(os.path.join(store_path, "packs", name)) as r:
        assert b"".join(r.read_range(r.first, r.last)) == raw and len(r.blocks) > 1
