"""dangling-reference: causation and correlation ids (and --ref-field paths) must name an event
of the store at the same or an earlier position; --refs-only reports nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from kroniko_ops import Event, EventStore, InvalidArgument, fsck


def _store(tmp_path: Path, events: list[Event]) -> str:
    path = str(tmp_path / "s")
    with EventStore(path, durable=False, segment_bytes=4096) as store:
        for e in events:
            store.append(e)
    return path


def _dangling(report) -> list[tuple[int | None, str]]:  # type: ignore[no-untyped-def]
    return sorted((f.position, f.severity) for f in report.findings if f.code == "dangling-reference")


def test_references_to_earlier_events_and_to_itself_are_fine(tmp_path: Path) -> None:
    path = _store(tmp_path, [
        Event("Placed", {"n": 1}, [], {"correlation_id": "a"}, "a"),
        Event("Paid", {"order_event_id": "a"}, [], {"causation_id": "a", "correlation_id": "a"}, "b"),
    ])
    report = fsck(path, ref_fields=["data.order_event_id", "metadata.correlation_id"])
    assert report.exit_code == 0, report.findings
    assert report.figures["references_checked"] == 4


def test_missing_and_later_targets_dangle(tmp_path: Path) -> None:
    path = _store(tmp_path, [
        Event("A", {}, [], {"causation_id": "nowhere"}, "a"),
        Event("B", {}, [], {"causation_id": "c"}, "b"),  # names an event written after it
        Event("C", {}, [], None, "c"),
    ])
    report = fsck(path)
    assert _dangling(report) == [(1, "warning"), (2, "warning")]
    assert report.exit_code == 4
    messages = " ".join(f.message for f in report.findings)
    assert "in no event of the store" in messages and "later event (position 3)" in messages


def test_ref_field_paths_are_followed_and_checked(tmp_path: Path) -> None:
    path = _store(tmp_path, [Event("A", {"x": "ghost", "nested": {"y": ["a", "ghost2"]}}, [], None, "a")])
    assert _dangling(fsck(path)) == []
    report = fsck(path, ref_fields=["data.x", "data.nested.y"])
    assert _dangling(report) == [(1, "warning"), (1, "warning")]
    with pytest.raises(InvalidArgument):
        fsck(path, ref_fields=["x"])


def test_refs_only_reports_references_only(tmp_path: Path) -> None:
    path = _store(tmp_path, [Event("A", {}, [], {"causation_id": "nowhere"}, "a")] +
                  [Event("B", {"i": i}, [], {"causation_id": "a"}) for i in range(30)])
    Path(path, "stray.txt").write_text("x")  # not a reference problem: not reported
    report = fsck(path, refs_only=True)
    assert {f.code for f in report.findings} == {"dangling-reference"}
    assert _dangling(report) == [(1, "warning")]
    assert report.figures["level"] == "refs"


def test_references_resolve_without_an_index(tmp_path: Path) -> None:
    path = _store(tmp_path, [Event("A", {}, [], None, "a"), Event("B", {}, [], {"causation_id": "a"}, "b"),
                             Event("C", {}, [], {"causation_id": "zz"}, "c")])
    for name in Path(path, "index").iterdir():
        name.unlink()
    report = fsck(path)
    assert _dangling(report) == [(3, "warning")]
    assert "index-missing" in {f.code for f in report.problems}


def test_correlation_ids_are_checked_only_when_asked(tmp_path: Path) -> None:
    # A correlation id usually names a request, not an event (issue 16 item 13): before, every
    # such event was a dangling-reference warning and fsck exited 4 on a healthy store.
    path = _store(tmp_path, [Event("Placed", {"n": i}, [], {"correlation_id": f"req-{i}"}) for i in range(3)])
    assert fsck(path).exit_code == 0
    assert _dangling(fsck(path, ref_fields=["metadata.correlation_id"])) == [(1, "warning"), (2, "warning"),
                                                                           (3, "warning")]


def test_a_store_records_its_reference_fields_at_init(tmp_path: Path) -> None:
    from kroniko_ops.layout import init_refs

    path = str(tmp_path / "s")
    init_refs(path, ("data.order_event_id", "metadata.correlation_id"))
    assert "ref_fields=data.order_event_id,metadata.correlation_id\n" in Path(path, "FORMAT").read_text()
    with EventStore(path, durable=False) as store:
        store.append(Event("Paid", {"order_event_id": "ghost"}, [], {"correlation_id": "req-1"}, "p"))
    report = fsck(path)  # a plain fsck checks what this store means by a reference
    assert _dangling(report) == [(1, "warning"), (1, "warning")]
    assert report.figures["ref_fields"] == "metadata.causation_id,data.order_event_id,metadata.correlation_id"
    init_refs(path, ("metadata.correlation_id", "data.order_event_id"))  # the same fields: fine
    with pytest.raises(InvalidArgument):
        init_refs(path, ("data.other",))  # FORMAT is fixed at creation
    with pytest.raises(InvalidArgument):
        init_refs(str(tmp_path / "t"), ("correlation_id",))
    assert not (tmp_path / "t").exists()
