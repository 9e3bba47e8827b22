"""fsck while another process appends: read-only, no lock, and never a false problem; an
interrupted seal and an unreadable index database, found and repaired."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
from pathlib import Path

import pytest
from fsck_store_helpers import build, problems, seg_path, segments
from fsck_workers import append_batches

from kroniko_ops import compact, fsck
from kroniko_ops.format import segment as segfmt
from kroniko_ops.index import generations
from kroniko_ops.ops.fsck import check


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
    real = check.build_plan

    def plan_then_compact(ctx):  # type: ignore[no-untyped-def]
        plan = real(ctx)
        assert compact(path, durable=False).exit_code == 0
        return plan

    monkeypatch.setattr(check, "build_plan", plan_then_compact)
    report = fsck(path, jobs=1)
    assert report.problems == [], report.findings
    assert "segment-superseded" in {f.code for f in report.findings}
    assert os.listdir(os.path.join(path, "packs"))
