"""Contract rules that hold for all inputs, checked with Hypothesis against an in-memory model.

The model is a plain list of appended events; its query evaluation is written out here from the
DCB rules (types any-of, tags all-of, items OR'ed, no items = everything) rather than taken from
:mod:`kroniko_ops.model`, so a shared mistake cannot hide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..errors import AppendConditionFailed
from ..model import AppendCondition, Event, Query, QueryItem
from ._base import ContractBase

TYPES = ("A", "B", "C")
TAGS = ("t1", "t2", "t3", "cart:1")
# differing_executors: the same test runs on each subclass (one per store), which is the point.
# differing_executors: the same test runs on each subclass (one per store), which is the point.
MODEL_SETTINGS = settings(max_examples=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors])


@dataclass(frozen=True)
class Item:
    """One query item as the model sees it."""

    types: tuple[str, ...]
    tags: tuple[str, ...]


def model_matches(items: Sequence[Item], event: Event) -> bool:
    """The DCB matching rule, independent of the library's implementation."""
    if not items:
        return True
    return any((not it.types or event.type in it.types) and all(t in event.tags for t in it.tags)
               for it in items)


def to_query(items: Sequence[Item]) -> Query:
    """The library query for model items."""
    return Query([QueryItem(types=list(it.types), tags=list(it.tags)) for it in items])


events_st = st.builds(
    lambda type_, tags, n: Event(type_, {"n": n}, tuple(tags)),
    st.sampled_from(TYPES),
    st.lists(st.sampled_from(TAGS), max_size=3, unique=True),
    st.integers(0, 1000),
)
items_st = st.lists(
    st.builds(Item, st.lists(st.sampled_from((*TYPES, "Z")), max_size=2, unique=True).map(tuple),
              st.lists(st.sampled_from((*TAGS, "none")), max_size=2, unique=True).map(tuple)),
    max_size=3,
)
batches_st = st.lists(st.lists(events_st, min_size=1, max_size=4), max_size=5)


class ModelContract(ContractBase):
    """Random reads and conditional appends compared with a brute-force model."""

    @MODEL_SETTINGS
    @given(batches=batches_st, data=st.data())
    def test_reads_equal_a_brute_force_filter(self, batches: list[list[Event]], data: st.DataObject) -> None:
        with self.fresh_store() as store:
            model: list[Event] = []
            for batch in batches:
                batch = [Event(e.type, e.data, e.tags, None, f"m{len(model) + i}") for i, e in enumerate(batch)]
                assert store.append(batch) == len(model) + len(batch)
                model.extend(batch)
            for _ in range(data.draw(st.integers(1, 6), label="reads")):
                items = data.draw(items_st, label="items")
                start = data.draw(st.none() | st.integers(0, len(model) + 2), label="start")
                backwards = data.draw(st.booleans(), label="backwards")
                limit = data.draw(st.none() | st.integers(0, len(model) + 1), label="limit")
                matching = [(pos, e) for pos, e in enumerate(model, 1) if model_matches(items, e)]
                if backwards:
                    want = [m for m in reversed(matching) if start is None or m[0] <= start]
                else:
                    want = [m for m in matching if start is None or m[0] >= start]
                want = want[:limit]
                result = store.read(to_query(items), start=start, backwards=backwards, limit=limit)
                assert result.head == len(model)
                assert [(e.position, e.event) for e in result] == want

    @MODEL_SETTINGS
    @given(initial=batches_st, data=st.data())
    def test_conditional_appends_follow_the_model(self, initial: list[list[Event]], data: st.DataObject) -> None:
        with self.fresh_store() as store:
            model: list[Event] = []
            for batch in initial:
                store.append(batch)
                model.extend(batch)
            for _ in range(data.draw(st.integers(1, 6), label="appends")):
                items = data.draw(items_st, label="condition items")
                after = data.draw(st.none() | st.integers(0, len(model) + 3), label="after")
                batch = data.draw(st.lists(events_st, min_size=1, max_size=3), label="batch")
                conflicts = [pos for pos, e in enumerate(model, 1)
                             if pos > (after or 0) and model_matches(items, e)]
                condition = AppendCondition(to_query(items), after)
                if conflicts:
                    try:
                        store.append(batch, condition)
                    except AppendConditionFailed as exc:
                        assert exc.position == conflicts[0]
                    else:
                        raise AssertionError(f"append succeeded although {conflicts[0]} matches")
                else:
                    assert store.append(batch, condition) == len(model) + len(batch)
                    model.extend(batch)
                assert store.head() == len(model)
            assert [(e.type, e.data, tuple(e.tags)) for e in store.read()] == [
                (e.type, e.data, tuple(e.tags)) for e in model
            ]
