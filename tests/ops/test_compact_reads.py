"""For any history of appends and compactions, every read answers exactly as before compacting."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops import Event, EventStore, Query, QueryItem
from kroniko_ops.ops.compact import compact

TAGS = ["a", "b", "c:1"]
TYPES = ["X", "Y"]

event = st.builds(
    lambda t, tags, data: Event(t, data, tags),
    st.sampled_from(TYPES),
    st.lists(st.sampled_from(TAGS), max_size=3, unique=True),
    st.one_of(st.none(), st.integers(-(2**63), 2**63), st.text(max_size=20),
              st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=3)),
)
step = st.one_of(
    st.lists(event, min_size=1, max_size=6).map(lambda batch: ("append", batch)),
    st.tuples(st.just("compact"), st.integers(1, 3)),
)
query = st.one_of(
    st.just(Query.all()),
    st.builds(lambda types, tags: Query([QueryItem(types=types, tags=tags)]),
              st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
              st.lists(st.sampled_from(TAGS), max_size=2, unique=True)),
)
read_args = st.tuples(query, st.one_of(st.none(), st.integers(0, 30)), st.booleans(),
                      st.one_of(st.none(), st.integers(0, 10)))


def answer(store: EventStore, args: tuple[Query, int | None, bool, int | None]) -> list[tuple[int, Any]]:
    q, start, backwards, limit = args
    return [(e.position, e.event) for e in store.read(q, start=start, backwards=backwards, limit=limit)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=8), reads=st.lists(read_args, min_size=1, max_size=6))
def test_reads_are_identical_before_and_after_each_compaction(steps: list[tuple[str, Any]],
                                                              reads: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "store")
        with EventStore(path, durable=False) as store:
            appended: list[Event] = []
            for kind, arg in steps:
                if kind == "append":
                    store.append(arg)
                    appended += arg
                    continue
                before = [answer(store, r) for r in reads]
                report = compact(path, max_packs=arg)
                assert report.exit_code == 0, report.findings
                assert [answer(store, r) for r in reads] == before  # the handle opened before
                with EventStore(path, create=False) as fresh:
                    assert [answer(fresh, r) for r in reads] == before
            everything = [e.event for e in store.read()]
            assert [(e.type, e.data, tuple(e.tags)) for e in everything] == \
                [(e.type, e.data, tuple(e.tags)) for e in appended]
