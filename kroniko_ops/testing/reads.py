"""Contract: what ``read`` returns (queries, ``start``, ``backwards``, ``limit``, ``head``)."""

from __future__ import annotations

import itertools
import re

from ..model import Event, Query, QueryItem
from ._base import SAMPLE, ContractBase, positions, q

_ID = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")


class ReadContract(ContractBase):
    """Reads over an empty store and over :data:`~kroniko_ops.testing._base.SAMPLE`."""

    def test_empty_store_reads_nothing(self) -> None:
        store = self.new_store()
        assert store.head() == 0
        result = store.read()
        assert result.head == 0
        assert list(result) == []
        assert list(store.read(backwards=True)) == []
        assert list(store.read(q((["A"], ["t1"])))) == []
        assert list(store.read(start=1)) == []
        assert list(store.read(limit=5)) == []

    def test_read_all(self) -> None:
        store = self.sample_store()
        result = store.read()
        events = list(result)
        assert result.head == 6
        assert positions(events) == [1, 2, 3, 4, 5, 6]
        expected = [e for batch in SAMPLE for e in batch]
        assert [(e.type, e.data, tuple(e.tags)) for e in events] == [
            (e.type, e.data, tuple(e.tags)) for e in expected
        ]
        ids = [e.id for e in events]
        assert len(set(ids)) == 6 and all(_ID.match(i) for i in ids)

    def test_read_none_is_read_all(self) -> None:
        store = self.sample_store()
        assert positions(store.read(None)) == positions(store.read(Query.all())) == [1, 2, 3, 4, 5, 6]

    def test_read_after_iterating(self) -> None:
        store = self.sample_store()
        result = store.read(q(([], ["t1"])))
        first = [(e.position, e.id) for e in result]
        again = [(e.position, e.id) for e in result]
        fresh = [(e.position, e.id) for e in store.read(q(([], ["t1"])))]
        assert first == again == fresh
        assert [p for p, _ in first] == [1, 2, 4, 6]

    def test_start_is_an_inclusive_minimum(self) -> None:
        store = self.sample_store()
        assert positions(store.read(start=3)) == [3, 4, 5, 6]
        assert positions(store.read(start=6)) == [6]
        assert positions(store.read(start=1)) == [1, 2, 3, 4, 5, 6]
        assert positions(store.read(start=0)) == [1, 2, 3, 4, 5, 6]
        assert positions(store.read(q(([], ["t1"])), start=2)) == [2, 4, 6]
        assert positions(store.read(q(([], ["t1"])), start=3)) == [4, 6]

    def test_limit(self) -> None:
        store = self.sample_store()
        assert positions(store.read(limit=2)) == [1, 2]
        assert positions(store.read(limit=0)) == []
        assert positions(store.read(limit=6)) == [1, 2, 3, 4, 5, 6]
        assert positions(store.read(limit=100)) == [1, 2, 3, 4, 5, 6]
        assert positions(store.read(q((["A"], [])), limit=2)) == [1, 3]
        assert positions(store.read(start=3, limit=2)) == [3, 4]

    def test_start_past_head_reads_nothing(self) -> None:
        store = self.sample_store()
        assert positions(store.read(start=7)) == []
        assert positions(store.read(start=10**9)) == []
        assert positions(store.read(q(([], ["t1"])), start=7)) == []
        assert store.read(start=7).head == 6

    def test_filter_by_one_tag(self) -> None:
        store = self.sample_store()
        assert positions(store.read(q(([], ["t1"])))) == [1, 2, 4, 6]
        assert positions(store.read(q(([], ["t3"])))) == [4, 6]
        assert all("t2" in e.tags for e in store.read(q(([], ["t2"]))))

    def test_filter_by_tags_or_items(self) -> None:
        store = self.sample_store()
        assert positions(store.read(q(([], ["t2"]), ([], ["t3"])))) == [2, 3, 4, 6]
        # An event matching two items is returned once.
        assert positions(store.read(q(([], ["t1"]), ([], ["t1"]), ([], ["t3"])))) == [1, 2, 4, 6]

    def test_filter_by_tags_and_exact(self) -> None:
        store = self.sample_store()
        assert positions(store.read(q(([], ["t1", "t2"])))) == [2, 4]
        assert positions(store.read(q(([], ["t1", "t2", "t3"])))) == [4]
        assert positions(store.read(q(([], ["t2", "t1"])))) == [2, 4]

    def test_filter_by_type(self) -> None:
        store = self.sample_store()
        assert positions(store.read(q((["A"], [])))) == [1, 3, 6]
        assert positions(store.read(q((["C"], [])))) == [4]

    def test_filter_by_several_types(self) -> None:
        store = self.sample_store()
        assert positions(store.read(q((["A", "C"], [])))) == [1, 3, 4, 6]
        assert positions(store.read(q((["A"], []), (["B"], [])))) == [1, 2, 3, 5, 6]

    def test_filter_by_tags_and_types(self) -> None:
        store = self.sample_store()
        assert positions(store.read(q((["A"], ["t1"])))) == [1, 6]
        assert positions(store.read(q((["A", "B"], ["t2"])))) == [2, 3]
        assert positions(store.read(q((["A"], ["t1", "t3"])))) == [6]
        assert positions(store.read(q((["B"], ["t1"]), (["C"], ["t3"])))) == [2, 4]

    def test_query_matching_nothing(self) -> None:
        store = self.sample_store()
        for query in (q((["Z"], [])), q(([], ["nope"])), q((["A"], ["t2", "t3"])), q((["B"], ["t3"])),
                      q(([], ["t1", "nope"]))):
            result = store.read(query)
            assert positions(result) == []
            assert result.head == 6

    def test_item_without_constraints_matches_everything(self) -> None:
        store = self.sample_store()
        assert positions(store.read(Query([QueryItem()]))) == [1, 2, 3, 4, 5, 6]
        assert positions(store.read(q((["Z"], []), ([], [])))) == [1, 2, 3, 4, 5, 6]

    def test_backwards_all(self) -> None:
        store = self.sample_store()
        assert positions(store.read(backwards=True)) == [6, 5, 4, 3, 2, 1]
        assert positions(store.read(q(([], ["t1"])), backwards=True)) == [6, 4, 2, 1]

    def test_backwards_from_a_maximum_position(self) -> None:
        store = self.sample_store()
        assert positions(store.read(start=4, backwards=True)) == [4, 3, 2, 1]
        assert positions(store.read(q(([], ["t1"])), start=5, backwards=True)) == [4, 2, 1]
        assert positions(store.read(start=100, backwards=True)) == [6, 5, 4, 3, 2, 1]

    def test_backwards_with_limit(self) -> None:
        store = self.sample_store()
        assert positions(store.read(backwards=True, limit=2)) == [6, 5]
        assert positions(store.read(q(([], ["t1"])), backwards=True, limit=3)) == [6, 4, 2]
        assert positions(store.read(start=3, backwards=True, limit=2)) == [3, 2]

    def test_backwards_from_position_1(self) -> None:
        store = self.sample_store()
        assert positions(store.read(start=1, backwards=True)) == [1]
        assert positions(store.read(q(([], ["t2"])), start=1, backwards=True)) == []
        assert positions(store.read(start=0, backwards=True)) == []

    def test_options_do_not_change_which_events_match(self) -> None:
        store = self.sample_store()
        queries = [Query.all(), q(([], ["t1"])), q((["A"], [])), q((["A", "B"], ["t2"])),
                   q(([], ["t2"]), (["A"], ["t3"])), q((["Z"], []))]
        for query in queries:
            full = positions(store.read(query))
            for start, backwards, limit in itertools.product(
                    (None, 0, 1, 2, 4, 6, 7), (False, True), (None, 0, 1, 3)):
                got = positions(store.read(query, start=start, backwards=backwards, limit=limit))
                if backwards:
                    want = [p for p in reversed(full) if start is None or p <= start]
                else:
                    want = [p for p in full if start is None or p >= start]
                assert got == want[:limit], (query, start, backwards, limit)

    def test_properties_sugar_is_a_tag(self) -> None:
        store = self.new_store()
        store.append([Event("CartCreated", {"cart_id": "7"}, ["cart_id:7"]),
                      Event("CartCreated", {"cart_id": "8"}, ["cart_id:8"])])
        got = store.read(Query([QueryItem(properties={"cart_id": "7"})]))
        assert [e.data for e in got] == [{"cart_id": "7"}]

    def test_head_is_fixed_when_the_read_starts(self) -> None:
        store = self.sample_store()
        result = store.read(q(([], ["t1"])))
        store.append(Event("A", {"n": 7}, ["t1"]))
        assert result.head == 6
        assert positions(result) == [1, 2, 4, 6]
        assert store.read(q(([], ["t1"]))).head == 7
        assert positions(store.read(q(([], ["t1"])))) == [1, 2, 4, 6, 7]

    def test_events_round_trip_exactly(self) -> None:
        store = self.new_store()
        data = {"s": "naïve ☃ 🎉 \u202eRTL", "i": -(2**63), "u": 2**64 - 1, "f": 0.1, "e": 1e300,
                "b": [True, False, None], "nested": {"list": [[], {}, [1, [2, [3]]]], "": ""}}
        sent = [
            Event("Typed", data, ("z", "a", "m"), {"user": "ada", "trace": [1, 2]}, "evt-1"),
            Event("Bare", None, (), None, "evt-2"),
            Event("Scalar", "just a string", ("only",), {}, "evt-3"),
            Event("Dup", 0, ("same", "same", "other"), {"k": None}, "evt-4"),
        ]
        store.append(sent)
        got = list(store.read())
        assert [e.event for e in got] == sent
        assert [e.position for e in got] == [1, 2, 3, 4]
        assert [e.id for e in got] == ["evt-1", "evt-2", "evt-3", "evt-4"]
        assert got[0].metadata == {"user": "ada", "trace": [1, 2]} and got[0].tags == ("z", "a", "m")
        # A tag given twice is one match, not two.
        assert positions(store.read(q(([], ["same"])))) == [4]

    def test_generated_ids_are_valid_and_kept(self) -> None:
        store = self.new_store()
        store.append([Event("A", 1), Event("A", 2)])
        got = list(store.read())
        assert all(_ID.match(e.id) for e in got)
        assert got[0].id != got[1].id
        assert [e.id for e in store.read(backwards=True)] == [got[1].id, got[0].id]
