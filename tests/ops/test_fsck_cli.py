"""The fsck / recover / reindex commands: exit codes (DESIGN section 6), JSON lines, human output."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from click.testing import CliRunner
from fsck_helpers import build, dead_pid

from kroniko_ops.cli import cli
from kroniko_ops.layout import Layout
from kroniko_ops.locking import held


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_exit_codes_clean_problems_repaired(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    assert run("fsck", store)[0] == 0
    assert run("fsck", "--quick", store)[0] == 0
    Path(store, "notes.txt").write_text("x")
    code, out = run("fsck", store)
    assert code == 4
    assert "stray-file (warning, 1):" in out and out.rstrip().endswith("exit 4)")
    assert run("fsck", "--repair", "--dry-run", store)[0] == 4
    code, out = run("fsck", "--repair", store)
    assert code == 1, out
    assert "[repaired]" in out and "all problems repaired" in out
    assert run("fsck", store)[0] == 0


def test_exit_codes_for_damage_that_remains_and_is_partly_repaired(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    os.unlink(Path(store, "events", "ev-0002.json"))
    assert run("fsck", store)[0] == 4
    Path(store, "notes.txt").write_text("x")
    assert run("fsck", "--repair", store)[0] == 5  # bits: something repaired, problems remain


def test_json_lines_one_per_finding_and_a_summary(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    os.unlink(Path(store, "events", "ev-0002.json"))
    Path(store, "events", f".tmp-{dead_pid()}-00").write_bytes(b"")
    code, out = run("fsck", "--json", store)
    assert code == 4
    objs = [orjson.loads(line) for line in out.splitlines()]
    findings, summary = objs[:-1], objs[-1]
    assert {f["kind"] for f in findings} == {"finding"}
    assert {f["code"] for f in findings} == {"missing-event", "stale-temp-file"}
    assert set(findings[0]) == {"kind", "code", "severity", "path", "position", "message", "repaired"}
    assert summary["kind"] == "summary" and summary["exit_code"] == 4 and summary["head"] == 12
    assert summary["counts"] == {"missing-event": 1, "stale-temp-file": 1}
    assert summary["events_checked"] == 12 and len(summary["chain_at_head"]) == 64
    assert isinstance(summary["seconds"], float)


def test_could_not_run_is_8_and_usage_errors_are_2(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    assert run("fsck", str(tmp_path / "absent"))[0] == 8
    assert run("fsck", "--max-errors", "0", store)[0] == 2
    assert run("fsck", "--bogus", store)[0] == 2
    Path(store, "notes.txt").write_text("x")
    with held(Layout(store).maintenance_lock, 5, "maintenance"):
        code, out = run("fsck", "--repair", "--lock-timeout", "0.2", store)
    assert code == 8 and "maintenance lock" in out
    assert Path(store, "notes.txt").exists()
    with held(Layout(store).append_lock, 5, "append"):
        assert run("recover", "--lock-timeout", "0.2", store)[0] == 8
        assert run("fsck", "--repair", "--lock-timeout", "0.2", store)[0] == 8
    assert run("recover", str(tmp_path / "absent"))[0] == 8
    assert run("reindex", str(tmp_path / "absent"))[0] == 8


def test_quiet_hides_info_and_metrics_file(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    Path(store, "events", "young.json").write_bytes(b'{"data":1,"id":"young","metadata":null,"tags":[],"type":"T"}')
    code, out = run("fsck", store)
    assert code == 0 and "dangling-event (info, 1)" in out
    metrics = tmp_path / "fsck.prom"
    code, out = run("fsck", "--quiet", "--metrics-file", str(metrics), store)
    assert code == 0 and "dangling-event" not in out and "clean" in out
    assert "kroniko_fsck_exit_code{" in metrics.read_text()


def test_recover_and_reindex_commands(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    with open(Path(store, "log", "append.log"), "ab") as f:
        f.write(b"half a line")
    code, out = run("recover", store)
    assert code == 1 and "log-torn-tail" in out
    assert run("recover", store)[0] == 0
    code, out = run("recover", "--json", store)
    assert orjson.loads(out.splitlines()[-1])["exit_code"] == 0
    os.unlink(Path(store, "index", "types", "Paid.pos"))
    assert run("fsck", store)[0] == 4
    code, out = run("reindex", store)
    assert code == 0, out
    assert run("fsck", store)[0] == 0
