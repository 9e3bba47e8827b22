"""Bad input is refused with a clear InvalidEvent (InvalidArgument for paths) and writes nothing;
input that merely looks hostile to the record format (newlines, NUL, a record header inside the
data, the biggest event at a segment boundary) round-trips exactly."""

from __future__ import annotations

import datetime
import decimal
import math
import multiprocessing
import os
import queue
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from engine_helpers import NO_CHANGE, active_path, segments, snapshot, tree_diff
from hypothesis import given, settings
from hypothesis import strategies as st

from kroniko_ops import (
    AppendCondition,
    Event,
    EventStore,
    InvalidArgument,
    InvalidEvent,
    KronikoError,
    Query,
    QueryItem,
)
from kroniko_ops.codec import encode_event
from kroniko_ops.format import record, segment

BAD_EVENTS: dict[str, Any] = {
    "empty type": Event("", 1),
    "None type": Event(None, 1),  # type: ignore[arg-type]
    "int type": Event(7, 1),  # type: ignore[arg-type]
    "bytes type": Event(b"A", 1),  # type: ignore[arg-type]
    "int tag": Event("A", 1, (1,)),  # type: ignore[arg-type]
    "None tag": Event("A", 1, ("ok", None)),  # type: ignore[arg-type]
    "bytes tag": Event("A", 1, (b"t",)),  # type: ignore[arg-type]
    "tags as a string": Event("A", 1, "cart:1"),
    "tags as bytes": Event("A", 1, b"cart:1"),  # type: ignore[arg-type]
    "tags as a set": Event("A", 1, {"cart:1"}),  # type: ignore[arg-type]
    "tags as a dict": Event("A", 1, {"cart": "1"}),  # type: ignore[arg-type]
    "set data": Event("A", {1, 2}),
    "frozenset data": Event("A", frozenset([1])),
    "bytes data": Event("A", b"raw"),
    "bytearray data": Event("A", bytearray(b"raw")),
    "tuple data": Event("A", (1, 2)),
    "tuple nested in data": Event("A", {"a": [1, (2, 3)]}),
    "NaN data": Event("A", float("nan")),
    "NaN nested in data": Event("A", {"x": [1.0, float("nan")]}),
    "Infinity data": Event("A", float("inf")),
    "-Infinity data": Event("A", {"x": float("-inf")}),
    "int 2**64": Event("A", 2**64),
    "int -2**63 - 1": Event("A", -(2**63) - 1),
    "huge int nested": Event("A", {"a": {"b": [10**30]}}),
    "datetime data": Event("A", datetime.datetime(2024, 1, 1)),
    "date data": Event("A", {"when": datetime.date(2024, 1, 1)}),
    "decimal data": Event("A", decimal.Decimal("1.5")),
    "object data": Event("A", object()),
    "int dict key": Event("A", {1: "x"}),
    "tuple dict key": Event("A", {("a",): 1}),
    "None dict key": Event("A", {"ok": {None: 1}}),
    "lone surrogate in data": Event("A", "\ud800"),
    "lone surrogate in a key": Event("A", {"\udfff": 1}),
    "metadata a list": Event("A", 1, (), [1]),  # type: ignore[arg-type]
    "metadata a string": Event("A", 1, (), "meta"),  # type: ignore[arg-type]
    "metadata with int key": Event("A", 1, (), {1: "x"}),  # type: ignore[dict-item]
    "metadata with NaN": Event("A", 1, (), {"x": float("nan")}),
    "metadata with a set": Event("A", 1, (), {"x": {1}}),
    "id with a space": Event("A", 1, (), None, "a b"),
    "id with a slash": Event("A", 1, (), None, "a/b"),
    "id of 65 characters": Event("A", 1, (), None, "x" * 65),
    "empty id": Event("A", 1, (), None, ""),
    "id with NUL": Event("A", 1, (), None, "a\x00b"),
    "non-ASCII id": Event("A", 1, (), None, "é"),
    "int id": Event("A", 1, (), None, 5),  # type: ignore[arg-type]
    "not an Event: dict": {"type": "A"},
    "not an Event: string": "A",
}


