"""fsck on format 3: each kind of damage gives its exact finding code, and --repair does only what
is safe (damage to committed records is never touched)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fsck_store_helpers import (
    build,
    dead_pid,
    flip,
    lost_found,
    pack_first_segment,
    problems,
    seg_path,
    segments,
    write_after_records,
)

from kroniko_ops import Event, EventStore, InvalidArgument, fsck
from kroniko_ops.format import record as recfmt
from kroniko_ops.indexdb import generations
from kroniko_ops.synced import SyncedFile


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = str(tmp_path / "s")
    build(path)
    return path


def _index_db(path: str) -> str:
    folder = os.path.join(path, "index")
    return os.path.join(folder, f"{generations(folder)[-1]:06d}.sqlite3")


def _sql(path: str, *statements: str) -> None:
    con = sqlite3.connect(_index_db(path))
    for s in statements:
        con.execute(s)
    con.commit()
    con.close()


def _tree(path: str) -> dict[str, bytes]:
    out = {}
    for base in ("log", "packs"):
        for name in sorted(os.listdir(os.path.join(path, base))):
            out[f"{base}/{name}"] = Path(path, base, name).read_bytes()
    return out


@pytest.mark.parametrize("quick", [False, True])
def test_a_clean_store_is_clean(store: str, quick: bool) -> None:
    pack_first_segment(store)
    report = fsck(store, quick=quick)
    assert report.problems == [], report.findings
    assert report.exit_code == 0 and report.head == 36
    if not quick:
        assert report.figures["events_checked"] == 36


def test_flipped_body_byte_in_a_sealed_segment_is_reported_never_repaired(store: str) -> None:
    first = segments(store)[1]
    seg = seg_path(store, first)
    data = seg.read_bytes()
    second = data.index(b"\n") + 1  # the segment's second record
    flip(seg, second + recfmt.HEADER + 10)
    assert fsck(store, quick=True).exit_code == 0  # the quick level hashes nothing
    report = fsck(store)
    assert problems(report) == {"segment-corrupt", "event-hash-mismatch"}
    assert {f.position for f in report.problems} == {first, first + 1}
    before = _tree(store)
    repaired = fsck(store, repair=True)
    assert repaired.exit_code == 4 and not any(f.repaired for f in repaired.findings)
    assert _tree(store) == before


def test_flipped_header_byte_is_a_bad_line(store: str) -> None:
    first = segments(store)[1]
    seg = seg_path(store, first)
    second = seg.read_bytes().index(b"\n") + 1
    flip(seg, second + 20)  # inside the id: fails the header CRC
    report = fsck(store)
    assert problems(report) == {"segment-corrupt", "log-bad-line"}
    assert [f.position for f in report.findings if f.code == "log-bad-line"] == [first + 1]


def test_torn_active_tail_is_cut_into_lost_found_by_repair(store: str) -> None:
    active = seg_path(store, segments(store)[-1])
    write_after_records(active, b"000000000037 half a record")  # a writer killed mid-write
    for quick in (True, False):
        report = fsck(store, quick=quick)
        assert problems(report) == {"log-torn-tail"}
        assert report.findings[0].position == 37
    dry = fsck(store, repair=True, dry_run=True)
    assert "--repair would run recovery" in dry.problems[0].message
    report = fsck(store, repair=True)
    assert report.exit_code == 1 and report.findings[0].repaired
    assert any(name.endswith("log-tail") for name in lost_found(store))
    assert fsck(store).exit_code == 0


def test_uncommitted_records_are_an_uncommitted_tail(store: str) -> None:
    with EventStore(store) as s:
        chain = s.synced_state().chain
    items = [(eid, b'{"data":1,"id":"%s","metadata":null,"tags":[],"type":"T"}' % eid.encode())
             for eid in ("late-1", "late-2")]
    data, sizes, _ = recfmt.encode(37, chain, items)
    # The first record of a batch of two: no commit mark yet.
    write_after_records(seg_path(store, segments(store)[-1]), data[:sizes[0]])
    assert problems(fsck(store)) == {"log-uncommitted-tail"}
    assert fsck(store, repair=True).exit_code == 1
    assert fsck(store).exit_code == 0


def test_lost_offset_index_of_the_last_sealed_segment_is_rebuilt(store: str) -> None:
    last_sealed = segments(store)[-2]
    idx = seg_path(store, last_sealed, "idx")
    original = idx.read_bytes()
    idx.unlink()  # a power cut while sealing
    report = fsck(store, quick=True)
    assert problems(report) == {"segment-corrupt"}
    report = fsck(store, repair=True)
    assert report.exit_code == 1, report.findings
    assert idx.read_bytes() == original
    assert fsck(store).exit_code == 0


def test_lost_offset_index_of_an_older_segment_is_not_repaired(store: str) -> None:
    seg_path(store, segments(store)[0], "idx").unlink()
    assert problems(fsck(store)) == {"segment-corrupt"}
    assert fsck(store, repair=True).exit_code == 4


@pytest.mark.parametrize(("sql", "code"), [
    ("DELETE FROM ids WHERE position = 5", "index-missing-entry"),
    ("DELETE FROM postings WHERE position = 7 AND term = (SELECT min(term) FROM postings WHERE position = 7)",
     "index-missing-entry"),
    ("INSERT INTO ids VALUES ('ghost', 9)", "index-extra-entry"),
    ("INSERT INTO terms(kind, name) VALUES (1, 'ghost'); "
     "INSERT INTO postings VALUES ((SELECT id FROM terms WHERE name = 'ghost'), 2)", "index-extra-entry"),
])
def test_index_rows_differing_from_the_log_are_found_and_reindexed(store: str, sql: str, code: str) -> None:
    _sql(store, *sql.split("; "))
    assert fsck(store, quick=True).exit_code == 0
    report = fsck(store)
    assert problems(report) == {code}, report.findings
    assert fsck(store, repair=True).exit_code == 1
    assert fsck(store).exit_code == 0


def test_index_checkpoint_ahead_of_the_log(store: str) -> None:
    _sql(store, "UPDATE checkpoint SET position = position + 5")
    assert problems(fsck(store, quick=True)) == {"index-checkpoint-ahead"}
    assert fsck(store, repair=True).exit_code == 1
    assert fsck(store).exit_code == 0


def test_index_checkpoint_of_another_history(store: str) -> None:
    _sql(store, "UPDATE checkpoint SET chain = zeroblob(32)")
    assert problems(fsck(store, quick=True)) == {"index-checkpoint-mismatch"}
    assert fsck(store, repair=True).exit_code == 1
    assert fsck(store).exit_code == 0


def test_stale_temp_and_stray_files_are_set_aside(store: str) -> None:
    temp = f".tmp-{dead_pid()}-000000000001.idx"
    Path(store, "log", temp).write_bytes(b"x")
    Path(store, "notes.txt").write_text("mine")
    Path(store, "packs", "junk").write_text("x")
    report = fsck(store, quick=True)
    assert sorted((f.code, f.path) for f in report.problems) == [
        ("stale-temp-file", f"log/{temp}"), ("stray-file", "notes.txt"), ("stray-file", "packs/junk")]
    report = fsck(store, repair=True)
    assert report.exit_code == 1, report.findings
    assert not Path(store, "notes.txt").exists() and not Path(store, "log", temp).exists()
    assert len(lost_found(store)) == 3
    assert fsck(store).exit_code == 0


def test_symlink_and_fifo_are_reported_and_never_followed(store: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("secret")
    os.symlink(outside, Path(store, "packs", "link.pack"))
    os.mkfifo(Path(store, "log", "999999999999.seg"))
    # A blocking open of the FIFO would hang: run in a child under a timeout.
    code = ("import sys; from kroniko_ops import fsck; r = fsck(sys.argv[1]); "
            "print(sorted({f.code for f in r.problems}))")
    out = subprocess.run([sys.executable, "-c", code, store], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['layout-special-file', 'layout-symlink']"
    assert fsck(store, repair=True).exit_code == 4
    assert Path(store, "packs", "link.pack").is_symlink()


def test_poisoned_store_is_reported_and_recovered(store: str) -> None:
    synced = SyncedFile(os.path.join(store, "locks", "synced"))
    synced.poison()
    synced.close()
    assert problems(fsck(store, quick=True)) == {"store-poisoned"}
    assert fsck(store, repair=True).exit_code == 1
    with EventStore(store) as s:
        s.append(Event("T", {}, []))


def test_not_a_store_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "file.txt").write_text("x")
    for repair in (False, True):
        with pytest.raises(InvalidArgument):
            fsck(str(folder), repair=repair)
    assert sorted(os.listdir(folder)) == ["file.txt"]


def test_max_errors_stops_early(store: str) -> None:
    for name in ("a", "b", "c"):
        Path(store, name).write_text("x")
    report = fsck(store, max_errors=2)
    assert len(report.problems) == 2 and report.findings[-1].code == "stopped"


def test_legacy_store_is_checked_by_the_legacy_checker(legacy_clean: str) -> None:
    report = fsck(legacy_clean)
    assert report.exit_code == 0 and report.head == 400


def test_worker_processes_report_what_one_process_reports(store: str) -> None:
    pack_first_segment(store)
    seg = seg_path(store, segments(store)[2])
    flip(seg, recfmt.HEADER + 3)
    with EventStore(store) as s:
        s.append(Event("R", {}, [], {"causation_id": "nowhere"}))

    def seen(jobs: int) -> list[tuple[str, int | None]]:
        return [(f.code, f.position) for f in fsck(store, jobs=jobs).findings]

    one = seen(1)
    assert {c for c, _p in one} == {"segment-corrupt", "event-hash-mismatch", "dangling-reference"}
    assert seen(3) == one


def test_a_check_writes_nothing(store: str) -> None:
    Path(store, "notes.txt").write_text("x")

    def state() -> dict[str, tuple[int, int]]:
        out = {}
        for folder, _dirs, files in os.walk(store):
            for name in files:
                if name.endswith(("-wal", "-shm")):
                    continue  # SQLite's shared memory for readers
                st = os.stat(os.path.join(folder, name))
                out[os.path.relpath(os.path.join(folder, name), store)] = (st.st_size, st.st_mtime_ns)
        return out

    before = state()
    for kwargs in ({}, {"quick": True}, {"refs_only": True}, {"repair": True, "dry_run": True}):
        assert fsck(store, **kwargs).exit_code in (0, 4)
    assert state() == before
