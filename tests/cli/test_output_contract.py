"""The output contract of every command (docs/output.schema.json): with ``--json`` every line
validates against the schema and the last one is the run's summary with ``operation``, ``path``
and the exit code the process returned, on success and on failure (exit 2, 3, 4, 8); every
command takes ``--json`` and ``--quiet`` and its ``--help`` ends with examples."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from kroniko_ops import Event, EventStore
from kroniko_ops.cli import cli
from kroniko_ops.postgres.url import display

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "output.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, pg_server) -> list[tuple[list[str], int, str]]:
    """Every command run with --json against real stores (and a real PostgreSQL server for
    mirror and migrate to a URL): (arguments, exit code, stdout)."""
    tmp = tmp_path_factory.mktemp("contract")
    store, root = str(tmp / "store"), str(tmp / "set")
    with EventStore(store, durable=False, segment_bytes=4096) as s:
        for i in range(30):
            s.append([Event("A", {"i": i}, [f"k:{i % 2}"], {"by": "t"}), Event("B", {"i": i}, ["k:9"])])
    with tarfile.open(ROOT / "tests" / "fixtures" / "legacy-kroniko" / "shop-clean.tar.gz") as tar:
        tar.extractall(tmp / "legacy", filter="data")
    legacy_store = str(tmp / "legacy")
    (tmp / "empty").mkdir()
    (tmp / "batch.jsonl").write_text('{"type": "C", "tags": ["k:1"]}\n')
    gz = tmp / "b.tar.gz"
    missing = str(tmp / "missing")
    mirror_url = pg_server.create_database("contract_mirror")
    plan: list[tuple[list[str], int]] = [
        (["init", str(tmp / "new")], 0), (["init", store], 0),
        (["append", store, "-f", str(tmp / "batch.jsonl")], 0),
        (["append", store, "-f", str(tmp / "batch.jsonl"), "--fail-if-tag", "k:1", "--after", "1"], 3),
        (["append", str(tmp / "empty"), "-f", str(tmp / "batch.jsonl")], 2),
        (["read", store, "--limit", "3"], 0), (["read", missing], 8), (["read", store, "--limit", "x"], 2),
        (["head", store], 0), (["head", str(tmp / "empty")], 2),
        (["stats", store], 0), (["stats", missing], 8),
        (["fsck", store], 0), (["fsck", store, "--quick"], 0), (["fsck", missing], 8), (["fsck", legacy_store], 0),
        (["recover", store], 0), (["reindex", store], 0), (["compact", store, "--dry-run"], 0),
        (["compact", store], 0), (["recover", missing], 8),
        (["backup", store, "--into", root], 0), (["backup", store, "--into", root], 0),
        (["backup", store, str(tmp / "b.tar"), "--archive"], 0), (["backup", store], 2),
        (["backup", store, str(tmp / "empty")], 0), (["backup", missing, str(tmp / "b2")], 8),
        (["backups", root], 0), (["backups", missing], 8),
        (["verify-backup", root], 0), (["verify-backup", root, "--all"], 0), (["verify-backup", str(gz)], 2),
        (["verify-backup", missing], 8),
        (["restore", root, str(tmp / "r1")], 0), (["restore", root, str(tmp / "r1")], 2),
        (["restore", str(tmp / "b.tar"), str(tmp / "r2"), "--to-position", "3"], 2),
        (["replicate", store, str(tmp / "replica"), "--once"], 0),
        (["replicate", missing, str(tmp / "replica2"), "--once"], 8),
        (["replicate", store, str(tmp / "replica"), "--once", "--retain", "forever"], 2),
        (["verify-backup", str(tmp / "replica")], 0),
        (["restore", str(tmp / "replica"), str(tmp / "r3"), "--to-time", "2999-01-01T00:00:00Z"], 0),
        (["restore", str(tmp / "replica"), str(tmp / "r4"), "--to-time", "yesterday"], 2),
        (["prune", root, "--keep-last", "1", "--dry-run"], 0), (["prune", root], 2),
        (["prune", root, "--keep-last", "1"], 0),
        (["migrate", legacy_store, str(tmp / "migrated")], 0), (["migrate", missing, str(tmp / "m2")], 2),
        (["mirror", store, str(tmp / "not-a-url"), "--once"], 2), (["mirror", store, mirror_url, "--once"], 0),
        (["migrate", store, pg_server.create_database("contract_migrate")], 0), (["stats", mirror_url], 0),
        (["torture", str(tmp / "torture"), "--rounds", "1", "--workers", "1", "--no-fsync"], 0),
        (["torture", str(tmp / "pl"), "--power-loss", "--operation", "append", "--states", "3", "--samples", "0",
          "--io-stride", "0"], 0),
        (["demo", str(tmp / "demo")], 0), (["demo", str(tmp / "batch.jsonl")], 2),
        (["torture", str(tmp / "batch.jsonl"), "--rounds", "1"], 2), (["init", str(tmp / "batch.jsonl")], 2),
        (["compact", missing], 8), (["reindex", missing], 8),
        (["fsck", "--no-such-option", store], 2),
    ]
    out = []
    for args, want in plan:
        if args[:2] == ["verify-backup", str(gz)]:
            import gzip

            gz.write_bytes(gzip.compress((tmp / "b.tar").read_bytes()))
        res = CliRunner().invoke(cli, [*args, "--json"])
        assert res.exit_code == want, (args, res.output)
        out.append((args, res.exit_code, res.stdout))
    return out


def test_every_line_of_every_command_follows_the_schema(runs: list[tuple[list[str], int, str]]) -> None:
    for args, _code, stdout in runs:
        for line in stdout.splitlines():
            errors = list(VALIDATOR.iter_errors(orjson.loads(line)))
            assert not errors, (args, line, [e.message for e in errors])


def test_every_run_ends_with_its_summary_even_on_errors(runs: list[tuple[list[str], int, str]]) -> None:
    for args, code, stdout in runs:
        lines = [orjson.loads(line) for line in stdout.splitlines()]
        summaries = [x for x in lines if x["kind"] == "summary"]
        assert len(summaries) == 1 and lines[-1] is summaries[0], args
        last = lines[-1]
        assert last["operation"].split()[0] == args[0] and last["exit_code"] == code, (args, last)
        named = [display(a) for a in args[1:] if not a.startswith("-")]  # a URL without its password
        if code == 0 or last["path"] is not None:  # null only when the arguments name no path
            assert any(last["path"].startswith(a) for a in named), (args, last)
        if code in (2, 3, 8):
            assert last["error"], args


def test_every_command_was_run_on_success_and_on_failure(runs: list[tuple[list[str], int, str]]) -> None:
    ran = {(args[0], code == 0) for args, code, _ in runs}
    for name in cli.commands:
        assert (name, True) in ran, name
        assert (name, False) in ran or (name in ("torture", "demo", "mirror") and (name, True) in ran), name


def test_read_json_names_batch_ends_and_commit_times(runs: list[tuple[list[str], int, str]]) -> None:
    stdout = next(out for args, code, out in runs if args[0] == "read" and code == 0)
    events = [orjson.loads(line) for line in stdout.splitlines()][:-1]
    assert [e["batch_end"] for e in events] == [False, True, False]  # batches of two
    assert events[0]["commit_us"] == events[1]["commit_us"] <= events[2]["commit_us"]


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_takes_json_and_quiet_and_shows_examples(name: str) -> None:
    command = cli.commands[name]
    options = {opt for p in command.params for opt in p.opts}
    assert {"--json", "--quiet"} <= options
    res = CliRunner().invoke(cli, [name, "--help"])
    assert res.exit_code == 0
    tail = res.output.rstrip().split("Examples:")[-1].strip().splitlines()
    assert "Examples:" in res.output and 2 <= len(tail) <= 3 and all("kroniko-ops " in t for t in tail), tail


def test_a_compressed_archive_is_bad_input_not_a_corrupt_backup(runs: list[tuple[list[str], int, str]]) -> None:
    stdout = next(out for args, _c, out in runs if args[0] == "verify-backup" and args[1].endswith(".gz"))
    assert "decompress it first" in orjson.loads(stdout.splitlines()[-1])["error"]