@pytest.fixture
def seeded(store: EventStore) -> EventStore:
    """A store that already holds a few events (so the lock file and index exist)."""
    store.append([Event("Seed", {"n": 1}, ["s:1"], None, "seed-1"), Event("Seed", {"n": 2}, ["s:2"])])
    return store


def _refused(store: EventStore, tmp_path: Path, call: Any, exc: type[KronikoError] = InvalidEvent) -> str:
    """Run ``call``; check it raised ``exc`` and left every file under ``tmp_path`` as it was."""
    head = store.head()
    before = snapshot(str(tmp_path))
    with pytest.raises(exc) as info:
        call()
    assert tree_diff(before, snapshot(str(tmp_path))) == NO_CHANGE
    assert store.head() == head
    return str(info.value)


@pytest.mark.parametrize("name", list(BAD_EVENTS))
def test_bad_event_alone_is_refused_and_nothing_written(seeded: EventStore, tmp_path: Path, name: str) -> None:
    message = _refused(seeded, tmp_path, lambda: seeded.append(BAD_EVENTS[name]))
    assert message  # a reason is given


@pytest.mark.parametrize("name", ["empty type", "tags as a string", "set data", "NaN data", "int 2**64",
                                  "datetime data", "int dict key", "metadata a list", "id with a slash"])
def test_bad_event_spoils_its_whole_batch(seeded: EventStore, tmp_path: Path, name: str) -> None:
    batch = [Event("Good", 1, ["g"]), BAD_EVENTS[name], Event("Good", 2, ["g"])]
    _refused(seeded, tmp_path, lambda: seeded.append(batch))
    assert list(seeded.read(Query([QueryItem(tags=["g"])]))) == []


def test_messages_name_what_is_wrong(seeded: EventStore, tmp_path: Path) -> None:
    def msg(event: Any) -> str:
        return _refused(seeded, tmp_path, lambda: seeded.append(event)).lower()

    assert "type" in msg(BAD_EVENTS["empty type"])
    assert "tag" in msg(BAD_EVENTS["tags as a string"])
    assert "nan" in msg(BAD_EVENTS["NaN data"])
    assert "set" in msg(BAD_EVENTS["set data"])
    assert "metadata" in msg(BAD_EVENTS["metadata a list"])
    assert "a/b" in msg(BAD_EVENTS["id with a slash"])
    assert "key" in msg(BAD_EVENTS["int dict key"])


@pytest.mark.parametrize("batch", [[], ()], ids=["list", "tuple"])
def test_empty_batch_is_refused(seeded: EventStore, tmp_path: Path, batch: Any) -> None:
    assert "empty" in _refused(seeded, tmp_path, lambda: seeded.append(batch))


def test_duplicate_ids_in_a_batch_are_refused(seeded: EventStore, tmp_path: Path) -> None:
    batch = [Event("A", 1, [], None, "twin"), Event("B", 2, [], None, "other"), Event("C", 3, [], None, "twin")]
    _refused(seeded, tmp_path, lambda: seeded.append(batch))


def test_reused_committed_id_is_refused_and_nothing_written(seeded: EventStore, tmp_path: Path) -> None:
    # The reuse is found under the lock, after the batch was encoded: nothing may reach the log.
    batch = [Event("New", 1, ["n"]), Event("New", 2, [], None, "seed-1")]
    assert "seed-1" in _refused(seeded, tmp_path, lambda: seeded.append(batch))


def test_bad_condition_is_refused(seeded: EventStore, tmp_path: Path) -> None:
    _refused(seeded, tmp_path, lambda: seeded.append(Event("A", 1), "not a condition"), InvalidArgument)
    _refused(seeded, tmp_path, lambda: seeded.append(Event("A", 1), Query.all()), InvalidArgument)
    with pytest.raises(InvalidArgument):
        AppendCondition(Query.all(), after=-1)
    with pytest.raises(InvalidArgument):
        QueryItem(tags="cart:1")


