"""fsck while another process appends: read-only, no lock, and never a false problem; an
interrupted seal and an unreadable index database, found and repaired."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
from pathlib import Path

import pytest
from fsck_store_helpers import build, problems, seg_path, segments
from fsck_workers import append_and_compact, append_batches

from kroniko_ops import Event, EventStore, compact, fsck, reindex
from kroniko_ops.format import segment as segfmt
from kroniko_ops.indexdb import generations
from kroniko_ops.ops.fsck import check, coverage, index_check, parallel, tail


def test_checks_during_appends_find_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    child = mp.get_context("spawn").Process(target=append_batches, args=(path, 1500))
    child.start()
    try:
        seen = 0
        while child.is_alive() or seen < 2:
            for quick in (True, False):
                report = fsck(path, quick=quick)
                assert report.problems == [], report.findings
            seen += 1
    finally:
        child.join(timeout=120)
        if child.is_alive():
            child.kill()
            child.join(10)
    assert child.exitcode == 0
    assert fsck(path).exit_code == 0


def test_interrupted_seal_is_finished_by_repair(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    head = build(path)
    active = segments(path)[-1]
    fd = os.open(seg_path(path, active), os.O_RDWR)
    try:
        os.ftruncate(fd, segfmt.data_end(fd))  # sealing trims the preallocated zeros first
        data = segfmt.build_seal(fd, active, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    seg_path(path, active, "idx").write_bytes(data)  # sealed, then a crash before the next segment
    assert problems(fsck(path, quick=True)) == {"segment-seal-unfinished"}
    report = fsck(path, repair=True)
    assert report.exit_code == 1, report.findings
    assert segments(path)[-1] == head + 1
    assert fsck(path).exit_code == 0


def test_unreadable_index_database_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    folder = os.path.join(path, "index")
    db = Path(folder, f"{generations(folder)[-1]:06d}.sqlite3")
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 300)
    report = fsck(path, quick=True)
    assert problems(report) == {"index-corrupt"}
    report = fsck(path, repair=True)
    assert report.exit_code == 1, report.findings
    assert any(name.endswith("-index") for name in os.listdir(Path(path, "lost-found")))
    assert fsck(path).exit_code == 0


def test_index_pages_damaged_inside_are_found_by_quick_check(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path, batches=60)
    folder = os.path.join(path, "index")
    db = Path(folder, f"{generations(folder)[-1]:06d}.sqlite3")
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_terms_1'").fetchone()[0]
    size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    raw = bytearray(db.read_bytes())
    for i in range(size * (root - 1), size * (root - 1) + 8):  # that b-tree page's header
        raw[i] ^= 0x5A
    db.write_bytes(bytes(raw))
    assert fsck(path, quick=True).exit_code == 0  # the quick level does not read the pages
    assert problems(fsck(path)) == {"index-corrupt"}
    assert fsck(path, repair=True).exit_code == 1
    assert fsck(path).exit_code == 0


def test_files_compacted_away_during_the_walk_are_read_from_their_pack(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """fsck keeps no file open between planning and reading it: a segment compaction removes
    meanwhile is read from the pack that holds its records, with nothing reported but that."""
    path = str(tmp_path / "s")
    build(path, batches=30)
    real = coverage.build_plan

    def plan_then_compact(ctx):  # type: ignore[no-untyped-def]
        plan = real(ctx)
        assert compact(path, durable=False).exit_code == 0
        return plan

    for module in (tail, check):  # wherever the check calls it from
        monkeypatch.setattr(module, "build_plan", plan_then_compact, raising=False)
    report = fsck(path, jobs=1)
    assert report.problems == [], report.findings
    assert "segment-superseded" in {f.code for f in report.findings}
    assert os.listdir(os.path.join(path, "packs"))


@pytest.mark.parametrize("hook", ["_open_sealed", "_open_pack"])
def test_files_compacted_away_after_the_listing_are_listed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 hook: str) -> None:
    """A compaction between fsck's listing of log/ and packs/ and its opening of the files
    listed (it merges the pack into a new one and removes the old pack and the segments): the
    files are listed again, as readers do, and nothing is reported. Before, the pack listed but
    gone was reported as pack-corrupt and its positions as a segment-gap, each telling the
    operator to restore from a backup (issue 16 item 2)."""
    path = str(tmp_path / "s")
    build(path, batches=30)
    assert compact(path, durable=False).exit_code == 0
    real = getattr(coverage, hook)
    done = []

    def compact_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not done:
            done.append(compact(path, durable=False).exit_code)
        return real(*args, **kwargs)

    monkeypatch.setattr(coverage, hook, compact_first)
    for quick in (True, False):
        append_batches(path, 40)  # sealed segments for the compaction to pack
        listed = sorted(os.listdir(os.path.join(path, "packs")))
        done.clear()
        report = fsck(path, quick=quick, jobs=1)
        assert done == [0]
        assert sorted(os.listdir(os.path.join(path, "packs"))) != listed  # the race did happen
        assert report.problems == [], report.findings


def test_fsck_never_reports_damage_while_one_process_appends_and_compacts(tmp_path: Path) -> None:
    """The issue's loop at CI size: segments of 4 KiB, one process appending and compacting,
    fsck (full and quick, read-only) in a loop meanwhile; a healthy store is never reported
    damaged, however busy."""
    path = str(tmp_path / "s")
    build(path)
    child = mp.get_context("spawn").Process(target=append_and_compact, args=(path, 400, 25))
    child.start()
    runs = 0
    try:
        while child.is_alive() or runs < 2:
            for quick in (False, True):
                report = fsck(path, quick=quick)
                assert report.problems == [], report.findings
                runs += 1
    finally:
        child.join(timeout=300)
        if child.is_alive():
            child.kill()
            child.join(10)
    assert child.exitcode == 0
    assert fsck(path).exit_code == 0


def test_an_index_generation_replaced_after_the_listing_is_listed_again(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """reindex publishes the next index generation and removes the current one: an fsck that
    listed index/ just before opens the new one, never reports the gone one as index-corrupt."""
    path = str(tmp_path / "s")
    build(path)
    old = generations(os.path.join(path, "index"))
    assert reindex(path).exit_code == 0
    assert generations(os.path.join(path, "index")) != old
    real = index_check.generations
    calls = []

    def stale_first(folder):  # type: ignore[no-untyped-def]
        calls.append(folder)
        return old if len(calls) == 1 else real(folder)  # the listing taken before reindex swapped

    monkeypatch.setattr(index_check, "generations", stale_first)
    report = fsck(path, jobs=1)
    assert report.problems == [], report.findings
    assert len(calls) >= 2


def test_an_active_segment_compacted_away_after_the_listing_is_listed_again(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Between fsck's listing and its reading of the tail, the writer rolls the active segment
    and a compaction packs and removes it: fsck takes the synced position and the listing again
    and reports nothing (before: a FileNotFoundError out of the check)."""
    path = str(tmp_path / "s")
    build(path)
    real = coverage.build_plan
    done = []

    def plan_then_roll_and_compact(ctx):  # type: ignore[no-untyped-def]
        plan = real(ctx)
        if not done:
            append_batches(path, 20)  # the listed active segment fills, is sealed
            done.append(compact(path, durable=False).exit_code)  # and packed and removed
            assert plan.active_path is not None and not os.path.exists(plan.active_path)
        return plan

    for module in (tail, check):  # wherever the check calls it from
        monkeypatch.setattr(module, "build_plan", plan_then_roll_and_compact, raising=False)
    for quick in (True, False):
        done.clear()
        report = fsck(path, quick=quick, jobs=1)
        assert done == [0]
        assert report.problems == [], report.findings


