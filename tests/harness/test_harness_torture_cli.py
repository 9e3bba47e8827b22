"""``kroniko-ops torture``: runs the harness for the time asked and prints its figures."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from kroniko_ops import Event, EventStore
from kroniko_ops.cli import cli
from kroniko_ops.harness import torture as torture_module
from kroniko_ops.harness.checker import Violation
from kroniko_ops.harness.torture import torture

FIGURES = ("operations", "commits", "rejections", "unknown", "reads", "kills", "recoveries", "violations", "seed")


def test_torture_json_summary(tmp_path) -> None:
    """Rounds with kills on a store with 4 KiB segments: the figures add up and the head is
    the store's."""
    store = str(tmp_path / "t")
    res = CliRunner().invoke(cli, ["torture", store, "--workers", "3", "--rounds", "6", "--kill-rate", "0.6",
                                   "--seed", "7", "--no-fsync", "--segment-bytes", "4096", "--json"])
    assert res.exit_code == 0, res.output
    summary = orjson.loads(res.output.strip().splitlines()[-1])
    assert summary["kind"] == "summary" and summary["exit_code"] == 0
    assert summary["seed"] == 7 and summary["violations"] == 0 and summary["rounds"] == 6
    assert summary["operations"] > 0 and summary["commits"] > 0 and summary["reads"] > 0
    assert summary["kills"] > 0 and summary["recoveries"] > 0  # 3 workers at 0.6 per round
    with EventStore(store, create=False) as s:
        assert s.head() == summary["head"] >= summary["commits"]
        assert s.segment_bytes == 4096


def test_torture_text_output_and_reuse_of_its_store(tmp_path) -> None:
    store = str(tmp_path / "t")
    for _ in range(2):  # a second run continues on the store the first one wrote
        res = CliRunner().invoke(cli, ["torture", store, "--workers", "2", "--rounds", "3", "--no-fsync"])
        assert res.exit_code == 0, res.output
        for name in FIGURES:
            assert f"  {name}" in res.output
        assert "violations  0" in res.output


def test_torture_refuses_a_store_with_other_events(tmp_path) -> None:
    store = str(tmp_path / "real")
    with EventStore(store) as s:
        s.append(Event("OrderPlaced", {"n": 1}))
    res = CliRunner().invoke(cli, ["torture", store, "--duration", "1"])
    assert res.exit_code == 2 and "did not write" in res.output
    with EventStore(store, create=False) as s:
        assert s.head() == 1


@pytest.mark.parametrize("args", [["--kill-rate", "1.5"], ["--workers", "0"], ["--duration", "0"], ["--seed", "-1"],
                                  ["--rounds", "0"], ["--segment-bytes", "100"],
                                  # the simulator's options without --power-loss, silently ignored before
                                  ["--operation", "append", "--rounds", "1"], ["--states", "5", "--rounds", "1"],
                                  ["--state", "foo", "--rounds", "1"]])
def test_torture_bad_options_exit_2(tmp_path, args) -> None:
    res = CliRunner().invoke(cli, ["torture", str(tmp_path / "t"), *args])
    assert res.exit_code == 2
    assert not (tmp_path / "t").exists()


def test_a_violation_stops_the_run_names_the_seed_and_exits_4(tmp_path, monkeypatch) -> None:
    """What a user sees when the store breaks a property (a checker that always objects)."""
    def objecting(history, log, base, prior):
        return [Violation(3, "condition-violated", "fabricated for the test", history.ops[:1])]

    monkeypatch.setattr(torture_module, "check", objecting)
    report = torture(str(tmp_path / "t"), workers=2, rounds=5, kill_rate=0.0, seed=11, durable=False)
    assert report.exit_code == 4
    assert report.figures["rounds"] == 1 and report.figures["violations"] == 1
    assert report.figures["seed"] == 11 and "failing_round_seed" in report.figures
    [finding] = report.findings
    assert finding.code == "violation-p3-condition-violated" and "fabricated" in finding.message