def _sized(limit: int, extra: int) -> Event:
    """An event whose stored form is exactly ``limit + extra`` bytes."""
    base = len(encode_event(Event("Big", "", (), None, "big-1"))[1])
    return Event("Big", "x" * (limit + extra - base), (), None, "big-1")


def test_default_size_limit_is_one_mebibyte(tmp_path: Path) -> None:
    store = EventStore(str(tmp_path / "store"), durable=False)
    store.append(Event("Seed", 1))
    message = _refused(store, tmp_path, lambda: store.append(_sized(1024 * 1024, 1)))
    assert str(1024 * 1024) in message
    assert store.append(_sized(1024 * 1024, 0)) == 2
    assert len(list(store.read())[-1].data) > 1_000_000


def test_size_limit_is_configurable_and_kept_in_format(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    with EventStore(path, durable=False, max_event_bytes=300) as store:
        store.append(Event("Seed", 1))
        _refused(store, tmp_path, lambda: store.append(_sized(300, 1)))
        assert store.append(_sized(300, 0)) == 2
    assert "max_event_bytes=300" in Path(path, "FORMAT").read_text()
    # Reopened without the option: the limit fixed at creation still holds.
    with EventStore(path, durable=False) as store:
        _refused(store, tmp_path, lambda: store.append(Event("Big", "y" * 400)))


def test_size_limit_counts_tags_and_metadata(tmp_path: Path) -> None:
    with EventStore(str(tmp_path / "store"), durable=False, max_event_bytes=300) as store:
        store.append(Event("Seed", 1))
        _refused(store, tmp_path, lambda: store.append(Event("A", 1, ["t" * 300])))
        _refused(store, tmp_path, lambda: store.append(Event("A", 1, [], {"m": "x" * 300})))


def test_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_bytes(b"not a store")
    before = snapshot(str(tmp_path))
    with pytest.raises(InvalidArgument) as info:
        EventStore(str(target))
    assert "a-file" in str(info.value)
    assert snapshot(str(tmp_path)) == before


def test_non_empty_folder_that_is_no_store_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    before = snapshot(str(tmp_path))
    with pytest.raises(InvalidArgument):
        EventStore(str(folder))
    assert snapshot(str(tmp_path)) == before
    assert sorted(os.listdir(folder)) == ["notes.txt"]


@pytest.mark.parametrize("kwargs", [{"start": -1}, {"limit": -1}, {"start": "1"}, {"limit": 1.5},
                                    {"start": True}])
def test_bad_read_options_are_refused(seeded: EventStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        list(seeded.read(**kwargs))


def test_bad_query_is_refused(seeded: EventStore) -> None:
    with pytest.raises(InvalidArgument):
        seeded.read("cart:1")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Query(["cart:1"])  # type: ignore[list-item]


def test_idempotent_retry_writes_nothing(seeded: EventStore, tmp_path: Path) -> None:
    batch = [Event("R", 1, ["r"], None, "retry-a"), Event("R", 2, ["r"], None, "retry-b")]
    assert seeded.append(batch) == 4
    before = snapshot(str(tmp_path))
    assert seeded.append(batch) == 4
    assert tree_diff(before, snapshot(str(tmp_path))) == NO_CHANGE


# -- for all values: valid JSON round-trips exactly, anything else is refused and writes nothing --

_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=True, allow_infinity=True)
            | st.text(st.characters(blacklist_categories=()), max_size=5)  # lone surrogates too
            | st.binary(max_size=3) | st.dates())
_values = st.recursive(
    _scalars,
    lambda inner: (st.lists(inner, max_size=3) | st.tuples(inner)
                   | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), inner, max_size=3)
                   | st.frozensets(st.integers(0, 3), max_size=2)),
    max_leaves=8,
)


def _json_ok(value: Any) -> bool:
    """The documented rule (docs/FORMAT.md), written out independently of the codec."""
    t = type(value)
    if value is None or t is bool:
        return True
    if t is int:
        return -(2**63) <= value < 2**64
    if t is float:
        return math.isfinite(value)
    if t is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if t is list:
        return all(_json_ok(v) for v in value)
    if t is dict:
        return all(type(k) is str and _json_ok(k) and _json_ok(v) for k, v in value.items())
    return False


