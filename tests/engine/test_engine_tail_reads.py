"""Reads of the records the index has not reached yet find exactly what a scan finds, whatever
the tags and types hold (quotes, backslashes, non-ASCII, a tag's text inside the data): only
the events whose bytes hold a query's tags and type are parsed, and those are checked."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops import Event, EventStore, Query, QueryItem

NAMES = st.sampled_from(["a", "b", 'q"u', "back\\slash", "é", "日本", "a b", "x:1", "\u2028"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(NAMES, st.lists(NAMES, max_size=3), NAMES), min_size=1, max_size=40),
       items=st.lists(st.tuples(st.lists(NAMES, max_size=2), st.lists(NAMES, max_size=2)), min_size=1, max_size=3))
def test_unindexed_reads_match_a_scan(tmp_path: Path, events: list, items: list) -> None:
    path = str(tmp_path / f"s{abs(hash((tuple(map(str, events)), str(items))))}")
    writer = EventStore(path, durable=False)
    try:
        # Fewer events than the writer indexes at once: a second handle sees them unindexed.
        writer.append([Event(t, {"text": d, "tagish": tags}, tags) for t, tags, d in events])
        query = Query([QueryItem(types=ty, tags=tg) for ty, tg in items])
        with EventStore(path, durable=False) as reader:
            assert reader.index.checkpoint()[0] < reader.head()
            everything = list(reader.read())
            want = [e for e in everything if query.matches(e.type, e.tags)]
            got = list(reader.read(query))
            assert [(e.position, e.event, e.commit_us, e.batch_end) for e in got] == \
                [(e.position, e.event, e.commit_us, e.batch_end) for e in want]
            assert list(reader.read(query, backwards=True)) == want[::-1]
    finally:
        writer.close()
