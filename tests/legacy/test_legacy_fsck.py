"""fsck of legacy (format 1) stores: the fixtures' listed damage exactly, every check, read-only."""

from __future__ import annotations

import os
from collections.abc import Callable

import orjson
import pytest
from click.testing import CliRunner
from legacy_helpers import tree_digest

import kroniko_ops
from kroniko_ops.cli import cli
from kroniko_ops.legacy.check import check_legacy
from kroniko_ops.legacy.synth import LegacyWriter
from kroniko_ops.report import Report

CRASHED_DAMAGE = {  # the fixture README's list: code -> position (None: not tied to a line)
    "dangling-event": None,  # 1. an event file no log line names
    "index-missing-entry": 121,  # 2. a log line whose event is in no index
    "index-extra-entry": None,  # 3. index/type/ItemRemoved.jsonl names an id not in the log
    "event-unreadable": 1,  # 4. the event file of line 1 truncated
    "log-torn-tail": 122,  # 5. a torn last log line
}


def _check(path: str, level: str = "full") -> Report:
    report = Report("fsck", path)
    check_legacy(path, report, level)
    return report.finish()


def _got(findings: list) -> list[tuple[str, int]]:
    """Sorted ``(code, position)`` pairs, 0 for a finding tied to no position."""
    return sorted((f.code, f.position or 0) for f in findings)


def _problems(report: Report) -> dict[str, int | None]:
    out = {f.code: f.position for f in report.findings if f.severity != "info"}
    assert len(out) == len(report.problems), report.findings  # one finding per code here
    return out


@pytest.mark.parametrize("level", ["quick", "full"])
def test_clean_fixture_is_clean(legacy_clean: str, level: str) -> None:
    report = _check(legacy_clean, level)
    assert report.findings == []
    assert report.exit_code == 0
    assert report.head == 400


def test_crashed_fixture_shows_exactly_its_five_damages(legacy_crashed: str) -> None:
    report = _check(legacy_crashed)
    assert _problems(report) == CRASHED_DAMAGE
    assert report.head == 121
    assert report.exit_code == 4
    extra = next(f for f in report.findings if f.code == "index-extra-entry")
    assert extra.path.endswith(os.path.join("index", "type", "ItemRemoved.jsonl"))
    missing = next(f for f in report.findings if f.code == "index-missing-entry")
    assert "index/type/ItemAdded.jsonl" in missing.message and "data.cart_id/cart-1.jsonl" in missing.message


def test_quick_level_sees_the_structural_damage_only(legacy_crashed: str) -> None:
    assert _problems(_check(legacy_crashed, "quick")) == {"dangling-event": None, "log-torn-tail": 122}


def test_fsck_entry_point_and_cli_use_the_same_codes_and_exit_codes(legacy_crashed: str) -> None:
    before = tree_digest(legacy_crashed)
    report = kroniko_ops.fsck(legacy_crashed)
    assert {f.code for f in report.problems} == set(CRASHED_DAMAGE)
    res = CliRunner().invoke(cli, ["fsck", legacy_crashed, "--json"])
    assert res.exit_code == 4, res.output
    lines = [orjson.loads(x) for x in res.output.splitlines()]
    assert lines[-1]["kind"] == "summary" and lines[-1]["exit_code"] == 4 and lines[-1]["head"] == 121
    assert {x["code"] for x in lines if x["kind"] == "finding"} == set(CRASHED_DAMAGE)
    res = CliRunner().invoke(cli, ["fsck", legacy_crashed, "--repair"])
    assert res.exit_code == 4
    assert tree_digest(legacy_crashed) == before  # never repaired in place


def test_clean_fixture_cli_exit_0(legacy_clean: str) -> None:
    res = CliRunner().invoke(cli, ["fsck", legacy_clean, "--json"])
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.output.splitlines()[-1])["exit_code"] == 0


def test_generated_store_is_clean(synth_store: str) -> None:
    report = _check(synth_store)
    assert report.problems == [], report.findings
    assert report.head == 300


# -- every check, on generated damage ---------------------------------------------------------


def _write(make: Callable[[str], LegacyWriter], events: list[tuple[str, object]]) -> tuple[str, list[str]]:
    with make("legacy") as w:
        ids = [w.append(t, d) for t, d in events]
    return w.root, ids


def _append_log(root: str, text: bytes) -> None:
    with open(os.path.join(root, "log", "append.log"), "ab") as f:
        f.write(text)


def test_log_damage_codes(legacy_writer: Callable[[str], LegacyWriter]) -> None:
    root, ids = _write(legacy_writer, [("A", {"k": 1}), ("B", {"k": 2})])
    _append_log(root, ids[0].encode() + b"\n")  # 3: repeats line 1
    _append_log(root, b"\n")  # 4: blank
    _append_log(root, b"../outside\n")  # 5: could leave events/: never opened
    _append_log(root, b"1795736064.5-" + ids[1].encode() + b"\n")  # 6: torn bytes glued to an id
    _append_log(root, b"1795736099.000001-00000000-0000-4000-8000-000000000000\n")  # 7: missing file
    with open(os.path.join(os.path.dirname(root), "outside.json"), "w") as f:
        f.write('{"type": "Secret", "data": 1}')
    report = _check(root)
    got = _got(report.problems)
    assert got == [("legacy-log-glued-line", 6), ("log-bad-line", 4), ("log-bad-line", 5),
                   ("log-duplicate-id", 3), ("log-duplicate-id", 6), ("missing-event", 7)]
    assert report.head == 7


