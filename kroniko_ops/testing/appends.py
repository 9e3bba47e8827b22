"""Contract: appends, conditions, atomic batches, idempotent retries and subscriptions."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ..errors import AppendConditionFailed, InvalidEvent, KronikoError
from ..model import AppendCondition, Event, Query, SequencedEvent
from ._base import ContractBase, DCBStore, positions, q

SUBSCRIBE_TIMEOUT = 30.0  # a guard against a hang, not a speed assertion


def _fails_at(store: DCBStore, events: Any, condition: AppendCondition) -> int:
    """Append expecting a conflict; check that nothing was written; return its position."""
    head = store.head()
    with pytest.raises(AppendConditionFailed) as info:
        store.append(events, condition)
    assert store.head() == head, "a refused append must not write"
    assert isinstance(info.value, KronikoError)
    return info.value.position


class AppendContract(ContractBase):
    """What ``append`` promises, alone and together with ``read``."""

    def test_append_returns_the_last_position(self) -> None:
        store = self.new_store()
        assert store.append(Event("A", 1)) == 1
        assert store.append([Event("B", 2), Event("B", 3), Event("B", 4)]) == 4
        assert store.append((Event("C", 5),)) == 5
        assert store.head() == 5

    def test_append_succeeds_when_the_expected_position_matches(self) -> None:
        store = self.sample_store()
        query = q(([], ["t1"]))
        seen = store.read(query)
        assert store.append(Event("A", 7, ["t1"]), AppendCondition(query, after=seen.head)) == 7
        # Events that do not match the query may come in between: the decision stays valid.
        seen = store.read(query)
        store.append(Event("B", 8, ["t2"]))
        assert store.append(Event("A", 9, ["t1"]), AppendCondition(query, after=seen.head)) == 9

    def test_append_succeeds_when_the_condition_matches_nothing(self) -> None:
        store = self.sample_store()
        assert store.append(Event("A", 7), AppendCondition(q((["Z"], [])))) == 7
        assert store.append(Event("A", 8), AppendCondition(q(([], ["none"])), after=0)) == 8
        assert store.append(Event("A", 9), AppendCondition(q(([], ["t1"])), after=1000)) == 9
        assert store.append(Event("A", 10), AppendCondition(Query.all(), after=10**12)) == 10

    def test_append_fails_when_new_events_match(self) -> None:
        store = self.sample_store()
        # t1 is at 1, 2, 4 and 6: after 2 the first conflict is 4.
        assert _fails_at(store, Event("X", 0, ["t1"]), AppendCondition(q(([], ["t1"])), after=2)) == 4
        assert _fails_at(store, Event("X", 0), AppendCondition(q((["A"], [])), after=3)) == 6
        assert _fails_at(store, Event("X", 0), AppendCondition(q((["Z"], []), ([], ["t3"])), after=0)) == 4
        assert _fails_at(store, Event("X", 0), AppendCondition(q((["B"], ["t2"])), after=1)) == 2
        # A match at exactly ``after`` is not new.
        assert store.append(Event("X", 0), AppendCondition(q(([], ["t3"])), after=6)) == 7
        assert _fails_at(store, Event("X", 0), AppendCondition(q(([], ["t3"])), after=5)) == 6

    def test_append_fails_when_no_position_was_expected_but_the_query_matches(self) -> None:
        store = self.sample_store()
        assert _fails_at(store, Event("X", 0), AppendCondition(q(([], ["t2"])))) == 2
        assert _fails_at(store, Event("X", 0), AppendCondition(q((["C"], [])), after=None)) == 4
        assert positions(store.read(q((["X"], [])))) == []

    def test_query_all_as_condition(self) -> None:
        store = self.new_store()
        assert store.append(Event("A", 1), AppendCondition(Query.all())) == 1
        assert _fails_at(store, Event("A", 2), AppendCondition(Query.all())) == 1
        assert _fails_at(store, Event("A", 2), AppendCondition(Query.all(), after=0)) == 1
        assert store.append(Event("A", 2), AppendCondition(Query.all(), after=1)) == 2
        store.append([Event("B", 3), Event("B", 4)])
        assert _fails_at(store, Event("A", 5), AppendCondition(Query.all(), after=2)) == 3

    def test_a_refused_batch_writes_nothing(self) -> None:
        store = self.sample_store()
        batch = [Event("X", i, ["new"]) for i in range(3)]
        assert _fails_at(store, batch, AppendCondition(q(([], ["t1"])), after=5)) == 6
        assert positions(store.read(q(([], ["new"])))) == []
        assert positions(store.read()) == [1, 2, 3, 4, 5, 6]

    def test_batch_with_an_invalid_event_writes_nothing(self) -> None:
        store = self.sample_store()
        with pytest.raises(InvalidEvent):
            store.append([Event("Good", 1, ["g"]), Event("Bad", {"x": {1, 2}}, ["g"])])
        assert store.head() == 6
        assert positions(store.read(q(([], ["g"])))) == []
        # The store goes on at the next position: nothing was reserved by the refused batch.
        assert store.append([Event("Good", 1, ["g"]), Event("Good", 2, ["g"])]) == 8
        assert positions(store.read(q(([], ["g"])))) == [7, 8]

    def test_batch_positions_are_consecutive(self) -> None:
        store = self.new_store()
        first = store.append([Event("A", i, ["b1"]) for i in range(4)])
        second = store.append([Event("A", i, ["b2"]) for i in range(3)])
        assert (first, second) == (4, 7)
        assert positions(store.read(q(([], ["b1"])))) == [1, 2, 3, 4]
        assert positions(store.read(q(([], ["b2"])))) == [5, 6, 7]
        assert [e.data for e in store.read(q(([], ["b2"])))] == [0, 1, 2]

    def test_empty_batch_is_refused(self) -> None:
        store = self.sample_store()
        with pytest.raises(InvalidEvent):
            store.append([])
        assert store.head() == 6

    def test_idempotent_retry_returns_the_existing_position(self) -> None:
        store = self.sample_store()
        batch = [Event("A", 1, ["r"], None, "retry-1"), Event("A", 2, ["r"], None, "retry-2")]
        assert store.append(batch) == 8
        assert store.append(batch) == 8
        assert store.append(list(batch)) == 8
        assert store.head() == 8
        assert [e.id for e in store.read(q(([], ["r"])))] == ["retry-1", "retry-2"]
        single = Event("A", 3, [], None, "retry-3")
        assert store.append(single) == 9
        assert store.append(single) == 9
        assert store.head() == 9

    def test_idempotent_retry_wins_over_its_own_condition(self) -> None:
        # A writer whose acknowledgement was lost retries with the same condition; its own
        # committed events now match that condition, yet the retry must report success.
        store = self.sample_store()
        event = Event("CartCreated", {}, ["cart:9"], None, "cart-9-created")
        condition = AppendCondition(q(([], ["cart:9"])), after=6)
        assert store.append(event, condition) == 7
        assert store.append(event, condition) == 7
        assert store.head() == 7

    def test_other_reuse_of_a_committed_id_is_refused(self) -> None:
        store = self.sample_store()
        a = Event("A", 1, [], None, "used-a")
        b = Event("A", 2, [], None, "used-b")
        store.append([a, b])
        for attempt in ([b, a], [a, Event("A", 3, [], None, "fresh-1")],
                        [Event("A", 3, [], None, "fresh-2"), b], [Event("A", 3), a]):
            with pytest.raises(InvalidEvent):
                store.append(attempt)
            assert store.head() == 8
        assert [e.id for e in store.read(start=7)] == ["used-a", "used-b"]
        # Refused attempts leave their fresh ids usable.
        assert store.append(Event("A", 3, [], None, "fresh-1")) == 9

    def test_duplicate_ids_in_one_batch_are_refused(self) -> None:
        store = self.sample_store()
        with pytest.raises(InvalidEvent):
            store.append([Event("A", 1, [], None, "twin"), Event("A", 2, [], None, "twin")])
        assert store.head() == 6

    def test_metadata_and_tags_round_trip(self) -> None:
        store = self.new_store()
        sent = Event("Meta", {"v": 1}, ("b", "a", "b:1", "ünï"), {"corr": "c-1", "n": [1, {"x": None}]}, "m-1")
        store.append(sent)
        (got,) = list(store.read(q(([], ["ünï"]))))
        assert got.event == sent
        assert got.tags == ("b", "a", "b:1", "ünï") and got.metadata == sent.metadata

    # -- subscriptions ---------------------------------------------------------------------

    def _subscribe_in_thread(self, store: DCBStore, query: Query | None, after: int, want: int,
                             caught_up_at: int) -> tuple[list[SequencedEvent], threading.Event, threading.Thread]:
        """Start a subscriber that collects ``want`` events, signals once it has
        ``caught_up_at`` of them, then closes its generator itself."""
        got: list[SequencedEvent] = []
        caught_up = threading.Event()
        if caught_up_at == 0:
            caught_up.set()

        def run() -> None:
            sub = store.subscribe(query, after=after)
            try:
                for event in sub:
                    got.append(event)
                    if len(got) >= caught_up_at:
                        caught_up.set()
                    if len(got) >= want:
                        break
            finally:
                sub.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return got, caught_up, thread

    def test_subscription_sees_events_appended_after_it_started(self) -> None:
        store = self.new_store()
        store.append([Event("A", 1, ["s"]), Event("B", 2, ["other"])])
        got, caught_up, thread = self._subscribe_in_thread(store, q(([], ["s"])), 0, 3, 1)
        assert caught_up.wait(SUBSCRIBE_TIMEOUT), "the subscriber did not yield the existing event"
        store.append(Event("A", 3, ["other"]))
        store.append([Event("A", 4, ["s"]), Event("A", 5, ["s"])])
        thread.join(SUBSCRIBE_TIMEOUT)
        assert not thread.is_alive(), "the subscriber did not see the new events"
        assert [(e.position, e.data) for e in got] == [(1, 1), (4, 4), (5, 5)]

    def test_subscription_starts_after_the_given_position(self) -> None:
        store = self.sample_store()
        got, _, thread = self._subscribe_in_thread(store, None, 4, 3, 0)
        store.append(Event("Z", 7))
        thread.join(SUBSCRIBE_TIMEOUT)
        assert not thread.is_alive(), "the subscriber did not see the new event"
        assert positions(got) == [5, 6, 7]
