"""reindex: a new generation built from the log, published while another process appends;
leftovers of an interrupted run are set aside by the next."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from recovery_helpers import append_batches, build

from kroniko_ops import EventStore, Query, QueryItem, fsck, reindex
from kroniko_ops.indexdb import generations


def _db(path: str) -> str:
    folder = os.path.join(path, "index")
    return os.path.join(folder, f"{generations(folder)[-1]:06d}.sqlite3")


def test_reindex_repairs_a_wrong_index(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    head = build(path)
    con = sqlite3.connect(_db(path))
    con.execute("DELETE FROM postings WHERE position % 2 = 0")
    con.commit()
    con.close()
    assert "index-missing-entry" in {f.code for f in fsck(path).problems}
    report = reindex(path)
    assert report.exit_code == 0 and report.figures["events_indexed"] == head
    assert generations(os.path.join(path, "index")) == [2]
    assert fsck(path).exit_code == 0
    with EventStore(path) as store:
        assert len(list(store.read(Query([QueryItem(types=["T0"])])))) == 10


def test_reindex_while_another_process_appends(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path, batches=40)
    ctx = mp.get_context("spawn")
    child = ctx.Process(target=append_batches, args=(path, 60))
    child.start()
    try:
        for _ in range(2):
            assert reindex(path).exit_code == 0
    finally:
        child.join(timeout=120)
        if child.is_alive():
            child.kill()
            child.join(10)
    assert child.exitcode == 0
    report = fsck(path)
    assert report.exit_code == 0, report.findings
    with EventStore(path) as store:
        assert len(list(store.read(Query([QueryItem(types=["Online"])])))) == 180


def test_reindex_sets_aside_an_interrupted_runs_leftovers(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    build(path)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    leftover = Path(path, "index", f".tmp-{proc.pid}-000002.sqlite3")
    leftover.write_bytes(b"half an index")
    assert "stale-temp-file" in {f.code for f in fsck(path, quick=True).problems}
    report = reindex(path)
    assert [f.code for f in report.findings if f.repaired] == ["stale-temp-file"]
    assert not leftover.exists()
    assert fsck(path).exit_code == 0
