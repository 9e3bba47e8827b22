"""migrate on generated damage and hostile names: every decision, and nothing written outside the
target whatever the legacy store names."""

from __future__ import annotations

import base64
import json
import os
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from legacy_helpers import committed_lines, scalar, tree_digest
from migrate_helpers import assert_fsck_clean

from kroniko_ops import EventStore, Query, QueryItem, property_tag
from kroniko_ops.cli import cli
from kroniko_ops.legacy import migrate as migrate_module
from kroniko_ops.legacy.convert import INLINE_RAW_LIMIT, PLACEHOLDER_TAG, PLACEHOLDER_TYPE
from kroniko_ops.legacy.migrate import migrate
from kroniko_ops.legacy.synth import LegacyWriter
from kroniko_ops.report import Report


def _events(target: str) -> list[Any]:
    with EventStore(target, create=False) as s:
        return list(s.read())


def _by_code(report: Report) -> dict[str, list[int | None]]:
    out: dict[str, list[int | None]] = {}
    for f in report.findings:
        out.setdefault(f.code, []).append(f.position)
    return out


def _append_log(root: str, text: bytes) -> None:
    with open(os.path.join(root, "log", "append.log"), "ab") as f:
        f.write(text)


def _clean_after(target: str) -> None:
    assert_fsck_clean(target)


def test_log_damage_keeps_every_position(legacy_writer: Callable[[str], LegacyWriter], tmp_path: Path) -> None:
    with legacy_writer("legacy") as w:
        a = w.append("A", {"k": 1})
        b = w.append("B", {"k": 2})
    root = w.root
    _append_log(root, a.encode() + b"\n")  # 3: repeats line 1
    _append_log(root, b"\n")  # 4: blank
    _append_log(root, b"../outside\n")  # 5: never opened
    _append_log(root, b"1795736064.5-" + b.encode() + b"\n")  # 6: torn bytes glued to a repeated id
    missing = "1795736099.000001-00000000-0000-4000-8000-000000000000"
    _append_log(root, missing.encode() + b"\n")  # 7: no such file
    glued = w.new_id()
    with open(os.path.join(root, "events", glued + ".json"), "w") as f:
        f.write(json.dumps({"type": "G", "data": {"g": True}, "id": glued}, indent=2))
    _append_log(root, b"179573" + glued.encode() + b"\n")  # 8: torn bytes glued to a new id
    _append_log(root, b"1795736064.9")  # torn tail
    (tmp_path / "outside.json").write_text('{"type": "Secret", "data": "s3cret"}')
    target = str(tmp_path / "new")
    report = migrate(root, target)
    codes = _by_code(report)
    assert codes["log-duplicate-id"] == [3, 6]
    assert codes["log-bad-line"] == [4, 5]
    assert codes["missing-event"] == [7]
    assert codes["legacy-log-glued-line"] == [6, 8]
    assert codes["log-torn-tail"] == [9]
    events = _events(target)
    assert [e.position for e in events] == list(range(1, 9))
    assert [e.id for e in events][:2] == [a, b]
    assert events[7].id == glued and events[7].type == "G" and list(events[7].tags) == ["g:true"]
    for e, reason in zip(events[2:7], ["duplicate-id", "log-bad-line", "log-bad-line", "duplicate-id",
                                       "missing-event"], strict=True):
        assert e.type == PLACEHOLDER_TYPE and list(e.tags) == [PLACEHOLDER_TAG]
        assert e.data["reason"] == reason and e.data["position"] == e.position
    assert events[2].data["duplicate_of"] == 1 and events[5].data["duplicate_of"] == 2
    assert events[4].data["log_line"] == "../outside"
    assert events[6].id == missing and events[6].data["legacy_id"] == missing
    assert "s3cret" not in json.dumps([e.data for e in events])
    _clean_after(target)


