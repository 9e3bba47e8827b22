"""The full walk checks a run's parsed bodies in bulk; a body the bulk check refuses is checked
again one by one. Both must agree on every input, or a bad event would slip through."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kroniko_ops.ops.fsck.records import _all_sound, _doc_problem

_values = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2))
_tags = st.one_of(st.lists(st.text(max_size=3), max_size=3), st.lists(_values, max_size=3), _values)


@st.composite
def _doc(draw: st.DrawFn) -> tuple[Any, str]:
    eid = draw(st.sampled_from(["a", "b"]))
    doc: dict[str, Any] = {}
    for key, value in (("id", st.sampled_from(["a", "b", 1])), ("type", st.one_of(st.sampled_from(["T", ""]), _values)),
                       ("tags", _tags), ("data", _values), ("metadata", _values)):
        if draw(st.integers(0, 9)) > 0:  # mostly present
            doc[key] = draw(value)
    return (doc if draw(st.integers(0, 19)) > 0 else draw(_values)), eid


@given(st.lists(_doc(), min_size=1, max_size=6))
def test_bulk_check_agrees_with_the_one_by_one_check(items: list[tuple[Any, str]]) -> None:
    docs = [d for d, _ in items]
    ids = [i for _, i in items]
    assert _all_sound(docs, ids) == all(_doc_problem(d, i) is None for d, i in items)


def test_a_sound_run_passes() -> None:
    docs = [{"id": "a", "type": "T", "tags": ["x", "y"], "data": {}, "metadata": {}},
            {"id": "b", "type": "U", "tags": [], "data": None, "metadata": {}}]
    assert _all_sound(docs, ["a", "b"])
    assert not _all_sound(docs, ["a", "c"])
