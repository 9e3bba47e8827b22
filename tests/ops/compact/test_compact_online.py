"""Compaction online: processes append and read while compactions run back to back; no read fails
or sees a wrong event, every acknowledged event is stored where it was acknowledged, and the
store is sound afterwards."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import orjson
import pytest
from compact_helpers import SMALL, contents, soundness
from compact_workers import appender, expected_event, reader

from kroniko_ops import EventStore
from kroniko_ops.ops.compact import compact

APPENDERS, READERS, EACH = 2, 1, 1500
# An appender idle while others roll the log and compaction packs its segment appends into the
# removed file (see test_compact_stale_writer.py): not strict, as the timing may dodge it.
TIMEOUT = 120.0


def run_round(tmp_path: Path, each: int) -> int:
    """Appenders and readers against back-to-back compactions, then every check; return how many
    compactions ran."""
    path = str(tmp_path / "store")
    EventStore(path, segment_bytes=SMALL).close()
    ctx = mp.get_context("spawn")
    stop = str(tmp_path / "stop")
    writers = [ctx.Process(target=appender, args=(path, w, each, str(tmp_path / f"w{w}.json")))
               for w in range(APPENDERS)]
    readers = [ctx.Process(target=reader, args=(path, stop, str(tmp_path / f"r{r}.json"))) for r in range(READERS)]
    procs = writers + readers
    for p in procs:
        p.start()
    compactions = 0
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(p.is_alive() for p in writers) and time.monotonic() < deadline:
            report = compact(path, durable=False)
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
    acknowledged = {eid: pos for w in range(APPENDERS)
                    for eid, pos in orjson.loads(Path(tmp_path / f"w{w}.json").read_bytes())}
    stored = contents(path)
    assert len(stored) == APPENDERS * each == len(acknowledged)
    for pos, event in stored:
        worker, n = (int(x) for x in event.id[1:].split("-"))  # type: ignore[union-attr]
        assert event == expected_event(worker, n) and acknowledged[event.id] == pos
    assert soundness(path) == []
    return compactions


def test_compaction_while_processes_append_and_read(tmp_path: Path) -> None:
    assert run_round(tmp_path, EACH) >= 2


@pytest.mark.soak
@pytest.mark.parametrize("round_", range(5))
def test_soak_compaction_while_processes_append_and_read(tmp_path: Path, round_: int) -> None:
    assert run_round(tmp_path, 10 * EACH) >= 1