def test_overlong_log_lines_are_bad_lines(legacy_writer: Callable[[str], LegacyWriter], tmp_path: Path) -> None:
    with legacy_writer("legacy") as w:
        a = w.append("A", {"k": 1})
    _append_log(w.root, b"x" * 200_000 + b"\n")
    b = w.new_id()
    with open(os.path.join(w.root, "events", b + ".json"), "w") as f:
        f.write(json.dumps({"type": "B", "data": None, "id": b}))
    _append_log(w.root, b.encode() + b"\n" + b"y" * 150_000)
    target = str(tmp_path / "new")
    report = migrate(w.root, target, durable=False)
    events = _events(target)
    assert [e.id for e in events[::2]] == [a, b]
    assert events[1].data["reason"] == "log-bad-line" and len(events[1].data["log_line"]) == 200
    assert report.figures["torn_bytes"] == 150_000


def test_a_log_growing_during_migration_is_reported(legacy_writer: Callable[[str], LegacyWriter], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with legacy_writer("legacy") as w:
        w.append("A", {"k": 1})
    late = w.new_id()
    real_copy = migrate_module._copy

    def copy_while_ruby_appends(*args: Any) -> Any:
        with open(os.path.join(w.root, "events", late + ".json"), "w") as f:
            f.write(json.dumps({"type": "Late", "data": {}, "id": late}))
        _append_log(w.root, late.encode() + b"\n")
        return real_copy(*args)

    monkeypatch.setattr(migrate_module, "_copy", copy_while_ruby_appends)
    target = str(tmp_path / "new")
    report = migrate(w.root, target, durable=False)
    assert [f.code for f in report.problems] == ["legacy-changed"]
    assert [e.type for e in _events(target)] == ["A"]


def test_event_damage(legacy_writer: Callable[[str], LegacyWriter], tmp_path: Path) -> None:
    with legacy_writer("legacy") as w:
        ids = [w.append("A", {"k": i}) for i in range(5)]
        odd = "not:a-format-2-id"
        w.append("Odd", {"k": "odd"}, event_id=odd)
    ev = os.path.join(w.root, "events")

    def put(eid: str, data: bytes) -> None:
        os.chmod(os.path.join(ev, eid + ".json"), 0o644)
        with open(os.path.join(ev, eid + ".json"), "wb") as f:
            f.write(data)

    put(ids[0], b'{"type": "A", "data": {"k": 0}, "id": "someone-else"}')
    put(ids[1], b'{"type": "A", "da')
    big_garbage = b"\xff" * (INLINE_RAW_LIMIT + 10)
    put(ids[2], big_garbage)
    huge_int = b'{"type": "A", "data": {"k": 123456789012345678901234567890}, "id": "%s"}' % ids[3].encode()
    put(ids[3], huge_int)
    target = str(tmp_path / "new")
    report = migrate(w.root, target)
    codes = _by_code(report)
    assert codes["event-id-mismatch"] == [1]
    assert codes["event-unreadable"] == [2, 3]
    assert codes["legacy-event-unportable"] == [4]
    assert codes["legacy-id-unportable"] == [6]
    events = _events(target)
    assert [e.id for e in events[:5]] == ids
    assert events[0].type == "A" and events[0].metadata == {"legacy_content_id": "someone-else"}
    assert events[1].data["raw_text"] == '{"type": "A", "da'
    assert events[2].data["raw_size"] == len(big_garbage) and "raw_text" not in events[2].data
    kept = os.path.join(target, events[2].data["lost_found"], "event.json")
    with open(kept, "rb") as f:
        assert f.read() == big_garbage
    assert events[3].data["reason"] == "event-unportable" and events[3].data["raw_text"] == huge_int.decode()
    assert events[4].data == {"k": 4}
    assert events[5].id != odd and events[5].metadata == {"legacy_id": odd} and events[5].data == {"k": "odd"}
    _clean_after(target)


def test_undecodable_names(legacy_writer: Callable[[str], LegacyWriter], tmp_path: Path) -> None:
    with legacy_writer("legacy") as w:
        w.append("A", {})
    name = b"caf\xe9-1"
    with open(os.path.join(w.root.encode(), b"events", name + b".json"), "wb") as f:
        f.write(b'{"type": "B", "data": {"k": 1}, "id": "x"}')
    _append_log(w.root, name + b"\n")  # an existing file, not UTF-8, not a format-2 id
    _append_log(w.root, b"gone\xff\n")  # not UTF-8, no file
    with open(os.path.join(w.root.encode(), b"events", b"orph\xe9.json"), "wb") as f:
        f.write(b"{}")
    target = str(tmp_path / "new")
    res = CliRunner().invoke(cli, ["migrate", w.root, target, "--json"])
    assert res.exit_code == 1, res.exception
    lines = [orjson.loads(x) for x in res.output.splitlines()]
    assert lines[-1]["kind"] == "summary" and lines[-2]["code"] == "dangling-event"
    assert "orph\\xe9.json" in lines[-2]["path"]
    res = CliRunner().invoke(cli, ["fsck", w.root, "--json"])
    assert res.exit_code == 4 and orjson.loads(res.output.splitlines()[-1])["kind"] == "summary"
    events = _events(target)
    assert events[1].type == "B" and events[1].metadata == {"legacy_id": "caf\\xe9-1", "legacy_content_id": "x"}
    assert events[2].data["reason"] == "log-bad-line" and events[2].data["log_line"] == "gone\\xff"
    _clean_after(target)


def test_binary_bytes_are_kept_as_base64(legacy_writer: Callable[[str], LegacyWriter], tmp_path: Path) -> None:
    with legacy_writer("legacy") as w:
        eid = w.append("A", {})
    path = os.path.join(w.root, "events", eid + ".json")
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(b'{"type": "A\xff')
    migrate(w.root, str(tmp_path / "new"), durable=False)
    assert base64.b64decode(_events(str(tmp_path / "new"))[0].data["raw_base64"]) == b'{"type": "A\xff'


def test_orphans_and_strays_go_to_lost_found(legacy_writer: Callable[[str], LegacyWriter], tmp_path: Path) -> None:
    with legacy_writer("legacy") as w:
        w.append("A", {"k": 1})
        orphan = w.append("B", {"k": 2}, log=False)
    ev = os.path.join(w.root, "events")
    with open(os.path.join(ev, "notes.txt"), "w") as f:
        f.write("hello")
    os.mkdir(os.path.join(ev, "sub"))
    os.symlink("/etc/hostname", os.path.join(ev, "link.json"))
    target = str(tmp_path / "new")
    report = migrate(w.root, target)
    assert report.figures["orphans"] == 1 and report.figures["strays"] == 3
    assert sorted(_by_code(report)) == ["dangling-event", "stray-file"]
    kept = {}
    for folder in os.listdir(os.path.join(target, "lost-found")):
        for name in os.listdir(os.path.join(target, "lost-found", folder)):
            with open(os.path.join(target, "lost-found", folder, name), "rb") as f:
                kept[name] = f.read()
    with open(os.path.join(ev, orphan + ".json"), "rb") as f:
        assert kept[orphan + ".json"] == f.read()
    assert kept["notes.txt"] == b"hello"
    assert "link.json" not in kept and "sub" not in kept
    assert "sub: not a regular file" in kept["NOTE.txt"].decode()
    assert [e.type for e in _events(target)] == ["A"]


def test_data_shapes_and_tag_rule(legacy_writer: Callable[[str], LegacyWriter], tmp_path: Path) -> None:
    shapes: list[Any] = [{"s": "x", "i": 2, "f": 2.5, "t": True, "n": None, "l": [1], "o": {"a": 1}},
                         [1, 2], "text", None, 7, {}]
    with legacy_writer("legacy") as w:
        for data in shapes:
            w.append("Shape", data)
        big = w.append("Big", {"blob": "x" * 700_000})
    target = str(tmp_path / "new")
    report = migrate(w.root, target)
    events = _events(target)
    assert [e.data for e in events[:6]] == shapes
    assert list(events[0].tags) == ["s:x", "i:2", "f:2.5", "t:true", "n:null"]
    assert all(list(e.tags) == [] for e in events[1:6])
    assert events[6].id == big and events[6].data["blob"] == "x" * 700_000
    assert report.figures["max_event_bytes"] > 1_400_000
    assert {f.code for f in report.findings} == {"legacy-untagged-property", "legacy-tag-renamed"}
    with EventStore(target, create=False) as s:
        assert [e.position for e in s.read(Query([QueryItem(properties={"i": "2"})]))] == [1]
        assert [e.position for e in s.read(Query([QueryItem(properties={"blob": "x" * 700_000})]))] == [7]
    _clean_after(target)


def test_hostile_names_never_write_outside_the_target(legacy_writer: Callable[[str], LegacyWriter],
                                                      tmp_path: Path) -> None:
    hostile = ["../../x", "../../../../x", "/etc/passwd", "..", ".", "a/../../b", "~x", "%2F", "\0"]
    with legacy_writer("legacy") as w:
        for value in hostile:
            w.append("../../T", {"code": value, "../../k": value})
    _append_log(w.root, b"../../etc/passwd\n")
    target = str(tmp_path / "new")
    before = tree_digest(str(tmp_path))
    migrate(w.root, target)
    after = tree_digest(str(tmp_path))
    assert {k: v for k, v in after.items() if not k.startswith("new")} == before
    with EventStore(target, create=False) as s:
        for pos, value in enumerate(hostile, 1):
            got = [e.position for e in s.read(Query([QueryItem(types=["../../T"], properties={"code": value})]))]
            assert got == [pos]
    for dirpath, _dirs, files in os.walk(target):
        for name in files:
            assert os.path.realpath(os.path.join(dirpath, name)).startswith(os.path.realpath(target) + os.sep)
    _clean_after(target)


_keys = st.text(alphabet=string.ascii_letters + "._-/ é:", min_size=0, max_size=8)
_ints = st.integers(-(2**63), 2**63 - 1)  # what format 2 holds; beyond is test_event_damage's placeholder
_values = st.one_of(
    st.text(max_size=12), _ints, st.booleans(), st.none(), st.floats(allow_nan=False, allow_infinity=False),
    st.lists(_ints, max_size=2), st.dictionaries(st.text(max_size=3), _ints, max_size=2),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["A", "b/c", "..", "Ü"]), st.dictionaries(_keys, _values, max_size=4)),
                min_size=1, max_size=6))
def test_any_legacy_data_round_trips(tmp_path: Path, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Whatever the data, each event keeps position, id, type and data, its tags follow the
    property rule, each scalar property reads it back, and nothing is written outside the target."""
    base = tempfile.mkdtemp(dir=tmp_path)
    with LegacyWriter(os.path.join(base, "legacy")) as w:
        ids = [w.append(t, d) for t, d in events]
    before = tree_digest(base)
    target = os.path.join(base, "new")
    migrate(w.root, target, durable=False)
    assert {k: v for k, v in tree_digest(base).items() if not k.startswith("new")} == before
    assert committed_lines(w.root) == ids
    with EventStore(target, create=False) as s:
        got = list(s.read())
        assert [e.id for e in got] == ids
        for e, (type_, data) in zip(got, events, strict=True):
            assert e.type == type_ and json.dumps(e.data, sort_keys=True) == json.dumps(data, sort_keys=True)
            assert list(e.tags) == [property_tag(k, v) for k, v in data.items() if scalar(v)]
            for k, v in data.items():
                if scalar(v):
                    hits = [x.position for x in s.read(Query([QueryItem(types=[type_], properties={k: v})]))]
                    assert e.position in hits