@settings(max_examples=150, deadline=None)
@given(data=_values, metadata=st.none() | st.dictionaries(st.text(max_size=3), _values, max_size=2))
def test_any_value_round_trips_or_is_refused_without_writing(data: Any, metadata: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp, EventStore(os.path.join(tmp, "s"), durable=False) as store:
        store.append(Event("Seed", 0))
        before = snapshot(tmp)
        event = Event("V", data, ["v"], metadata, "v-1")
        if _json_ok(data) and (metadata is None or _json_ok(metadata)):
            assert store.append(event) == 2
            (got,) = list(store.read(Query([QueryItem(tags=["v"])])))
            assert got.event == event
            # Keys come back sorted (canonical JSON); values exactly, telling 1 from 1.0, -0.0 from 0.0.
            sort = orjson.OPT_SORT_KEYS
            assert orjson.dumps(got.data, option=sort) == orjson.dumps(data, option=sort)
        else:
            with pytest.raises(InvalidEvent):
                store.append(event)
            assert snapshot(tmp) == before


# -- attacks on the record format: framing characters and lookalikes are only data ----------

HEADER_LOOKALIKE = record.encode(1, record.GENESIS, [("evil", b"{}")])[0][:record.HEADER].decode()
LOOKALIKES: dict[str, Any] = {
    "newline": "a\nb\n\n",
    "carriage return": "a\r\nb\r",
    "NUL": "a\x00b\x00",
    "every control character": "".join(map(chr, range(32))) + "\x7f",
    "a record header": HEADER_LOOKALIKE,
    "a whole record line": HEADER_LOOKALIKE + '{}\n' + HEADER_LOOKALIKE,
    "a commit mark and padding": " C 00000002 " + " " * 300,
    "unicode line separators": "\u2028\u2029\x85",
    "non-ASCII": "café ☕ 🎉 שלום",
}


def _check_log_is_whole_records(path: str) -> None:
    """Every segment is whole records, one per line, chained from the first."""
    chain, expect = record.GENESIS, 1
    for first in segments(path):
        data = Path(path, "log", segment.seg_name(first)).read_bytes().rstrip(b"\0")
        for rec in record.iter_records(data):
            assert rec.position == expect and record.body_hash_ok(rec)
            assert rec.chain == record.chain_of(chain, rec.event_hash)
            chain, expect = rec.chain, expect + 1
        assert data.count(b"\n") == len(list(record.iter_records(data)))


@pytest.mark.parametrize("name", list(LOOKALIKES))
def test_framing_lookalikes_round_trip(store: EventStore, name: str) -> None:
    text = LOOKALIKES[name]
    sent = [Event(f"T{text}", {"s": text, text: [text]}, [text, f"tag:{text}"], {"m": text}, "x" * 64),
            Event("Plain", text, [text], None, "y")]
    assert store.append(sent) == 2
    with EventStore(store.path, durable=store.durable) as fresh:
        assert [e.event for e in fresh.read()] == sent
        assert [e.position for e in fresh.read(Query([QueryItem(tags=[text])]))] == [1, 2]
        assert [e.position for e in fresh.read(Query([QueryItem(types=[f"T{text}"])]))] == [1]
    _check_log_is_whole_records(store.path)


def test_the_biggest_event_at_a_segment_boundary(tmp_path: Path) -> None:
    # The default limit is 1 MiB; with 4 KiB segments the biggest event always overflows one.
    path = str(tmp_path / "store")
    with EventStore(path, durable=False, segment_bytes=4096) as store:
        store.append(Event("Small", {"pad": "s" * 3000}, ["t"], None, "small-1"))
        biggest = _sized(1024 * 1024, 0)
        assert store.append(biggest) == 2
        assert store.append(Event("Small", 2, ["t"], None, "small-2")) == 3
        assert segments(path) == [1, 2, 3], "the big event has a segment of its own"
        assert len(Path(active_path(path)).read_bytes().rstrip(b"\0")) < 4096
        got = [e.event for e in store.read()]
        assert got[1] == biggest and [e.id for e in store.read(Query([QueryItem(tags=["t"])]))] == [
            "small-1", "small-2"]
        _refused(store, tmp_path, lambda: store.append(_sized(1024 * 1024, 1)))
    with EventStore(path, durable=False) as again:
        assert [e.event for e in again.read()][1] == biggest
    _check_log_is_whole_records(path)


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_deeply_nested_data_is_refused_not_a_recursion_error(seeded: EventStore, tmp_path: Path) -> None:
    message = _refused(seeded, tmp_path, lambda: seeded.append(Event("Deep", _nested(10_000))))
    assert "JSON" in message or "deep" in message.lower() or "recursion" in message.lower()
    _refused(seeded, tmp_path, lambda: seeded.append(Event("Deep", 1, [], {"m": _nested(10_000)})))


def test_nesting_the_codec_accepts_reads_back(seeded: EventStore) -> None:
    # Whatever depth is accepted must come back (orjson reads what it writes).
    for depth in (50, 200, 254):
        event = Event("Deep", _nested(depth), ["deep"], None, f"deep-{depth}")
        try:
            pos = seeded.append(event)
        except InvalidEvent:
            continue
        assert [e.event for e in seeded.read(start=pos, limit=1)] == [event]


@pytest.mark.parametrize("event", [
    Event("A", float("nan")), Event("A", {"n": 10**20}), Event("A", 1, [7]), Event("A", 1, ["ok", b"t"]),  # type: ignore[list-item]
    Event("A", 1, [], None, "bad id"), Event("A", 1, [], None, "x" * 65), Event("A", 1, [], None, "../x"),
], ids=["NaN", "huge int", "int tag", "bytes tag", "id with a space", "id of 65", "id with a slash"])
def test_invalid_input_leaves_the_store_byte_identical(store: EventStore, tmp_path: Path, event: Event) -> None:
    store.append(Event("Seed", 0))
    _refused(store, tmp_path, lambda: store.append([Event("Good", 1), event]))


def _append_in_child(path: str, data: Any, metadata: Any, results: Any) -> None:
    with EventStore(path, durable=False) as store:
        try:
            store.append(Event("Cyclic", data, [], metadata))
            results.put("accepted")
        except InvalidEvent as exc:
            results.put(f"InvalidEvent: {exc}")


def _cycles() -> dict[str, tuple[Any, Any]]:
    d: dict[str, Any] = {}
    d["a"] = d
    lst: list[Any] = [1]
    lst.append({"inner": lst})
    m: dict[str, Any] = {"x": [1, 2]}
    m["x"].append(m)
    return {"dict in itself": (d, None), "list through a dict": (lst, None), "metadata": (1, m)}


@pytest.mark.parametrize("name", list(_cycles()))
def test_a_self_referential_event_is_refused_not_a_hang(tmp_path: Path, name: str) -> None:
    # Run in a child: before the fix the walk that names the bad value followed the cycle forever.
    path = str(tmp_path / "store")
    EventStore(path, durable=False).close()
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    data, metadata = _cycles()[name]
    proc = ctx.Process(target=_append_in_child, args=(path, data, metadata, results), daemon=True)
    proc.start()
    try:
        outcome = results.get(timeout=60)
    except queue.Empty:
        outcome = "hung"
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(10)
    assert outcome.startswith("InvalidEvent") and "contains itself" in outcome, outcome
    with EventStore(path, durable=False) as store:
        assert store.head() == 0


def test_a_value_shared_twice_is_no_cycle(seeded: EventStore) -> None:
    shared = {"k": [1, 2, 3]}
    pos = seeded.append(Event("Shared", [shared, shared, {"again": shared}]))
    assert [e.data for e in seeded.read(start=pos, limit=1)] == [[shared, shared, {"again": shared}]]
