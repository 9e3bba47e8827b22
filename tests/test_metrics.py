"""Metrics files (``--metrics-file``, :mod:`kroniko_ops.metrics`): what an alert relies on, for
every maintenance command, on success and on failure."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from kroniko_ops import Event, EventStore, codes
from kroniko_ops.cli import cli
from kroniko_ops.metrics import GAUGES


def run(*args: str) -> int:
    return CliRunner().invoke(cli, list(args)).exit_code


def families(path: Path) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(path.read_text())}


def value(prom: Path, name: str, **labels: str) -> float:
    """The one sample of ``kroniko_<name>`` with these labels (KeyError when absent)."""
    for sample in families(prom)[f"kroniko_{name}"].samples:  # type: ignore[attr-defined]
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise KeyError((name, labels))


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = str(tmp_path / "store")
    with EventStore(path, durable=False, segment_bytes=4096) as s:
        for i in range(40):
            s.append([Event("A", {"i": i, "pad": "x" * 100}, [f"k:{i % 3}"])])
    return path


def test_every_maintenance_command_leaves_what_an_alert_needs(store: str, tmp_path: Path) -> None:
    prom = tmp_path / "node" / "kroniko.prom"
    root = str(tmp_path / "set")
    steps = [
        ("fsck", store), ("recover", store), ("reindex", store), ("compact", store),
        ("backup", store, "--into", root), ("verify-backup", root), ("restore", root, str(tmp_path / "r")),
        ("prune", root, "--keep-last", "1"), ("replicate", store, str(tmp_path / "replica"), "--once"),
    ]
    counts = {}
    for op, *args in steps:
        res = CliRunner().invoke(cli, [op, *args, "--json", "--metrics-file", str(prom)])
        assert res.exit_code == 0, (op, res.output)
        counts[op] = orjson.loads(res.stdout.splitlines()[-1])["counts"]
    found = families(prom)
    for name in (*GAUGES, "findings"):
        fam = found[f"kroniko_{name}"]
        assert fam.type == "gauge" and fam.documentation  # type: ignore[attr-defined]
    text = prom.read_text()
    assert text.count("# HELP ") == text.count("# TYPE ") == len(found)
    subjects = {"fsck": store, "recover": store, "reindex": store, "compact": store, "backup": store,
                "verify-backup": root, "restore": root, "prune": root, "replicate": str(tmp_path / "replica")}
    for op, subject in subjects.items():
        where = {"operation": op, "path": os.path.abspath(subject)}
        assert value(prom, "last_run_success", **where) == 1
        assert value(prom, "last_success_timestamp_seconds", **where) == value(prom, "last_run_timestamp_seconds",
                                                                             **where) > 0
        assert value(prom, "last_run_exit_code", **where) == 0
        for code in codes.for_operation(op):  # every code the operation knows, 0 when absent
            assert value(prom, "findings", code=code, **where) == counts[op].get(code, 0)
        assert sum(counts[op].values()) == sum(value(prom, "findings", code=c, **where) for c in counts[op])
    assert value(prom, "head_position", operation="backup", path=os.path.abspath(store)) == 40
    assert value(prom, "backups", operation="backup", path=os.path.abspath(store)) == 1
    assert value(prom, "backups", operation="prune", path=os.path.abspath(root)) == 1
    assert value(prom, "bytes_processed", operation="backup", path=os.path.abspath(store)) > 0
    replica = {"operation": "replicate", "path": os.path.abspath(tmp_path / "replica")}
    assert value(prom, "replica_lag_positions", **replica) == value(prom, "replica_lag_seconds", **replica) == 0
    assert sorted(os.listdir(prom.parent)) == ["kroniko.prom", "kroniko.prom.lock"]  # no temp file left


def test_a_failed_run_keeps_the_last_success_and_what_was_found(store: str, tmp_path: Path) -> None:
    prom = tmp_path / "fsck.prom"
    Path(store, "stray.txt").write_text("x")
    assert run("fsck", store, "--metrics-file", str(prom)) == 4
    where = {"operation": "fsck", "path": os.path.abspath(store)}
    assert value(prom, "findings", code="stray-file", **where) == 1 and value(prom, "problems", **where) == 1
    assert value(prom, "last_run_success", **where) == 0
    assert value(prom, "last_success_timestamp_seconds", **where) == 0  # never succeeded yet
    os.remove(Path(store, "stray.txt"))
    assert run("fsck", store, "--metrics-file", str(prom)) == 0
    ok_at = value(prom, "last_success_timestamp_seconds", **where)
    assert ok_at > 0 and value(prom, "findings", code="stray-file", **where) == 0  # present, 0: not vanished
    Path(store, "stray.txt").write_text("x")
    assert run("fsck", store, "--metrics-file", str(prom)) == 4
    os.rename(store, store + ".away")  # the next check cannot run at all: exit 8
    assert run("fsck", store, "--metrics-file", str(prom)) == 8
    assert value(prom, "last_run_exit_code", **where) == 8 and value(prom, "last_run_success", **where) == 0
    assert value(prom, "last_success_timestamp_seconds", **where) == ok_at  # carried forward
    assert value(prom, "last_run_timestamp_seconds", **where) > ok_at
    # what the last run that got that far found stays: an alert on problems keeps firing
    assert value(prom, "problems", **where) == 1 and value(prom, "findings", code="stray-file", **where) == 1


def test_runs_of_other_operations_and_paths_share_one_file(store: str, tmp_path: Path) -> None:
    prom = tmp_path / "all.prom"
    other = str(tmp_path / "other")
    with EventStore(other, durable=False) as s:
        s.append(Event("B", {}))
    assert run("fsck", store, "--metrics-file", str(prom)) == 0
    assert run("backup", store, str(tmp_path / "b"), "--metrics-file", str(prom)) == 0
    assert run("fsck", other, "--metrics-file", str(prom)) == 0
    assert run("verify-backup", str(tmp_path / "missing"), "--metrics-file", str(prom)) == 8
    for op, path in (("fsck", store), ("backup", store), ("fsck", other), ("verify-backup", str(tmp_path / "missing"))):
        assert value(prom, "last_run_timestamp_seconds", operation=op, path=os.path.abspath(path)) > 0
    assert value(prom, "head_position", operation="fsck", path=os.path.abspath(other)) == 1


def test_a_file_that_is_not_ours_is_replaced_and_an_unwritable_one_is_an_error(store: str, tmp_path: Path) -> None:
    prom = tmp_path / "x.prom"
    prom.write_text("this is not the text format {{{\n")
    assert run("fsck", store, "--metrics-file", str(prom)) == 0
    assert value(prom, "last_run_exit_code", operation="fsck", path=os.path.abspath(store)) == 0
    res = CliRunner().invoke(cli, ["fsck", store, "--json", "--metrics-file", str(tmp_path / "x.prom" / "y.prom")])
    assert res.exit_code == 8 and "could not write the metrics file" in res.output


def test_an_unwritable_metrics_file_still_leaves_the_verdict_printed(store: str, tmp_path: Path) -> None:
    # The report is what the operator needs most: damage found must be shown even when the
    # metrics file cannot be written, with one error and exit 8.
    seg = sorted(Path(store, "log").glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    data[300] ^= 1
    seg.write_bytes(bytes(data))
    bad = str(tmp_path / "x.prom" / "y.prom")
    (tmp_path / "x.prom").write_text("a file where a folder should be")
    res = CliRunner().invoke(cli, ["fsck", store, "--json", "--metrics-file", bad])
    lines = [orjson.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert res.exit_code == 8 and any(x["kind"] == "finding" and x["severity"] == "error" for x in lines)
    assert lines[-1]["kind"] == "summary" and lines[-1]["exit_code"] == 8 and lines[-1]["verdict_exit_code"] == 4
    assert "could not write the metrics file" in lines[-1]["error"]
    res = CliRunner().invoke(cli, ["fsck", store, "--metrics-file", bad])
    assert res.exit_code == 8 and "problem(s) remain" in res.stdout
    assert res.stderr.count("error:") == 1, res.stderr


def test_every_code_a_module_reports_is_known_and_documented() -> None:
    """The catalogue behind the ``code`` label names every code the source reports, and the docs
    explain every code in it."""
    import re

    root = Path(__file__).resolve().parent.parent
    literal = re.compile(r"""\.(?:add|note|damage)\(\s*["']([a-z]+(?:-[a-z0-9]+)+)["']""")
    reported = set()
    for path in (root / "kroniko_ops").rglob("*.py"):
        if "harness" in path.parts or "postgres" in path.parts:
            continue  # the harness' and the PostgreSQL check's own verdicts are not maintenance findings
        reported |= set(literal.findall(path.read_text()))
    assert reported - codes.ALL == set()
    docs = "".join((root / "docs" / name).read_text() for name in ("FSCK.md", "RUNBOOK.md", "LEGACY.md"))
    undocumented = {c for c in codes.ALL if f"`{c}`" not in docs and not c.startswith("restore-")}
    assert undocumented == set()
