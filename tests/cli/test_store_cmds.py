"""The store commands (init, append, read, head, stats, demo) and their exit codes (README)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from kroniko_ops import Event, EventStore
from kroniko_ops.cli import cli


def run(*args: str, input: str | bytes | None = None) -> Result:
    """Invoke the CLI in-process; stdout and stderr kept apart."""
    return CliRunner().invoke(cli, list(args), input=input)


def jsonl(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def files(root: str) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to prove a refused command wrote nothing)."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root)] = Path(full).read_bytes()
    return out


@pytest.fixture
def shop(store_path: str) -> str:
    """A store with five events: carts 1 and 2, items, one checkout."""
    assert run("init", store_path).exit_code == 0
    lines = [
        {"type": "CartCreated", "data": {"cart": 1}, "tags": ["cart:1"]},
        {"type": "ItemAdded", "data": {"sku": "apple"}, "tags": ["cart:1", "sku:apple"]},
        {"type": "CartCreated", "data": {"cart": 2}, "tags": ["cart:2"]},
        {"type": "ItemAdded", "data": {"sku": "pear"}, "tags": ["cart:2", "sku:pear"], "metadata": {"by": "ada"}},
        {"type": "CartCheckedOut", "data": {}, "tags": ["cart:1"], "id": "checkout-1"},
    ]
    res = run("append", store_path, input="\n".join(orjson.dumps(x).decode() for x in lines) + "\n")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "5"
    return store_path


# -- init ----------------------------------------------------------------------------------


def test_init_creates_an_empty_store(store_path: str) -> None:
    res = run("init", store_path)
    assert res.exit_code == 0, res.output
    assert "head 0" in res.stdout
    assert Path(store_path, "FORMAT").read_text().startswith("kroniko-ops format 3\n")
    assert run("head", store_path).stdout.strip() == "0"


def test_init_max_event_bytes_is_enforced(store_path: str) -> None:
    assert run("init", store_path, "--max-event-bytes", "200").exit_code == 0
    assert "max_event_bytes=200" in Path(store_path, "FORMAT").read_text()
    before = files(store_path)
    res = run("append", store_path, input=orjson.dumps({"type": "Big", "data": "x" * 300}).decode())
    assert res.exit_code == 2
    assert "200" in res.stderr
    assert files(store_path) == before
    assert run("append", store_path, input='{"type": "Small", "data": 1}').exit_code == 0


def test_init_on_a_file_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    res = run("init", str(target))
    assert res.exit_code == 2
    assert "file" in res.stderr
    assert target.read_text() == "x"


# -- append --------------------------------------------------------------------------------


def test_append_from_stdin_and_from_a_file(store_path: str, tmp_path: Path) -> None:
    run("init", store_path)
    assert run("append", store_path, input='{"type": "A", "data": 1}\n\n{"type": "B"}\n').stdout.strip() == "2"
    source = tmp_path / "events.jsonl"
    source.write_text('{"type": "C", "data": [1, 2], "tags": ["t"], "metadata": {"m": true}, "id": "c-1"}\n')
    res = run("append", store_path, "--file", str(source))
    assert res.exit_code == 0 and res.stdout.strip() == "3"
    res = run("append", store_path, "-f", str(source))  # the same id again: an idempotent retry
    assert res.exit_code == 0 and res.stdout.strip() == "3"
    with EventStore(store_path) as s:
        assert [e.event for e in s.read()][2] == Event("C", [1, 2], ("t",), {"m": True}, "c-1")


BAD_LINES = {
    "not JSON": '{"type": "A", ',
    "a JSON array": '["A"]',
    "no type": '{"data": 1}',
    "unknown field": '{"type": "A", "payload": 1}',
    "empty type": '{"type": ""}',
    "type not a string": '{"type": 5}',
    "tags a string": '{"type": "A", "tags": "cart:1"}',
    "tag not a string": '{"type": "A", "tags": [1]}',
    "NaN": '{"type": "A", "data": NaN}',
    "Infinity": '{"type": "A", "data": Infinity}',
    "number too big for a double": '{"type": "A", "data": 1e400}',
    "int 2**64": '{"type": "A", "data": 18446744073709551616}',
    "int below -2**63": '{"type": "A", "data": {"n": -9223372036854775809}}',
    "metadata a list": '{"type": "A", "metadata": [1]}',
    "bad id": '{"type": "A", "id": "a/b"}',
    "lone surrogate": '{"type": "A", "tags": ["\\ud800"]}',
}


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_malformed_input_exits_2_and_writes_nothing(shop: str, name: str) -> None:
    before = files(shop)
    # The bad line comes second: the good first line must not be written either.
    res = run("append", shop, input='{"type": "Good", "tags": ["good"]}\n' + BAD_LINES[name] + "\n")
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert res.stderr.startswith("error:")
    assert files(shop) == before
    assert run("head", shop).stdout.strip() == "5"


@pytest.mark.parametrize("text", ["", "\n\n", "   \n"])
def test_empty_input_exits_2(shop: str, text: str) -> None:
    before = files(shop)
    res = run("append", shop, input=text)
    assert res.exit_code == 2
    assert files(shop) == before


def test_duplicate_ids_in_input_exit_2(shop: str) -> None:
    before = files(shop)
    res = run("append", shop, input='{"type": "A", "id": "x-1"}\n{"type": "B", "id": "x-1"}\n')
    assert res.exit_code == 2
    assert files(shop) == before


def test_reusing_a_committed_id_exits_2(shop: str) -> None:
    before = files(shop)
    res = run("append", shop, input='{"type": "Other", "id": "checkout-1"}\n{"type": "New"}\n')
    assert res.exit_code == 2
    assert "checkout-1" in res.stderr
    assert files(shop) == before


def test_condition_conflict_exits_3(shop: str) -> None:
    before = files(shop)
    item = '{"type": "ItemAdded", "tags": ["cart:1"]}'
    res = run("append", shop, "--fail-if-tag", "cart:1", "--after", "2", input=item)
    assert res.exit_code == 3, res.output
    assert "5" in res.stderr  # the first conflicting position: the checkout
    res = run("append", shop, "--fail-if-type", "CartCreated", "--fail-if-tag", "cart:2",
              input='{"type": "CartCreated", "tags": ["cart:2"]}')
    assert res.exit_code == 3
    assert "3" in res.stderr
    res = run("append", shop, "--fail-if-type", "CartCreated", "--fail-if-type", "CartCheckedOut",
              "--after", "4", input='{"type": "X"}')
    assert res.exit_code == 3
    assert files(shop) == before


def test_condition_that_holds_appends(shop: str) -> None:
    item = '{"type": "ItemAdded", "tags": ["cart:1"]}'
    res = run("append", shop, "--fail-if-tag", "cart:1", "--after", "5", input=item)
    assert (res.exit_code, res.stdout.strip()) == (0, "6")
    res = run("append", shop, "--fail-if-tag", "cart:3", input='{"type": "CartCreated", "tags": ["cart:3"]}')
    assert (res.exit_code, res.stdout.strip()) == (0, "7")
    res = run("append", shop, "--fail-if-type", "CartCreated", "--fail-if-tag", "cart:1", "--after", "1",
              input='{"type": "Note", "tags": ["cart:1"]}')
    assert (res.exit_code, res.stdout.strip()) == (0, "8")


def test_after_without_a_condition_is_a_usage_error(shop: str) -> None:
    before = files(shop)
    res = run("append", shop, "--after", "3", input='{"type": "A"}')
    assert res.exit_code == 2
    assert files(shop) == before


def test_no_fsync_append_reads_back(shop: str) -> None:
    res = run("append", shop, "--no-fsync", input='{"type": "Bulk", "data": 1}\n{"type": "Bulk", "data": 2}\n')
    assert (res.exit_code, res.stdout.strip()) == (0, "7")
    assert [e["data"] for e in jsonl(run("read", shop, "--type", "Bulk", "--json").stdout)[:-1]] == [1, 2]


# -- read, head, stats ---------------------------------------------------------------------


def test_read_json_objects_and_summary(shop: str) -> None:
    res = run("read", shop, "--json")
    assert res.exit_code == 0
    objs = jsonl(res.stdout)
    events, summary = objs[:-1], objs[-1]
    assert [e["position"] for e in events] == [1, 2, 3, 4, 5]
    for e in events:
        assert set(e) == {"kind", "position", "id", "type", "tags", "data", "metadata", "batch_end", "commit_us",
                          "committed_at"}
        assert e["kind"] == "event"
    stamp = {"commit_us": events[3]["commit_us"], "committed_at": events[3]["committed_at"]}
    assert events[3] | {"id": None} == {"kind": "event", "position": 4, "id": None, "type": "ItemAdded",
                                         "tags": ["cart:2", "sku:pear"], "data": {"sku": "pear"},
                                         "metadata": {"by": "ada"}, "batch_end": False, **stamp}
    assert events[4]["id"] == "checkout-1"
    # the five were appended as one batch: it ends at 5, and all share its commit time
    assert [e["batch_end"] for e in events] == [False, False, False, False, True]
    assert {(e["commit_us"], e["committed_at"]) for e in events} == {(stamp["commit_us"], stamp["committed_at"])}
    assert summary.pop("seconds") >= 0
    assert summary == {"kind": "summary", "operation": "read", "path": shop, "exit_code": 0, "head": 5, "events": 5}


def test_read_filters(shop: str) -> None:
    def pos(*args: str) -> list[int]:
        res = run("read", shop, *args, "--json")
        assert res.exit_code == 0, res.output
        return [o["position"] for o in jsonl(res.stdout) if o["kind"] == "event"]

    assert pos("--tag", "cart:1") == [1, 2, 5]
    assert pos("--tag", "cart:1", "--tag", "sku:apple") == [2]
    assert pos("--type", "CartCreated") == [1, 3]
    assert pos("--type", "CartCreated", "--type", "CartCheckedOut") == [1, 3, 5]
    assert pos("--type", "ItemAdded", "--tag", "cart:2") == [4]
    assert pos("--type", "Nope") == []
    assert pos("--start", "3") == [3, 4, 5]
    assert pos("--start", "9") == []
    assert pos("--backwards") == [5, 4, 3, 2, 1]
    assert pos("--backwards", "--start", "3", "--limit", "2") == [3, 2]
    assert pos("--tag", "cart:1", "--backwards", "--limit", "2") == [5, 2]
    assert pos("--limit", "0") == []


def test_read_text_output(shop: str) -> None:
    res = run("read", shop, "--tag", "sku:apple")
    assert res.exit_code == 0
    assert res.stdout.splitlines() == ['2\tItemAdded\tcart:1,sku:apple\t{"sku":"apple"}']


def test_read_rejects_bad_options(shop: str) -> None:
    assert run("read", shop, "--limit", "-1").exit_code == 2
    assert run("read", shop, "--start", "x").exit_code == 2
    assert run("read", shop, "--bogus").exit_code == 2


def test_head(shop: str) -> None:
    res = run("head", shop)
    assert (res.exit_code, res.stdout.strip()) == (0, "5")


def test_stats(shop: str) -> None:
    res = run("stats", shop, "--json")
    assert res.exit_code == 0
    obj, summary = jsonl(res.stdout)
    assert obj["kind"] == "stats" and summary["kind"] == "summary" and summary["exit_code"] == 0
    assert obj["head"] == 5 and obj["segment_events"] == 5 and obj["temp_files"] == 0
    assert obj["segments"] == 1 and obj["packs"] == 0 and obj["index_checkpoint"] in (0, 5)
    text = run("stats", shop)
    assert text.exit_code == 0 and "head: 5" in text.stdout


def test_stats_counts_events_whose_id_looks_like_a_temp_name(shop: str) -> None:
    # ".tmp-1" is a legal id (A-Z a-z 0-9 . _ -): an event, never counted as a temp file.
    assert run("append", shop, input='{"type": "A", "id": ".tmp-1"}').exit_code == 0
    obj, _summary = jsonl(run("stats", shop, "--json").stdout)
    assert (obj["segment_events"], obj["temp_files"]) == (6, 0)


# -- errors: missing store, damaged store, legacy store ------------------------------------


@pytest.mark.parametrize("command", [["read"], ["head"], ["stats"], ["append"]])
def test_missing_store_exits_8_and_creates_nothing(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nowhere"
    res = run(*command, str(missing), input='{"type": "A"}')
    assert res.exit_code == 8, res.output
    assert "init" in res.stderr
    assert not missing.exists()


def test_lock_timeout_exits_8_and_writes_nothing(shop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The command has no timeout option: shorten the library default so the test does not wait 30s.
    monkeypatch.setitem(EventStore.__init__.__kwdefaults__, "lock_timeout", 0.2)
    fd = os.open(os.path.join(shop, "locks", "append.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        before = files(shop)
        res = run("append", shop, input='{"type": "A"}')
        assert res.exit_code == 8, res.output
        assert "lock" in res.stderr
        assert files(shop) == before
        # Reads go on while the lock is held.
        assert run("read", shop, "--json").exit_code == 0
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert run("append", shop, input='{"type": "A"}').stdout.strip() == "6"


def test_log_shorter_than_its_synced_position_exits_4(shop: str) -> None:
    # Committed, synced records that vanished from the log: damage for a person, not a tail to cut.
    (segment,) = Path(shop, "log").glob("*.seg")
    os.truncate(segment, len(segment.read_bytes().rstrip(b"\0")) // 2)
    res = run("read", shop)
    assert res.exit_code == 4
    assert "fsck" in res.stderr


def test_legacy_store_is_refused_with_exit_2(legacy_clean: str) -> None:
    before = files(legacy_clean)
    for command in (["read", legacy_clean], ["head", legacy_clean], ["append", legacy_clean]):
        res = run(*command, input='{"type": "A"}')
        assert res.exit_code == 2, (command, res.output)
        assert "migrate" in res.stderr
    assert files(legacy_clean) == before


# -- demo ----------------------------------------------------------------------------------


def test_demo_runs_twice_in_the_same_folder(tmp_path: Path) -> None:
    folder = str(tmp_path / "demo")
    first = run("demo", folder)
    assert first.exit_code == 0, first.output
    assert "refused, AppendConditionFailed" in first.stdout
    assert "head 0 before the demo" in first.stdout
    head1 = int(run("head", folder).stdout)
    second = run("demo", folder)
    assert second.exit_code == 0, second.output
    assert f"head {head1} before the demo" in second.stdout
    assert "refused, AppendConditionFailed" in second.stdout
    assert int(run("head", folder).stdout) > head1
    objs = jsonl(run("read", folder, "--type", "CouponRedeemed", "--json").stdout)
    assert [o["data"]["by"] for o in objs if o["kind"] == "event"] == ["first", "first"]


# -- the installed console script ----------------------------------------------------------


def _script() -> str:
    candidate = Path(sys.executable).with_name("kroniko-ops")
    found = str(candidate) if candidate.exists() else shutil.which("kroniko-ops")
    assert found, "the kroniko-ops console script is not installed next to this Python"
    return found


def test_console_script_round_trip(tmp_path: Path) -> None:
    exe, path = _script(), str(tmp_path / "store")

    def sh(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=60)

    assert sh("init", path).returncode == 0
    res = sh("append", path, stdin='{"type": "A", "tags": ["k"]}\n{"type": "B", "tags": ["k"]}\n')
    assert (res.returncode, res.stdout.strip()) == (0, "2")
    res = sh("append", path, "--fail-if-tag", "k", "--after", "1", stdin='{"type": "C"}\n')
    assert res.returncode == 3 and "2" in res.stderr
    res = sh("read", path, "--json")
    assert [o["type"] for o in jsonl(res.stdout) if o["kind"] == "event"] == ["A", "B"]
    assert sh("head", str(tmp_path / "missing")).returncode == 8
    assert sh("append", path, stdin="not json\n").returncode == 2
    assert sh("head", path).stdout.strip() == "2"


def test_console_script_help_lists_the_commands() -> None:
    res = subprocess.run([_script(), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for command in ("init", "append", "read", "head", "stats", "demo"):
        assert command in res.stdout


def test_demo_refuses_a_store_it_did_not_write(tmp_path: Path) -> None:
    # The demo's events cannot be taken back: a real store given by mistake must stay as it was.
    folder = str(tmp_path / "real")
    assert run("init", folder).exit_code == 0
    assert run("append", folder, input='{"type":"OrderPlaced","data":{"n":1}}\n').exit_code == 0
    before = files(folder)
    done = run("demo", folder)
    assert done.exit_code == 2 and "did not write" in done.output
    assert files(folder) == before and int(run("head", folder).stdout) == 1


@pytest.mark.parametrize("option", [("--segment-bytes", "8192"), ("--max-event-bytes", "1000")])
def test_init_of_an_existing_store_refuses_other_sizes(tmp_path: Path, option: tuple[str, str]) -> None:
    folder = str(tmp_path / "s")
    assert run("init", folder).exit_code == 0
    before = files(folder)
    done = run("init", folder, *option)
    assert done.exit_code == 2 and "fixed when a store is created" in done.output, done.output
    assert files(folder) == before
    assert run("init", folder).exit_code == 0  # the same options (none given) still confirm it
