"""The command line over legacy stores: migrate's output and exit codes, and every writing command
refusing a legacy store (exit 2, pointing to migrate, not a byte changed)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from legacy_helpers import tree_digest

from kroniko_ops import EventStore
from kroniko_ops.cli import cli
from kroniko_ops.errors import LegacyStore
from kroniko_ops.fileio import set_fault_injector


def _json_lines(output: str) -> list[dict]:
    return [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_migrate_json_and_exit_codes(legacy_clean: str, legacy_crashed: str, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["migrate", legacy_clean, str(tmp_path / "a"), "--json"])
    assert res.exit_code == 0, res.output
    summary = _json_lines(res.output)[-1]
    assert summary["kind"] == "summary" and summary["exit_code"] == 0 and summary["events"] == 400
    res = runner.invoke(cli, ["migrate", legacy_crashed, str(tmp_path / "b"), "--json"])
    assert res.exit_code == 1, res.output
    lines = _json_lines(res.output)
    assert {x["code"] for x in lines if x["kind"] == "finding" and x["severity"] == "warning"} == {
        "event-unreadable", "log-torn-tail", "dangling-event"}
    assert lines[-1]["placeholders"] == 1 and lines[-1]["orphans"] == 1
    res = runner.invoke(cli, ["migrate", legacy_crashed, str(tmp_path / "c")])
    assert res.exit_code == 1 and "placeholder" in res.output and "migrate" in res.output.splitlines()[-1]


def test_migrate_dry_run_and_refusals(legacy_crashed: str, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["migrate", legacy_crashed, str(tmp_path / "d"), "--dry-run", "--json"])
    assert res.exit_code == 1 and _json_lines(res.output)[-1]["dry_run"] is True
    assert not (tmp_path / "d").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    res = runner.invoke(cli, ["migrate", legacy_crashed, str(tmp_path / "busy")])
    assert res.exit_code == 2 and "not empty" in res.output
    assert os.listdir(tmp_path / "busy") == ["x"]
    res = runner.invoke(cli, ["migrate", str(tmp_path / "busy"), str(tmp_path / "e")])
    assert res.exit_code == 2 and not (tmp_path / "e").exists()


def test_migrate_operational_failure_exits_8_and_publishes_nothing(legacy_clean: str, tmp_path: Path) -> None:
    def full_disk(op: str, path: str) -> None:
        if op == "write" and path == "active segment":
            raise OSError(errno.ENOSPC, "No space left on device", path)

    previous = set_fault_injector(full_disk)
    try:
        res = CliRunner().invoke(cli, ["migrate", legacy_clean, str(tmp_path / "new")])
    finally:
        set_fault_injector(previous)
    assert res.exit_code == 8, res.output
    assert "Nothing was published" in res.output and "No space left" in res.output
    assert os.listdir(tmp_path) == ["legacy-clean"]


@pytest.mark.parametrize("args", [
    ["init", "{L}"], ["append", "{L}"], ["read", "{L}"], ["head", "{L}"], ["stats", "{L}"],
    ["recover", "{L}"], ["reindex", "{L}"], ["compact", "{L}"], ["backup", "{L}", "{T}"],
    ["demo", "{L}"], ["torture", "{L}", "--duration", "1", "--workers", "1"],
])
def test_writing_commands_refuse_a_legacy_store(legacy_crashed: str, tmp_path: Path, args: list[str]) -> None:
    before = tree_digest(legacy_crashed)
    argv = [a.format(L=legacy_crashed, T=str(tmp_path / "out")) for a in args]
    res = CliRunner().invoke(cli, argv, input='{"type": "A"}\n')
    assert res.exit_code == 2, res.output
    assert "legacy" in res.output and "migrate" in res.output
    assert tree_digest(legacy_crashed) == before


def test_library_refuses_a_legacy_store(legacy_clean: str) -> None:
    before = tree_digest(legacy_clean)
    with pytest.raises(LegacyStore) as exc:
        EventStore(legacy_clean)
    assert exc.value.exit_code == 2 and "kroniko-ops migrate" in str(exc.value)
    assert tree_digest(legacy_clean) == before
