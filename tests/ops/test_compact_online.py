"""Compaction online: 4 processes append and 2 read while compactions run back to back; no read
fails or sees a wrong event, and afterwards fsck is clean and every event is what was appended."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import orjson
import pytest
from compact_helpers import contents, problems
from compact_workers import appender, expected_event, reader

from kroniko_ops import EventStore
from kroniko_ops.ops.compact import compact

APPENDERS, READERS, EACH = 4, 2, 150
TIMEOUT = 120


@pytest.mark.parametrize("round_", range(2))
def test_compaction_while_four_processes_append_and_two_read(tmp_path: Path, round_: int) -> None:
    run_round(tmp_path, EACH, max_packs=2 + round_)


@pytest.mark.soak
@pytest.mark.parametrize("round_", range(5))
def test_soak_compaction_while_four_processes_append_and_two_read(tmp_path: Path, round_: int) -> None:
    run_round(tmp_path, 20 * EACH, max_packs=1 + round_)


def run_round(tmp_path: Path, each: int, max_packs: int) -> None:
    """Appenders and readers against back-to-back compactions, then every check."""
    path = str(tmp_path / "store")
    EventStore(path).close()
    ctx = mp.get_context("spawn")
    stop = str(tmp_path / "stop")
    writers = [ctx.Process(target=appender, args=(path, w, each, str(tmp_path / f"w{w}.json")))
               for w in range(APPENDERS)]
    readers = [ctx.Process(target=reader, args=(path, stop, str(tmp_path / f"r{r}.json"))) for r in range(READERS)]
    procs = writers + readers
    for p in procs:
        p.start()
    compactions = 0
    try:
        deadline = time.monotonic() + TIMEOUT * (each // EACH)
        while any(p.is_alive() for p in writers) and time.monotonic() < deadline:
            report = compact(path, max_packs=max_packs)
            assert report.exit_code == 0, report.findings
            compactions += 1
        Path(stop).touch()
        for p in procs:
            p.join(max(1.0, deadline - time.monotonic()))
    finally:
        Path(stop).touch()
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    for r in range(READERS):
        result = orjson.loads(Path(tmp_path / f"r{r}.json").read_bytes())
        assert "error" not in result, result["error"]
        assert result["reads"] > 0
    assert compact(path).exit_code == 0
    assert compactions >= 1
    acknowledged = {eid: pos for w in range(APPENDERS)
                    for eid, pos in orjson.loads(Path(tmp_path / f"w{w}.json").read_bytes())}
    stored = contents(path)
    assert len(stored) == APPENDERS * each == len(acknowledged)
    for pos, event in stored:
        worker, n = (int(x) for x in event.id[1:].split("-"))
        assert event == expected_event(worker, n) and acknowledged[event.id] == pos
    assert os.listdir(os.path.join(path, "events")) == []
    assert problems(path) == []
