"""Every broken engine of ``kroniko_ops.harness.mutants`` is caught from the command line:
``kroniko-ops torture STORE --power-loss --mutant NAME`` (or ``torture STORE --mutant NAME`` for
the kill harness's) exits 4 with the violation printed, the one the registry says catches it.
The unmutated project passing the same runs is shown by the tests of the simulator and of
torture (``test_powerloss_sim.py``, ``test_harness_torture_cli.py``)."""

from __future__ import annotations

import os
import re

import orjson
import pytest
from click.testing import CliRunner

from kroniko_ops.cli import cli
from kroniko_ops.harness.mutants import MUTANTS
from kroniko_ops.store import EventStore

POWER_LOSS = [m.name for m in MUTANTS.values() if m.operation != "torture"]
KILL = [m.name for m in MUTANTS.values() if m.operation == "torture"]


def test_the_registry_covers_what_the_harness_claims() -> None:
    assert {"no-log-fsync", "restore-no-fsync", "retry-ack-unsynced", "reject-unsynced", "synced-backwards",
            "index-ahead-unchecked", "reader-past-synced", "verify-skips-head-chain", "backup-past-synced",
            "compact-drops-last-block", "lock-released-before-write", "tail-trusted",
            "zeros-end-the-records", "read-run-unchecked", "offsets-trusted"} <= set(MUTANTS)
    assert MUTANTS["no-log-fsync"].operation == "append" and MUTANTS["restore-no-fsync"].operation == "restore"
    assert MUTANTS["retry-ack-unsynced"].operation == MUTANTS["reject-unsynced"].operation == "concurrent"
    assert MUTANTS["tail-trusted"].operation == MUTANTS["zeros-end-the-records"].operation == "lost-tail"
    assert MUTANTS["read-run-unchecked"].operation == MUTANTS["offsets-trusted"].operation == "lost-tail"


@pytest.mark.parametrize("name", POWER_LOSS)
def test_power_loss_catches_the_mutant(sweep_dir: str, name: str) -> None:
    mutant = MUTANTS[name]
    # lost-tail runs fsck --repair --accept-loss on each state (about 0.3 s): a few of them.
    size = ["--states", "6", "--samples", "2"] if mutant.operation == "lost-tail" else ["--states", "120", "--samples",
                                                                                        "20"]
    res = CliRunner().invoke(cli, ["torture", os.path.join(sweep_dir, "pl"), "--power-loss", "--mutant", name,
                                   *size, "--seed", "3"])
    assert res.exit_code == 4, f"{name} went unnoticed:\n{res.output}"
    assert re.search(mutant.caught_as, res.output), res.output
    assert f"mutant {name}" in res.output and f"  {mutant.operation} " in res.output
    assert EventStore._sync_and_advance.__qualname__ == "Committing._sync_and_advance"  # patches undone


def test_the_printed_rebuild_command_replays_the_state_with_the_same_broken_engine(sweep_dir: str) -> None:
    res = CliRunner().invoke(cli, ["torture", os.path.join(sweep_dir, "pl"), "--power-loss", "--mutant",
                                   "no-log-fsync", "--operation", "batch", "--states", "60", "--samples", "5"])
    assert res.exit_code == 4, res.output
    command = next(line for line in res.output.splitlines() if "rebuild:" in line).split("rebuild: kroniko-ops ")[1]
    run_dir, state = re.match(r"torture --power-loss --replay (\S+) --state '(.+)'", command).groups()
    again = CliRunner().invoke(cli, ["torture", "--power-loss", "--replay", run_dir, "--state", state])
    assert again.exit_code == 4 and "is missing" in again.output, again.output


@pytest.mark.parametrize("name", KILL)
def test_torture_catches_the_mutant(sweep_dir: str, name: str) -> None:
    res = CliRunner().invoke(cli, ["torture", os.path.join(sweep_dir, "t"), "--mutant", name, "--rounds", "4",
                                   "--workers", "3", "--seed", "5", "--no-fsync", "--segment-bytes", "4096"])
    assert res.exit_code == 4, f"{name} went unnoticed:\n{res.output}"
    assert re.search(MUTANTS[name].caught_as, res.output) and "Traceback" not in res.output, res.output


def test_mutant_list_names_each_with_what_catches_it() -> None:
    res = CliRunner().invoke(cli, ["torture", "--mutant", "list"])
    assert res.exit_code == 0, res.output
    for m in MUTANTS.values():
        assert m.name in res.output and m.breaks in res.output
    summary = orjson.loads(CliRunner().invoke(cli, ["torture", "--mutant", "list", "--json"]).output.splitlines()[-1])
    assert summary["kind"] == "summary" and summary["exit_code"] == 0
    assert {r["name"]: r["operation"] for r in summary["mutants"]} == {m.name: m.operation for m in MUTANTS.values()}


def test_bad_mutant_arguments_are_usage_errors(tmp_path) -> None:
    unknown = CliRunner().invoke(cli, ["torture", str(tmp_path / "x"), "--power-loss", "--mutant", "nope"])
    assert unknown.exit_code == 2 and "--mutant list" in unknown.stderr
    kill_only = CliRunner().invoke(cli, ["torture", str(tmp_path / "x"), "--power-loss", "--mutant", "drop-event"])
    assert kill_only.exit_code == 2 and "without --power-loss" in kill_only.stderr
    assert CliRunner().invoke(cli, ["torture"]).exit_code == 2
    assert not os.path.exists(tmp_path / "x")