def test_event_damage_codes(legacy_writer: Callable[[str], LegacyWriter]) -> None:
    root, ids = _write(legacy_writer, [("A", {"k": 1}), ("B", {"k": 2}), ("C", {"k": 3}), ("D", {"n": 1})])
    ev = os.path.join(root, "events")
    with open(os.path.join(ev, ids[0] + ".json"), "w") as f:
        f.write('{"type": "A", "data": {"k": 1}, "id": "someone-else"}')
    with open(os.path.join(ev, ids[1] + ".json"), "w") as f:
        f.write("[1, 2]")
    with open(os.path.join(ev, ids[2] + ".json"), "w") as f:
        f.write(f'{{"type": "C", "data": {{"k": 123456789012345678901234567890}}, "id": "{ids[2]}"}}')
    os.unlink(os.path.join(ev, ids[3] + ".json"))
    os.symlink("/etc/hostname", os.path.join(ev, ids[3] + ".json"))
    os.mkdir(os.path.join(ev, "junk"))
    report = _check(root)
    got = _got(report.problems)
    assert got == [("event-id-mismatch", 1), ("event-unreadable", 2), ("event-unreadable", 4),
                   ("legacy-event-unportable", 3), ("stray-file", 0)]
    quick = _got(_check(root, "quick").problems)
    assert quick == [("event-unreadable", 4), ("stray-file", 0)]


def test_index_damage_and_collisions(legacy_writer: Callable[[str], LegacyWriter]) -> None:
    root, ids = _write(legacy_writer, [
        ("Coupon", {"code": 2}), ("Coupon", {"code": "2"}),  # share data.code/2.jsonl
        ("User", {"plan": None}), ("User", {"plan": ""}),  # share data.plan/.jsonl
        ("itemadded", {}), ("ItemAdded", {}),  # the gem matches types case-insensitively
        ("Coupon", {"code": "WINTER/25"}),  # a subfolder, harmless
    ])
    report = _check(root)
    assert [f.code for f in report.problems] == ["index-name-collision"] * 3
    paths = {f.path for f in report.problems}
    assert os.path.join(root, "index/data.code/2.jsonl") in paths
    assert os.path.join(root, "index/data.plan/.jsonl") in paths
    assert any("'itemadded'" in f.message and "'ItemAdded'" in f.message for f in report.problems)
    # index lines: one lost, one naming nothing, one in the wrong file
    type_a = os.path.join(root, "index", "type", "Coupon.jsonl")
    with open(type_a) as f:
        lines = f.read().splitlines()
    with open(type_a, "w") as f:
        f.write("\n".join([*lines[1:], "1795736064.1-nothing", ids[2]]) + "\n")
    report = _check(root)
    got = _got([f for f in report.problems if f.code != "index-name-collision"])
    assert got == [("index-extra-entry", 0), ("index-extra-entry", 3), ("index-missing-entry", 1)]


def test_hostile_index_names_are_reported_never_followed(legacy_writer: Callable[[str], LegacyWriter]) -> None:
    root, _ = _write(legacy_writer, [("A", {"code": "../../../x"}), ("B", {"code": "../elsewhere"}),
                                     ("C", {"code": "a\0b"}), ("D", {"code": "../../x"}), ("../../../T", {})])
    report = _check(root)
    got = sorted((f.code, f.severity, f.position or 0) for f in report.problems)
    assert got == [("index-unsafe-name", "error", 1), ("index-unsafe-name", "error", 5),
                   ("index-unsafe-name", "warning", 2), ("index-unsafe-name", "warning", 3),
                   ("index-unsafe-name", "warning", 4)]
    assert not os.path.exists(os.path.join(os.path.dirname(root), "x.jsonl"))


def test_races_made_visible(legacy_writer: Callable[[str], LegacyWriter]) -> None:
    root, ids = _write(legacy_writer, [("A", {"k": 1}), ("A", {"k": 2}), ("A", {"k": 3})])
    log = os.path.join(root, "log", "append.log")
    with open(log, "w") as f:  # line 2 was created after line 3: two writers raced
        f.write("\n".join([ids[0], ids[2], ids[1]]) + "\n")
    idx = os.path.join(root, "index", "type", "A.jsonl")
    with open(idx, "w") as f:  # the index lists them in creation order, not log order
        f.write("\n".join([ids[0], ids[1], ids[2]]) + "\n")
    report = _check(root)
    assert report.problems == []
    assert _got(report.findings) == [
        ("legacy-race-index-order", 0), ("legacy-race-log-order", 3)]


def test_fsck_never_writes(legacy_crashed: str) -> None:
    before = tree_digest(legacy_crashed)
    _check(legacy_crashed, "full")
    _check(legacy_crashed, "quick")
    assert tree_digest(legacy_crashed) == before