def test_a_pack_merged_away_while_fsck_looks_for_it_is_found_in_the_bigger_one(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A sealed segment fsck planned is packed and removed, then that pack merged into a bigger
    one and removed too: the walk, looking for the pack holding the segment's records, lists
    packs/ again when the one it listed is gone. Before, it gave up: a segment-gap and dozens
    of index-extra-entry on a healthy store (issue 16 item 2)."""
    path = str(tmp_path / "s")
    build(path, batches=30)
    assert compact(path, durable=False).exit_code == 0
    append_batches(path, 40)  # sealed segments for the plan
    packs_dir = os.path.join(path, "packs")
    real_walk, real_listdir = parallel.walk, os.listdir
    stale: list[list[str]] = []

    def compact_twice_then_walk(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert compact(path, durable=False).exit_code == 0  # the planned segments -> a new pack
        stale.append(real_listdir(packs_dir))
        append_batches(path, 40)
        assert compact(path, durable=False).exit_code == 0  # that pack merged into a bigger one
        assert not set(stale[0]) & set(real_listdir(packs_dir))
        stale.append([])  # armed: the walk's first listing of packs/ is the one taken in between
        return real_walk(*args, **kwargs)

    def listdir(folder=".") -> list[str]:  # type: ignore[no-untyped-def]
        if len(stale) == 2 and os.path.abspath(folder) == os.path.abspath(packs_dir):
            stale.append([])
            return list(stale[0])
        return real_listdir(folder)

    monkeypatch.setattr(parallel, "walk", compact_twice_then_walk)
    monkeypatch.setattr(os, "listdir", listdir)
    report = fsck(path, jobs=1)
    assert len(stale) == 3, "the stale listing was never asked for"
    assert report.problems == [], report.findings


def test_a_pack_listed_but_merged_away_before_it_was_looked_at_means_list_again(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """fsck's listing of packs/ names a pack that a compaction merged into a new one (published
    after that listing was read) and removed: fsck lists again instead of reporting its
    positions as a segment-gap."""
    path = str(tmp_path / "s")
    build(path, batches=30)
    assert compact(path, durable=False).exit_code == 0
    packs_dir = os.path.join(path, "packs")
    stale = [os.listdir(packs_dir)]
    append_batches(path, 40)
    assert compact(path, durable=False).exit_code == 0
    assert not set(stale[0]) & set(os.listdir(packs_dir))
    real_listdir = os.listdir

    def listdir(folder=".") -> list[str]:  # type: ignore[no-untyped-def]
        if len(stale) == 1 and os.path.abspath(folder) == os.path.abspath(packs_dir):
            stale.append([])
            return list(stale[0])
        return real_listdir(folder)

    monkeypatch.setattr(os, "listdir", listdir)
    report = fsck(path, jobs=1)
    assert len(stale) == 2
    assert report.problems == [], report.findings


def test_index_rows_past_its_checkpoint_are_not_judged(tmp_path: Path) -> None:
    """The index vouches for positions up to its checkpoint only (readers never use it further),
    so rows past the checkpoint (what a snapshot read while a writer indexes can see) are not
    compared with the log. Before, each was an index-extra-entry error, seen in the CI loop as
    dozens of them on a healthy store (issue 16 item 2)."""
    path = str(tmp_path / "s")
    build(path)
    [gen] = generations(os.path.join(path, "index"))
    db = os.path.join(path, "index", f"{gen:06d}.sqlite3")
    with EventStore(path, durable=False) as store:
        back = store.head() - 5
        chain = next(iter(store.records(back, back))).chain
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE checkpoint SET position = ?, chain = ? WHERE k = 0", (back, chain))
    con.close()
    report = fsck(path, jobs=1)
    assert report.problems == [], report.findings
    assert "index-behind" in {f.code for f in report.findings}


def test_a_roll_during_the_spare_check_is_not_a_dirty_spare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The interleaving that made a busy store report segment-spare-dirty: fsck opens
    # log/next.prealloc, then a writer's roll renames it into the new active segment and fills
    # it with records, then fsck reads it. Played in that order here, with a real roll.
    path = str(tmp_path / "s")
    with EventStore(path, segment_bytes=4096) as store:
        store.append(Event("Seed", {"pad": "s" * 3000}))
        spare = os.path.join(path, "log", segfmt.SPARE_NAME)
        assert os.path.exists(spare) and segfmt.only_zeros(spare)
        real = segfmt.data_end
        rolled: list[int] = []

        def roll_first(fd: int, *args: int) -> int:
            if not rolled:
                rolled.append(0)  # the roll itself looks at segment ends too
                rolled[0] = store.append(Event("Roll", {"pad": "r" * 3000}))
            return real(fd, *args)

        monkeypatch.setattr(segfmt, "data_end", roll_first)
        report = fsck(path, quick=True)
        monkeypatch.undo()
    assert rolled == [2] and len(segments(path)) == 2
    assert "segment-spare-dirty" not in {f.code for f in report.findings}, report.findings
    assert report.problems == []
