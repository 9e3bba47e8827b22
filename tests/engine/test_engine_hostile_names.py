"""Hostile but legal type and tag names round-trip, and create nothing outside ``index/``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine_helpers import BUCKET_RE, MAX_LITERAL, actual_index, all_events, documented_name, expected_index, snapshot

from kroniko_ops import Event, EventStore, InvalidEvent, Query, QueryItem
from kroniko_ops.index import encode_name

HOSTILE = [
    "../../etc/passwd", "/etc/passwd", "a/b", "/", "//", "..", ".", "...", "", " ", "a b", "\t", "a\nb",
    "x" * 10_000, "x" * MAX_LITERAL, "x" * (MAX_LITERAL + 1), "%" * 60, "%" * 61,
    "🎉", "👩‍👩‍👧", "שלום", "\u202eevil.exe", "e\u0301", "Å", "\ufeff", "\u0000", "nul\x00byte", "\x01\x7f",
    "CON", "NUL", "con.txt", "AUX", "COM1", "LPT1", "PRN",
    ".hidden", "a.pos", "x.name", "CHECKPOINT", "../CHECKPOINT", "ids", "types", "tags",
    "~", "~" + "a" * 64, "=", "%", "%2E", "%2e", "%%", "a%00b", "\\", "..\\..\\x", "C:\\x", "-", "--help",
    "cart:1", ":", "a:b:c", "$HOME", "`id`", "*", "?", "'\"",
]


def _as_type(name: str) -> str:
    """The name used as a type: ``""`` is a legal tag but never a legal type (refused elsewhere)."""
    return name or "EmptyTagOnly"


def _ids(names: list[str]) -> list[str]:
    return [repr(n[:20]) + (f"..({len(n)})" if len(n) > 20 else "") for n in names]


@pytest.fixture
def seeded(store: EventStore) -> EventStore:
    """A store with one plain event, so the lock file and index folders already exist."""
    store.append(Event("Plain", 0, ["plain"]))
    return store


def _check_created_paths(store: EventStore, parent: str, before: dict[str, bytes | None], names: set[str]) -> None:
    """Every new path is inside the store, under ``index/`` or an event file, and every index
    file name is the documented encoding of a name that was written."""
    store_rel = os.path.relpath(store.path, parent)
    after = snapshot(parent)
    added = set(after) - set(before)
    events_dir = os.path.join(store_rel, "events")
    index_dir = os.path.join(store_rel, "index")
    for path in added:
        assert path.startswith(index_dir + os.sep) or os.path.dirname(path) == events_dir, path
    allowed = {documented_name(n) for n in names | {"Plain", "plain"}}
    index_root = os.path.join(parent, index_dir)
    for dirpath, _dirs, files in os.walk(index_root):
        rel = os.path.relpath(dirpath, index_root)
        assert rel in (".", "types", "tags", "ids"), f"unexpected folder index/{rel}"
        for name in files:
            assert "\x00" not in name and name not in (".", "..")
            if rel == ".":
                assert name == "CHECKPOINT"
            elif rel == "ids":
                assert BUCKET_RE.match(name), name
            else:
                stem, suffix = os.path.splitext(name)
                assert suffix in (".pos", ".name"), name
                assert stem in allowed, f"index/{rel}/{name} is not the encoding of a written name"
                assert suffix == ".pos" or stem.startswith("~")
                assert len(name) <= MAX_LITERAL + 5


@pytest.mark.parametrize("name", HOSTILE, ids=_ids(HOSTILE))
def test_hostile_name_round_trips_as_type_and_tag(seeded: EventStore, tmp_path: Path, name: str) -> None:
    before = snapshot(str(tmp_path))
    type_ = _as_type(name)
    sent = [Event(type_, {"n": name}, [name], None, "hostile-1"),
            Event("Other", {"n": 2}, [name, "plain"], None, "hostile-2")]
    assert seeded.append(sent) == 3
    by_type = list(seeded.read(Query([QueryItem(types=[type_])])))
    by_tag = list(seeded.read(Query([QueryItem(tags=[name])])))
    assert [e.event for e in by_type] == sent[:1]
    assert [e.event for e in by_tag] == sent
    assert [e.position for e in seeded.read(Query([QueryItem(types=[type_], tags=[name])]))] == [2]
    assert [e.position for e in seeded.read(Query([QueryItem(tags=[name, "plain"])]))] == [3]
    _check_created_paths(seeded, str(tmp_path), before, {name, type_, "Other"})
    # The index holds exactly what the format says, under the documented names.
    assert actual_index(seeded.path) == expected_index(all_events(seeded))
    if documented_name(name).startswith("~"):
        stem = documented_name(name)
        for kind in ("types", "tags") if name else ("tags",):
            raw = Path(seeded.path, "index", kind, stem + ".name").read_bytes()
            assert raw.decode("utf-8") == name


def test_all_hostile_names_in_one_store(tmp_path: Path) -> None:
    assert len(set(HOSTILE)) == len(HOSTILE)
    parent = tmp_path / "parent"
    parent.mkdir()
    before = snapshot(str(tmp_path))
    with EventStore(str(parent / "store"), durable=False) as store:
        store.append(Event("Plain", 0, ["plain"]))
        mid = snapshot(str(tmp_path))
        store.append([Event(_as_type(n), i, [n, f"#{i}"]) for i, n in enumerate(HOSTILE)])
        store.append(Event("Last", 0, HOSTILE))
        names = {*HOSTILE, "EmptyTagOnly", "Last", *(f"#{i}" for i in range(len(HOSTILE)))}
        _check_created_paths(store, str(tmp_path), mid, names)
        for i, n in enumerate(HOSTILE):
            assert [e.data for e in store.read(Query([QueryItem(types=[_as_type(n)])]))] == [i], repr(n)
            assert [e.position for e in store.read(Query([QueryItem(tags=[n])]))] == [i + 2, len(HOSTILE) + 2]
        assert actual_index(store.path) == expected_index(all_events(store))
    added = set(snapshot(str(tmp_path))) - set(before)
    assert all(p.startswith(os.path.join("parent", "store")) for p in added)


def test_encoding_matches_the_documented_examples() -> None:
    assert encode_name("cart:7") == "cart:7"
    # By the rule ('.' kept except as the first character); the whole name is one path component
    # since '/' is encoded. (docs/FORMAT.md's example shows the second '.' encoded too: a doc slip.)
    assert encode_name("../../etc/passwd") == "%2E.%2F..%2Fetc%2Fpasswd"
    assert encode_name("..") == "%2E."
    assert encode_name(".") == "%2E"
    assert encode_name("") == "="
    assert encode_name("a/b") == "a%2Fb"
    assert encode_name("x" * MAX_LITERAL) == "x" * MAX_LITERAL
    assert encode_name("x" * (MAX_LITERAL + 1)).startswith("~")


def test_lone_surrogates_are_refused_in_events_and_harmless_in_queries(seeded: EventStore, tmp_path: Path) -> None:
    # orjson cannot write a lone surrogate (it is not valid UTF-8): such a name can never be stored.
    before = snapshot(str(tmp_path))
    for event in (Event("A", 1, ["\ud800"]), Event("\udfff", 1), Event("A", 1, [], {"k": "\ud800"})):
        with pytest.raises(InvalidEvent):
            seeded.append(event)
    assert list(seeded.read(Query([QueryItem(tags=["\ud800"])]))) == []
    assert list(seeded.read(Query([QueryItem(types=["\udfff"], tags=["plain"])]))) == []
    assert snapshot(str(tmp_path)) == before
