"""The fsck / recover / reindex commands: exit codes (0, 1, 2, 4, 5, 8), JSON lines, human output."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from click.testing import CliRunner
from fsck_store_helpers import build, dead_pid, flip, seg_path, segments, write_after_records

from kroniko_ops.cli import cli
from kroniko_ops.format import record as recfmt
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
    code, out = run("fsck", "--repair", "--dry-run", store)
    assert code == 4 and "[--repair would move it into lost-found/]" in out
    assert Path(store, "notes.txt").exists()
    code, out = run("fsck", "--repair", store)
    assert code == 1, out
    assert "[repaired]" in out and "all problems repaired" in out
    assert run("fsck", store)[0] == 0


def test_some_repaired_some_remaining_is_5(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    seg = seg_path(store, segments(store)[0])
    flip(seg, recfmt.HEADER + 5)  # an event body in a sealed segment: never repaired
    Path(store, "notes.txt").write_text("x")
    assert run("fsck", "--repair", store)[0] == 5


def test_json_lines_one_per_finding_and_a_summary(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    head = build(store)
    Path(store, "log", f".tmp-{dead_pid()}-x").write_bytes(b"")
    Path(store, "junk").write_bytes(b"")
    code, out = run("fsck", "--json", store)
    assert code == 4
    objs = [orjson.loads(line) for line in out.splitlines()]
    findings, summary = objs[:-1], objs[-1]
    assert {f["kind"] for f in findings} == {"finding"}
    assert {f["code"] for f in findings} == {"stray-file", "stale-temp-file"}
    assert set(findings[0]) == {"kind", "code", "severity", "path", "position", "message", "repaired"}
    assert summary["kind"] == "summary" and summary["exit_code"] == 4 and summary["head"] == head
    assert summary["counts"] == {"stray-file": 1, "stale-temp-file": 1}
    assert summary["events_checked"] == head and len(summary["chain_at_head"]) == 64
    assert isinstance(summary["seconds"], float)


def test_could_not_run_is_8_and_usage_errors_are_2(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    assert run("fsck", str(tmp_path / "absent"))[0] == 8
    assert run("fsck", "--max-errors", "0", store)[0] == 2
    assert run("fsck", "--bogus", store)[0] == 2
    assert run("fsck", "--ref-field", "nope", store)[0] == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("x")
    for cmd in ("fsck", "recover", "reindex"):
        code, out = run(cmd, str(other))
        assert code == 2 and "not a kroniko-ops store" in out
    code, out = run("fsck", "--repair", str(other))
    assert code == 2
    assert sorted(os.listdir(other)) == ["a.txt"]  # no locks/ created in a foreign folder
    Path(store, "notes.txt").write_text("x")
    with held(Layout(store).maintenance_lock, 5, "maintenance"):
        code, out = run("fsck", "--repair", "--lock-timeout", "0.2", store)
        assert code == 8 and "maintenance lock" in out
        assert run("reindex", "--lock-timeout", "0.2", store)[0] == 8
    assert Path(store, "notes.txt").exists()
    with held(Layout(store).append_lock, 5, "append"):
        assert run("recover", "--lock-timeout", "0.2", store)[0] == 8
        assert run("fsck", store)[0] == 4  # a read-only check never waits for the append lock
    assert run("recover", str(tmp_path / "absent"))[0] == 8
    assert run("reindex", str(tmp_path / "absent"))[0] == 8


def test_metrics_file_and_quiet(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    metrics = tmp_path / "fsck.prom"
    code, out = run("fsck", "--quiet", "--metrics-file", str(metrics), store)
    assert code == 0 and "clean" in out
    text = metrics.read_text()
    where = f'operation="fsck",path="{os.path.abspath(store)}"'
    assert f"kroniko_last_run_exit_code{{{where}}} 0.0" in text
    assert f'kroniko_findings{{code="stray-file",{where}}} 0.0' in text


def test_refs_options(tmp_path: Path) -> None:
    from kroniko_ops import Event, EventStore

    store = str(tmp_path / "s")
    with EventStore(store, durable=False) as s:
        s.append(Event("A", {"x": "ghost"}, [], None, "a"))
    assert run("fsck", store)[0] == 0
    code, out = run("fsck", "--ref-field", "data.x", "--json", store)
    assert code == 4 and orjson.loads(out.splitlines()[-1])["counts"] == {"dangling-reference": 1}
    assert run("fsck", "--refs-only", "--ref-field", "data.x", store)[0] == 4


def test_recover_and_reindex_commands(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    write_after_records(seg_path(store, segments(store)[-1]), b"half a record")
    code, out = run("recover", store)
    assert code == 1 and "log-torn-tail" in out
    assert run("recover", store)[0] == 0
    code, out = run("recover", "--json", store)
    assert orjson.loads(out.splitlines()[-1])["exit_code"] == 0
    code, out = run("reindex", "--json", store)
    assert code == 0, out
    assert orjson.loads(out.splitlines()[-1])["events_indexed"] == 36
    assert run("fsck", store)[0] == 0
