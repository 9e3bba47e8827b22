"""First checks of the engine: the format-3 layout, records in the first segment, a round trip."""

from __future__ import annotations

import os
from pathlib import Path

from engine_helpers import synced_state

from kroniko_ops import Event, EventStore, StoreNotFound
from kroniko_ops.format import record, segment
from kroniko_ops.layout import FORMAT_LINE


def test_new_store_lays_out_format_3(store_path: str) -> None:
    with EventStore(store_path) as s:
        assert s.head() == 0 and list(s.read()) == []
    lines = Path(store_path, "FORMAT").read_text().splitlines()
    assert lines[0] == FORMAT_LINE == "kroniko-ops format 3"
    assert "max_event_bytes=1048576" in lines and any(ln.startswith("segment_bytes=") for ln in lines)
    for d in ("log", "index", "packs", "locks", "lost-found"):
        assert os.path.isdir(os.path.join(store_path, d))
    assert os.listdir(os.path.join(store_path, "log")) == [segment.seg_name(1)]


def test_records_are_lines_chained_with_a_commit_mark_per_batch(store_path: str) -> None:
    with EventStore(store_path) as s:
        assert s.append([Event("A", 1, ["t"], None, "a"), Event("B", 2, [], None, "b")]) == 2
        assert s.append(Event("C", 3, [], {"m": 1}, "c")) == 3
    raw = Path(store_path, "log", segment.seg_name(1)).read_bytes().rstrip(b"\0")
    recs = list(record.iter_records(raw))
    assert [(r.position, r.event_id, r.commit) for r in recs] == [(1, "a", False), (2, "b", True), (3, "c", True)]
    assert raw.count(b"\n") == 3 and all(record.body_hash_ok(r) for r in recs)
    assert recs[0].chain == record.chain_of(record.GENESIS, recs[0].event_hash)
    assert recs[2].chain == record.chain_of(recs[1].chain, recs[2].event_hash)
    # Each line is the 228-byte header and the event's JSON (cut -c229- | jq works).
    assert raw.split(b"\n")[2][record.HEADER:] == b'{"data":3,"id":"c","metadata":{"m":1},"tags":[],"type":"C"}'
    state = synced_state(store_path)
    assert state is not None and (state.position, state.end, state.chain) == (3, len(raw), recs[2].chain)


def test_round_trip_through_a_new_handle(store_path: str) -> None:
    sent = [Event("A", {"x": [1, 2.5, None, True]}, ["t:1", "t:2"], {"by": "me"}, "id-1")]
    with EventStore(store_path) as s:
        s.append(sent)
    with EventStore(store_path, create=False) as s:
        assert [e.event for e in s.read()] == sent


def test_create_false_refuses_a_missing_store(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(StoreNotFound):
        EventStore(str(tmp_path / "absent"), create=False)
    assert not (tmp_path / "absent").exists()
