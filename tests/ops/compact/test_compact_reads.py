"""For random stores and random reads: every read answers the same before and after each
compaction, with appends between compactions (Hypothesis)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from compact_helpers import SMALL, soundness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops import Event, EventStore, Query, QueryItem
from kroniko_ops.ops.compact import compact

TAGS = ["a", "b", "c", "d"]
TYPES = ["T", "U", "V"]

event = st.builds(
    lambda type_, tags, size, meta: (type_, tags, size, meta),
    st.sampled_from(TYPES), st.lists(st.sampled_from(TAGS), max_size=3, unique=True),
    st.sampled_from([0, 10, 200, 1500, 5000]), st.booleans())
batch = st.lists(event, min_size=1, max_size=6)
step = st.tuples(st.lists(batch, min_size=0, max_size=12), st.booleans())  # appends, then compact or not
query = st.one_of(
    st.none(),
    st.builds(lambda items: Query([QueryItem(types=t, tags=g) for t, g in items]),
              st.lists(st.tuples(st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
                                 st.lists(st.sampled_from(TAGS), max_size=2, unique=True)).filter(
                  lambda item: bool(item[0] or item[1])), min_size=1, max_size=3)))
read = st.tuples(query, st.one_of(st.none(), st.integers(0, 120)), st.booleans(),
                 st.one_of(st.none(), st.integers(0, 30)))


def answers(path: str, reads: list[tuple[Any, ...]]) -> list[list[tuple[int, Event]]]:
    with EventStore(path, create=False) as s:
        out = [[(e.position, e.event) for e in s.read()], [(e.position, e.event) for e in s.read(backwards=True)]]
        for q, start, backwards, limit in reads:
            out.append([(e.position, e.event) for e in s.read(q, start=start, backwards=backwards, limit=limit)])
        return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=5), reads=st.lists(read, min_size=1, max_size=6))
def test_reads_are_identical_before_and_after_each_compaction(steps: list[tuple[list[Any], bool]],
                                                               reads: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "store")
        n = 0
        EventStore(path, durable=False, segment_bytes=SMALL).close()
        for batches, then_compact in steps:
            with EventStore(path, durable=False) as s:
                for b in batches:
                    s.append([Event(t, {"n": n + k, "pad": "p" * size}, tags, {"k": k} if meta else None,
                                    f"id-{n + k}") for k, (t, tags, size, meta) in enumerate(b)])
                    n += len(b)
            if then_compact:
                before = answers(path, reads)
                report = compact(path, durable=False)
                assert report.exit_code == 0, report.findings
                assert answers(path, reads) == before
                assert soundness(path) == []
        assert len(answers(path, [])[0]) == n
