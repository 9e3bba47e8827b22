"""The DCB contract suite run against EventStore, durable and not."""

from __future__ import annotations

import unittest
from collections.abc import Iterator
from typing import Any

import pytest

from kroniko_ops import AppendCondition, EventStore, Query, SequencedEvent
from kroniko_ops.testing import DCBContract


class TestDurableEventStore(DCBContract):
    """The default store: every commit fsynced."""

    def make_store(self, path: str) -> EventStore:
        return EventStore(path)


class TestFastEventStore(DCBContract):
    """``durable=False``: no fsync, same results."""

    def make_store(self, path: str) -> EventStore:
        return EventStore(path, durable=False)


class TestContractUnderUnittest(DCBContract, unittest.TestCase):
    """The suite also runs as a ``unittest.TestCase`` (setUp/tearDown instead of setup_method)."""

    def make_store(self, path: str) -> EventStore:
        return EventStore(path, durable=False)


# -- the suite must catch broken stores ----------------------------------------------------


class _Mutant:
    """An EventStore with one deliberate mistake, to prove the contract notices it."""

    def __init__(self, path: str, mistake: str) -> None:
        self._store = EventStore(path, durable=False)
        self._mistake = mistake

    def append(self, events: Any, condition: AppendCondition | None = None) -> int:
        if self._mistake == "ignore-condition":
            condition = None
        elif self._mistake == "after-exclusive-off-by-one" and condition is not None:
            condition = AppendCondition(condition.fail_if_events_match, (condition.after or 0) + 1)
        return self._store.append(events, condition)

    def read(self, query: Query | None = None, *, start: int | None = None, backwards: bool = False,
             limit: int | None = None) -> Any:
        if self._mistake == "ignore-limit":
            limit = None
        elif self._mistake == "start-exclusive" and start is not None:
            start = max(0, start - 1) if backwards else start + 1
        elif self._mistake == "ignore-backwards":
            backwards = False
        return self._store.read(query, start=start, backwards=backwards, limit=limit)

    def head(self) -> int:
        return self._store.head()

    def subscribe(self, query: Query | None = None, *, after: int = 0) -> Iterator[SequencedEvent]:
        return self._store.subscribe(query, after=after)

    def close(self) -> None:
        self._store.close()


@pytest.mark.parametrize(("mistake", "tests"), [
    ("ignore-condition", ["test_append_fails_when_new_events_match", "test_conditional_appends_follow_the_model"]),
    ("after-exclusive-off-by-one", ["test_append_fails_when_new_events_match",
                                    "test_conditional_appends_follow_the_model"]),
    ("ignore-limit", ["test_limit", "test_reads_equal_a_brute_force_filter"]),
    ("start-exclusive", ["test_start_is_an_inclusive_minimum", "test_backwards_from_position_1"]),
    ("ignore-backwards", ["test_backwards_all", "test_backwards_with_limit"]),
])
def test_the_contract_catches_a_broken_store(mistake: str, tests: list[str]) -> None:
    class Broken(DCBContract):
        def make_store(self, path: str) -> Any:
            return _Mutant(path, mistake)

    for name in tests:
        suite = Broken()
        suite.setup_method()
        try:
            # Hypothesis may find several distinct failures and raise them as one group.
            with pytest.raises((AssertionError, pytest.fail.Exception, BaseExceptionGroup)) as caught:
                getattr(suite, name)()
            if isinstance(caught.value, BaseExceptionGroup):
                assert caught.value.subgroup((AssertionError, pytest.fail.Exception)) is not None
        finally:
            suite.teardown_method()
