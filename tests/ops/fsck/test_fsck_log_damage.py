"""fsck on damage between files and records: gaps, overlaps, a broken chain, a repeated id, a
damaged or lying synced position; none of it is ever repaired."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fsck_store_helpers import build, pack_first_segment, problems, seg_path, segments, write_after_records

from kroniko_ops import EventStore, fsck, reindex
from kroniko_ops.format import pack as packfmt
from kroniko_ops.format import packwrite
from kroniko_ops.format import record as recfmt
from kroniko_ops.synced import SyncedFile, SyncedState


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = str(tmp_path / "s")
    build(path)
    return path


def _append_raw(path: str, items: list[tuple[str, bytes]]) -> None:
    """Commit records straight into the active segment (as a writer would, minus every check)."""
    with EventStore(path) as s:
        state = s.synced_state()
    data, _sizes, chain = recfmt.encode(state.position + 1, state.chain, items)
    write_after_records(seg_path(path, segments(path)[-1]), data)
    synced = SyncedFile(os.path.join(path, "locks", "synced"))
    synced.advance(state.position + len(items), state.segment, state.end + len(data), chain)
    synced.close()


def _body(eid: str) -> bytes:
    return b'{"data":{},"id":"%s","metadata":null,"tags":[],"type":"T"}' % eid.encode()


def test_a_missing_segment_is_a_gap(store: str) -> None:
    first = segments(store)[1]
    before = fsck(store)
    assert before.exit_code == 0
    for kind in ("seg", "idx"):
        seg_path(store, first, kind).unlink()
    report = fsck(store, quick=True)
    assert "segment-gap" in problems(report)
    assert min(f.position for f in report.findings if f.code == "segment-gap") == first
    assert fsck(store, repair=True).exit_code == 4


def test_a_pack_of_another_history_overlaps(store: str) -> None:
    first = segments(store)[0]
    seg = seg_path(store, first)
    data = seg.read_bytes()
    recs = list(recfmt.iter_records(data))
    other, _sizes, chain = recfmt.encode(first, recfmt.GENESIS, [(r.event_id, r.body.replace(b'"b":0', b'"b":9'))
                                                                  for r in recs])
    packwrite.write_pack(str(Path(store, "packs", packfmt.name_of(first, recs[-1].position))), [(first, other)], chain)
    report = fsck(store, quick=True)
    assert {"segment-overlap", "chain-mismatch"} <= problems(report)


def test_a_superseded_segment_is_only_noted(store: str) -> None:
    first = segments(store)[0]
    seal = seg_path(store, first, "idx").read_bytes()
    data = seg_path(store, first).read_bytes()
    pack_first_segment(store)  # removes the segment: put it back, as a compaction not yet done
    seg_path(store, first).write_bytes(data)
    seg_path(store, first, "idx").write_bytes(seal)
    report = fsck(store)
    assert report.exit_code == 0, report.findings
    assert [f.code for f in report.findings if f.severity == "info"].count("segment-superseded") == 1


def test_a_record_of_another_chain_is_a_chain_mismatch(store: str) -> None:
    with EventStore(store) as s:
        state = s.synced_state()
    data, _sizes, chain = recfmt.encode(state.position + 1, b"\x01" * 32, [("stranger", _body("stranger"))])
    write_after_records(seg_path(store, segments(store)[-1]), data)
    synced = SyncedFile(os.path.join(store, "locks", "synced"))
    synced.advance(state.position + 1, state.segment, state.end + len(data), chain)
    synced.close()
    report = fsck(store)
    assert "chain-mismatch" in problems(report)
    assert fsck(store, repair=True).exit_code & 4


def test_a_repeated_id_is_found_indexed_or_not(store: str) -> None:
    _append_raw(store, [("ev-000-0", _body("ev-000-0"))])  # the id of position 1
    report = fsck(store)
    assert problems(report) == {"log-duplicate-id"}
    assert [f.position for f in report.findings if f.code == "log-duplicate-id"] == [37]
    reindex(store)  # now the index holds the id once, at 37: the log still holds it twice
    report = fsck(store)
    assert "log-duplicate-id" in problems(report)


def test_damaged_or_lying_synced_position(store: str) -> None:
    path = Path(store, "locks", "synced")
    original = path.read_bytes()
    path.write_bytes(b"garbage" * 10)
    assert problems(fsck(store, quick=True)) == {"synced-damaged"}
    assert fsck(store, repair=True).exit_code == 1
    path.write_bytes(original)
    synced = SyncedFile(str(path))
    state = synced.read()
    assert state is not None
    synced.reset(SyncedState(state.position + 100, state.segment, state.end + 5000, state.chain))
    synced.close()
    assert "synced-ahead" in problems(fsck(store, quick=True))
