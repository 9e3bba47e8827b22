"""migrate on the two Ruby fixtures: positions, ids, types, data, tags, property reads, lost-found,
a clean fsck of the result, and a legacy tree that does not change by a single byte."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest
from legacy_helpers import (
    committed_lines,
    distinct_properties,
    expected_property_positions,
    legacy_doc,
    load_events,
    ruby_index_positions,
    scalar,
    tag_text,
    tree_digest,
)
from migrate_helpers import assert_fsck_clean, temp_leftovers

import kroniko_ops
from kroniko_ops import EventStore, Query, QueryItem, property_tag
from kroniko_ops.errors import DurabilityError, InvalidArgument
from kroniko_ops.fileio import set_fault_injector
from kroniko_ops.legacy.check import check_legacy
from kroniko_ops.legacy.convert import PLACEHOLDER_TYPE
from kroniko_ops.legacy.migrate import migrate
from kroniko_ops.report import Report


@pytest.fixture(params=["legacy_clean", "legacy_crashed"])
def fixture_store(request: pytest.FixtureRequest) -> str:
    """Each Ruby fixture in turn."""
    return request.getfixturevalue(request.param)


def _canon(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def test_every_event_keeps_position_id_type_data_and_gains_tags(fixture_store: str, tmp_path: Path) -> None:
    before = tree_digest(fixture_store)
    target = str(tmp_path / "new")
    report = migrate(fixture_store, target)
    assert tree_digest(fixture_store) == before
    lines = committed_lines(fixture_store)
    with EventStore(target, create=False) as s:
        events = list(s.read())
    assert [e.position for e in events] == list(range(1, len(lines) + 1))
    assert [e.id for e in events] == lines
    placeholders = 0
    for e, eid in zip(events, lines, strict=True):
        doc = legacy_doc(fixture_store, eid)
        if doc is None:
            placeholders += 1
            assert e.type == PLACEHOLDER_TYPE and e.data["legacy_id"] == eid and e.data["position"] == e.position
            continue
        assert e.type == doc["type"]
        assert _canon(e.data) == _canon(doc["data"])
        want = [f"{k}:{tag_text(v)}" for k, v in doc["data"].items() if scalar(v)]
        assert list(e.tags) == want
        assert e.metadata is None
    assert report.figures["placeholders"] == placeholders
    assert report.head == len(lines)
    assert_fsck_clean(target)


def test_clean_fixture_reports_no_damage(legacy_clean: str, tmp_path: Path) -> None:
    report = migrate(legacy_clean, str(tmp_path / "new"))
    assert report.exit_code == 0
    assert {f.code for f in report.findings} == {"legacy-untagged-property", "legacy-tag-renamed"}
    assert report.figures["placeholders"] == report.figures["orphans"] == 0


def test_crashed_fixture_damage_is_handled_and_listed(legacy_crashed: str, tmp_path: Path) -> None:
    target = str(tmp_path / "new")
    report = migrate(legacy_crashed, target)
    assert report.exit_code == 1  # found and handled
    handled = {(f.code, f.position) for f in report.findings if f.severity == "warning"}
    assert handled == {("event-unreadable", 1), ("log-torn-tail", 122), ("dangling-event", None)}
    assert all(f.repaired for f in report.findings if f.severity == "warning")
    with EventStore(target, create=False) as s:
        first = next(iter(s.read(limit=1)))
        assert s.head() == 121
        lost = list(s.read(Query([QueryItem(types=[PLACEHOLDER_TYPE])])))
    assert [e.position for e in lost] == [1]
    assert first.data["reason"] == "event-unreadable"
    assert first.data["raw_text"] == '{"type": "ItemAdded", "da'
    found = {}
    for folder in os.listdir(os.path.join(target, "lost-found")):
        for name in os.listdir(os.path.join(target, "lost-found", folder)):
            with open(os.path.join(target, "lost-found", folder, name), "rb") as f:
                found[name] = f.read()
    assert found["append.log.tail"] == b"17950000"
    orphan = "1795736065.415079-4de2b0fb-9ceb-419e-94dd-ad3e699518d0.json"
    with open(os.path.join(legacy_crashed, "events", orphan), "rb") as f:
        assert found[orphan] == f.read()


def test_property_reads_return_the_legacy_events(fixture_store: str, tmp_path: Path) -> None:
    target = str(tmp_path / "new")
    migrate(fixture_store, target, durable=False)
    props = distinct_properties(fixture_store)
    assert len(props) > 50
    events = load_events(fixture_store)
    with EventStore(target, create=False) as s:
        for key, value in props:
            got = [e.position for e in s.read(Query([QueryItem(properties={key: value})]))]
            assert got == expected_property_positions(events, key, value), (key, value)


def test_property_reads_match_the_ruby_indexes_minus_their_bugs(fixture_store: str, tmp_path: Path) -> None:
    """What the gem's index file for a value lists, the property read returns, except: events its
    index missed (fsck: index-missing-entry) are now found, and values that only shared its file
    (null vs "") and unreadable events (placeholders now; they made the gem's read fail) are not."""
    target = str(tmp_path / "new")
    migrate(fixture_store, target, durable=False)
    report = Report("fsck", fixture_store)
    check_legacy(fixture_store, report, "full")
    missed = {f.position for f in report.findings if f.code == "index-missing-entry"}
    lines = committed_lines(fixture_store)
    compared = 0
    with EventStore(target, create=False) as s:
        for folder in sorted(os.listdir(os.path.join(fixture_store, "index"))):
            if not folder.startswith("data."):
                continue
            key = folder[len("data."):]
            for dirpath, _dirs, files in os.walk(os.path.join(fixture_store, "index", folder)):
                for name in files:
                    rel = os.path.relpath(os.path.join(dirpath, name), os.path.join(fixture_store, "index", folder))
                    ruby = ruby_index_positions(fixture_store, key, rel[: -len(".jsonl")])
                    # an unreadable event made the gem's read fail; it is a placeholder now
                    ruby = {p for p in ruby if legacy_doc(fixture_store, lines[p - 1]) is not None}
                    values = [legacy_doc(fixture_store, lines[p - 1])["data"][key] for p in sorted(ruby)]
                    if not values or not scalar(values[0]):
                        continue  # arrays: no tag (documented)
                    got = {e.position for e in s.read(Query([QueryItem(properties={key: values[0]})]))}
                    shared_only = {p for p, v in zip(sorted(ruby), values, strict=True)
                                   if tag_text(v) != tag_text(values[0])}
                    assert got - ruby <= missed, (key, rel)
                    assert ruby - got == shared_only, (key, rel)
                    compared += 1
    assert compared > 50


def test_crashed_read_finds_the_event_the_ruby_index_missed(legacy_crashed: str, tmp_path: Path) -> None:
    target = str(tmp_path / "new")
    migrate(legacy_crashed, target, durable=False)
    with EventStore(target, create=False) as s:
        got = [e.position for e in s.read(Query([QueryItem(properties={"cart_id": "cart-1"})]))]
    assert 121 in got and 121 not in ruby_index_positions(legacy_crashed, "cart_id", "cart-1")


def test_dry_run_writes_nothing_and_decides_the_same(legacy_crashed: str, tmp_path: Path) -> None:
    before = tree_digest(str(tmp_path))
    target = str(tmp_path / "new")
    dry = migrate(legacy_crashed, target, dry_run=True)
    assert tree_digest(str(tmp_path)) == before
    assert not os.path.exists(target)
    os.mkdir(target)
    migrate(legacy_crashed, target, dry_run=True)
    assert os.listdir(target) == []
    real = migrate(legacy_crashed, target)
    strip = re.compile(r"lost-found/\S+")
    assert [(f.code, f.position, strip.sub("", f.message)) for f in dry.findings] == \
        [(f.code, f.position, strip.sub("", f.message)) for f in real.findings]
    assert dry.exit_code == real.exit_code == 1


def test_non_empty_target_is_refused_with_exit_2(legacy_clean: str, tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    before = tree_digest(str(tmp_path))
    with pytest.raises(InvalidArgument) as exc:
        migrate(legacy_clean, str(target))
    assert exc.value.exit_code == 2 and "not empty" in str(exc.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidArgument):
        migrate(legacy_clean, str(tmp_path / "file"))
    with pytest.raises(InvalidArgument):  # inside the legacy store, which is never written
        migrate(legacy_clean, os.path.join(legacy_clean, "new"))
    assert tree_digest(str(tmp_path)) == {**before, "file": tree_digest(str(tmp_path))["file"]}


def test_what_is_not_a_legacy_store_is_refused(tmp_path: Path, legacy_clean: str) -> None:
    new = str(tmp_path / "v2")
    migrate(legacy_clean, new, durable=False)
    with pytest.raises(InvalidArgument, match="already"):
        migrate(new, str(tmp_path / "again"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(InvalidArgument):
        migrate(str(tmp_path / "plain"), str(tmp_path / "again"))
    with pytest.raises(InvalidArgument):
        migrate(str(tmp_path / "missing"), str(tmp_path / "again"))
    assert not os.path.exists(tmp_path / "again")


def test_public_entry_point(legacy_clean: str, tmp_path: Path) -> None:
    assert kroniko_ops.migrate is migrate
    assert kroniko_ops.migrate(legacy_clean, str(tmp_path / "n"), durable=False).head == 400


@pytest.mark.parametrize("op, where", [
    ("fsync", ".seg"),  # making the new store durable
    ("write", "active segment"),  # appending a batch (a full disk)
    ("rename", "new"),  # publishing it under the target's name
    ("fsync", os.sep),  # the parent folder, after the rename: the store is in place but may not stay
])
def test_a_failed_write_or_fsync_publishes_nothing(legacy_clean: str, tmp_path: Path, op: str, where: str) -> None:
    before = tree_digest(legacy_clean)
    target = str(tmp_path / "new")
    seen: list[str] = []

    def fail(o: str, path: str) -> None:
        if o == op and (path.endswith(where) if where != os.sep else path == str(tmp_path)):
            seen.append(path)
            raise OSError(errno.EIO, "injected", path)

    previous = set_fault_injector(fail)
    try:
        with pytest.raises(DurabilityError) as exc:
            migrate(legacy_clean, target, batch_events=100)
    finally:
        set_fault_injector(previous)
    assert seen and exc.value.exit_code == 8
    assert tree_digest(legacy_clean) == before
    assert temp_leftovers(str(tmp_path)) == []
    if where == os.sep:  # renamed, then the folder's fsync failed: said so, the store itself is whole
        assert "may not survive" in str(exc.value)
        assert_fsck_clean(target)
    else:
        assert not os.path.exists(target) and "Nothing was published" in str(exc.value)


def test_tags_follow_property_tag(legacy_clean: str, tmp_path: Path) -> None:
    target = str(tmp_path / "new")
    migrate(legacy_clean, target, durable=False)
    with EventStore(target, create=False) as s:
        for e in s.read():
            assert sorted(e.tags) == sorted(property_tag(k, v) for k, v in e.data.items() if scalar(v))
