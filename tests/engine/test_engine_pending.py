"""The records past the index checkpoint, kept raw or parsed: a condition's first match among
them is exactly what a scan of every record finds, whatever the mix, the query or ``after``
(the substring prefilter on raw bytes may only skip records that cannot match)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kroniko_ops import Event, Query, QueryItem
from kroniko_ops.codec import encode_event
from kroniko_ops.format import record
from kroniko_ops.pending import Pending

TYPES = ["A", "B", 'C"q', "t:A"]
TAGS = ["x", "y", "x:y", 'q"uote', "é", "tags", "type"]

events = st.lists(st.tuples(st.sampled_from(TYPES), st.lists(st.sampled_from(TAGS), max_size=3, unique=True),
                            st.sampled_from(["x", "tags", {"type": "A"}, {"tags": ["x"]}, None])),
                  min_size=1, max_size=30)
items = st.lists(st.tuples(st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
                           st.lists(st.sampled_from(TAGS), max_size=2, unique=True))
                 .filter(lambda it: it[0] or it[1]).map(lambda it: QueryItem(types=it[0], tags=it[1])),
                 min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(events, st.lists(st.integers(1, 5), min_size=1, max_size=10), st.lists(st.booleans(), min_size=10,
                                                                               max_size=10), items, st.data())
def test_first_match_is_what_a_scan_finds(evs, cuts, raw_flags, query_items, data) -> None:
    base = 41  # positions start after an index checkpoint
    chain = record.GENESIS
    pending = Pending()
    entries = []
    pos, k, chunk = base + 1, 0, 0
    while k < len(evs):
        n = cuts[chunk % len(cuts)]
        batch = [Event(t, d, tags) for t, tags, d in evs[k:k + n]]
        encoded = [encode_event(e) for e in batch]
        raw, sizes, chain = record.encode(pos, chain, encoded)
        mine = [(pos + i, eid, e.type, tuple(e.tags)) for i, ((eid, _), e) in enumerate(zip(encoded, batch,
                                                                                          strict=True))]
        if raw_flags[chunk % len(raw_flags)]:
            spans, off = [], 0
            for size in sizes:
                spans.append((off, off + size, record.HEADER))
                off += size
            pending.add_raw(pos, raw, spans)
        else:
            pending.extend(mine)
        entries += mine
        pos, k, chunk = pos + len(batch), k + n, chunk + 1
    query = Query(query_items)
    after = data.draw(st.integers(base - 2, pos + 1))
    want = next((e[0] for e in entries if e[0] > after and query.matches(e[2], e[3])), None)
    assert pending.first_match(query, after) == want
    assert pending.entries == entries  # parsing the raw records gives the same entries
    assert pending.ids == {e[1]: e[0] for e in entries}
    assert (pending.first, pending.last, len(pending)) == (base + 1, pos - 1, len(entries))
