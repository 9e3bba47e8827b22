"""Hostile but legal type and tag names round-trip through the SQLite index, match only
themselves, and never name a file: appending creates nothing outside the store's own folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from engine_helpers import snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from kroniko_ops import Event, EventStore, InvalidEvent, Query, QueryItem

HOSTILE = [
    "../../etc/passwd", "/etc/passwd", "a/b", "/", "//", "..", ".", "...", "", " ", "a b", "\t", "a\nb",
    "x" * 10_000, "y" * 180, "%" * 61, "🎉", "👩‍👩‍👧", "שלום", "\u202eevil.exe", "e\u0301", "é", "Å", "\ufeff",
    "\u0000", "nul\x00byte", "\x01\x7f", "CON", "NUL", "con.txt", "AUX", "COM1", ".hidden", "a.pos", "index",
    "log", "FORMAT", "000000000001.seg", "000001.sqlite3", "~", "=", "%", "%2E", "%%", "\\", "..\\..\\x",
    "C:\\x", "-", "--help", "cart:1", ":", "a:b:c", "$HOME", "`id`", "*", "?", "'\"", "' OR 1=1 --",
    "Robert'); DROP TABLE postings;--", "%_", "_", "[a-z]", "GLOB*", "\\x00",
]


def _as_type(name: str) -> str:
    """``""`` is a legal tag but never a legal type (refused elsewhere)."""
    return name or "EmptyTagOnly"


def _ids(names: list[str]) -> list[str]:
    return [repr(n[:20]) + (f"..({len(n)})" if len(n) > 20 else "") for n in names]


@pytest.fixture
def seeded(store: EventStore) -> EventStore:
    """A store with one plain event, so that every folder and the index exist."""
    store.append(Event("Plain", 0, ["plain"]))
    return store


def _only_store_files_changed(store: EventStore, parent: str, before: dict[str, bytes | None]) -> None:
    """Every path added is inside the store's own folders, under a name the layout gives."""
    rel = os.path.relpath(store.path, parent)
    for path in set(snapshot(parent)) - set(before):
        parts = Path(path).parts
        assert parts[: len(Path(rel).parts)] == Path(rel).parts, path
        inner = parts[len(Path(rel).parts):]
        assert inner[0] in ("index", "log", "lost-found", "locks"), path
        assert len(inner) == 2 and len(inner[1]) < 40, path  # no folder or long name made from a name


@pytest.mark.parametrize("name", HOSTILE, ids=_ids(HOSTILE))
def test_hostile_name_round_trips_as_type_and_tag(seeded: EventStore, tmp_path: Path, name: str) -> None:
    before = snapshot(str(tmp_path))
    type_ = _as_type(name)
    sent = [Event(type_, {"n": name}, [name], None, "hostile-1"),
            Event("Other", {"n": 2}, [name, "plain"], None, "hostile-2")]
    assert seeded.append(sent) == 3
    with seeded.locked():
        seeded.flush_index()  # answer from the SQLite index, not from the unindexed tail
    assert seeded.index.checkpoint()[0] == 3
    for s in (seeded, EventStore(seeded.path, durable=seeded.durable)):
        assert [e.event for e in s.read(Query([QueryItem(types=[type_])]))] == sent[:1]
        assert [e.event for e in s.read(Query([QueryItem(tags=[name])]))] == sent
        assert [e.position for e in s.read(Query([QueryItem(types=[type_], tags=[name])]))] == [2]
        assert [e.position for e in s.read(Query([QueryItem(tags=[name, "plain"])]))] == [3]
        assert [e.position for e in s.read(Query([QueryItem(tags=[name])]), backwards=True)] == [3, 2]
        if s is not seeded:
            s.close()
    _only_store_files_changed(seeded, str(tmp_path), before)


def test_all_hostile_names_in_one_store_match_only_themselves(tmp_path: Path) -> None:
    assert len(set(HOSTILE)) == len(HOSTILE)
    parent = tmp_path / "parent"
    parent.mkdir()
    with EventStore(str(parent / "store"), durable=False) as store:
        store.append(Event("Plain", 0, ["plain"]))
        before = snapshot(str(tmp_path))
        store.append([Event(_as_type(n), i, [n, f"#{i}"]) for i, n in enumerate(HOSTILE)])
        store.append(Event("Last", 0, HOSTILE))
        with store.locked():
            store.flush_index()
        _only_store_files_changed(store, str(tmp_path), before)
        for i, n in enumerate(HOSTILE):
            got = [e.data for e in store.read(Query([QueryItem(types=[_as_type(n)])]))]
            assert got == [i], repr(n[:30])
            assert [e.position for e in store.read(Query([QueryItem(tags=[n])]))] == [i + 2, len(HOSTILE) + 2]
        assert store.index.counts()["ids"] == len(HOSTILE) + 2


def test_lone_surrogates_are_refused_in_events_and_harmless_in_queries(seeded: EventStore, tmp_path: Path) -> None:
    # A lone surrogate is not valid UTF-8: such a name can never be stored, only asked for.
    before = snapshot(str(tmp_path))
    for event in (Event("A", 1, ["\ud800"]), Event("\udfff", 1), Event("A", 1, [], {"k": "\ud800"})):
        with pytest.raises(InvalidEvent):
            seeded.append(event)
    assert list(seeded.read(Query([QueryItem(tags=["\ud800"])]))) == []
    assert list(seeded.read(Query([QueryItem(types=["\udfff"], tags=["plain"])]))) == []
    assert snapshot(str(tmp_path)) == before


names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(tags=st.lists(names, min_size=1, max_size=5, unique=True), type_=names.filter(bool), probe=names)
def test_any_name_matches_exactly_itself(tags: list[str], type_: str, probe: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, EventStore(os.path.join(tmp, "s"), durable=False) as store:
        store.append([Event(type_, 1, tags), Event("Other", 2, [])])
        with store.locked():
            store.flush_index()
        assert [e.position for e in store.read(Query([QueryItem(tags=[probe])]))] == ([1] if probe in tags else [])
        assert [e.position for e in store.read(Query([QueryItem(types=[probe])]))] == (
            [1] if probe == type_ else [2] if probe == "Other" else [])
        assert [e.position for e in store.read(Query([QueryItem(types=[type_], tags=tags)]))] == [1]
