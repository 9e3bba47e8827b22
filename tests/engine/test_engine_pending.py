"""The records past the index checkpoint, kept raw or parsed: a condition's first match among
them is exactly what a scan of every record finds, whatever the mix, the query or ``after``
(the substring prefilter on raw bytes may only skip records that cannot match)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kroniko_ops import Event, Query, QueryItem
from kroniko_ops import pending as pending_mod
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


def encoded_batch(pos: int, chain: bytes, evs: list) -> tuple[bytes, list[int], bytes, list]:
    """The records of ``(type, tags, data)`` events from ``pos`` on: their bytes, sizes, the chain
    after them and their entries."""
    batch = [Event(t, d, tags) for t, tags, d in evs]
    encoded = [encode_event(e) for e in batch]
    raw, sizes, chain = record.encode(pos, chain, encoded)
    return raw, sizes, chain, [(pos + i, eid, e.type, tuple(e.tags))
                               for i, ((eid, _), e) in enumerate(zip(encoded, batch, strict=True))]


def spans_of(sizes: list[int]) -> list[tuple[int, int, int]]:
    """``(start, end, header size)`` of records of these sizes, back to back."""
    spans, off = [], 0
    for size in sizes:
        spans.append((off, off + size, record.HEADER))
        off += size
    return spans


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
        raw, sizes, chain, mine = encoded_batch(pos, chain, evs[k:k + n])
        if raw_flags[chunk % len(raw_flags)]:
            pending.add_raw(pos, raw, spans_of(sizes))
        else:
            pending.extend(mine)
        entries += mine
        pos, k, chunk = pos + len(mine), k + n, chunk + 1
    query = Query(query_items)
    after = data.draw(st.integers(base - 2, pos + 1))
    want = next((e[0] for e in entries if e[0] > after and query.matches(e[2], e[3])), None)
    assert pending.first_match(query, after) == want
    assert pending.entries == entries  # parsing the raw records gives the same entries
    assert pending.ids == {e[1]: e[0] for e in entries}
    assert (pending.first, pending.last, len(pending)) == (base + 1, pos - 1, len(entries))


@settings(max_examples=200, deadline=None)
@given(events, st.lists(st.integers(1, 5), min_size=1, max_size=10),
       st.lists(st.sampled_from(["raw", "parsed", "own", "drop", "drop-raw"]), min_size=10, max_size=10),
       st.lists(st.integers(-2, 6), min_size=1, max_size=10), items, st.data())
def test_dropping_indexed_records_keeps_the_rest_exact(evs, cuts, steps, drops, query_items, data) -> None:
    """Records dropped once indexed (raw ones unparsed, parsed ones skipped over, the lookups
    rebuilt now and then) are gone from every answer; what is kept answers as a scan would."""
    pending_mod.REBUILD_AFTER = data.draw(st.sampled_from([0, 2, 256]))  # rebuilt often, or never
    base = 41
    chain = record.GENESIS
    pending = Pending()
    entries: list = []
    dropped = base
    pos, k, chunk = base + 1, 0, 0
    while k < len(evs):
        n = cuts[chunk % len(cuts)]
        raw, sizes, chain, mine = encoded_batch(pos, chain, evs[k:k + n])
        step = steps[chunk % len(steps)]
        if step == "parsed":
            pending.extend(mine)
        elif step == "own":  # this handle's own batch: parsed, or raw behind other writers' raw ones
            pending.add_own(pos, raw, sizes, record.HEADER, lambda mine=mine: mine)
        else:
            pending.add_raw(pos, raw, spans_of(sizes))
        entries += mine
        pos, k, chunk = pos + len(mine), k + n, chunk + 1
        if step.startswith("drop") and len(entries) > 1:
            # Never everything: the writer keeps the most recent records.
            through = min(pos - 2, dropped + drops[chunk % len(drops)])
            if through > dropped:
                pending.drop_through(through)
                dropped = through
    live = [e for e in entries if e[0] > dropped]
    query = Query(query_items)
    after = data.draw(st.integers(base - 2, pos + 1))
    want = next((e[0] for e in live if e[0] > after and query.matches(e[2], e[3])), None)
    assert pending.first_match(query, after) == want
    assert (pending.first, pending.last, len(pending)) == (live[0][0], pos - 1, len(live))
    assert pending.entries == live
    ids = pending.ids
    assert all(ids[e[1]] == e[0] for e in live)
    truth = {e[1]: e[0] for e in entries}
    assert all(truth[i] == p for i, p in ids.items())  # a dropped id may linger, at its true position


def test_dropping_raw_records_does_not_parse_them() -> None:
    """Another writer's records dropped once indexed are cut from the bytes, never parsed (with
    eight writers, parsing each other's records was most of an append's CPU time)."""
    pending = Pending()
    raw, sizes, _chain, _entries = encoded_batch(1, record.GENESIS, [("A", [f"t{i}"], {"n": i}) for i in range(6)])
    pending.add_raw(1, raw, spans_of(sizes))
    pending.drop_through(4)
    assert not pending._entries and len(pending._spans) == 2  # still raw, the first four cut away
    assert (pending.first, pending.last) == (5, 6)
    assert pending.first_match(Query([QueryItem(tags=["t5"])]), 0) == 6
    assert pending.first_match(Query([QueryItem(tags=["t2"])]), 0) is None
    assert [e[0] for e in pending.entries] == [5, 6]


@pytest.fixture(autouse=True)
def _rebuild_threshold():
    saved = pending_mod.REBUILD_AFTER
    yield
    pending_mod.REBUILD_AFTER = saved


def test_own_records_are_kept_parsed_unless_raw_ones_wait_before_them() -> None:
    """A writer alone keeps its own records parsed (the next condition looks them up instead of
    searching bytes); behind other writers' raw records they stay raw, in order."""
    def batch(first: int, tags: list[str]) -> tuple[bytes, list[int], list]:
        raw, sizes, _chain, entries = encoded_batch(first, record.GENESIS, [("A", [t], 1) for t in tags])
        return raw, sizes, entries

    pending = Pending()
    raw, sizes, mine = batch(1, ["a", "b"])
    pending.add_own(1, raw, sizes, record.HEADER, lambda: mine)
    assert pending._entries == mine and not pending._spans
    raw, sizes, others = batch(3, ["c"])
    pending.add_raw(3, raw, [(0, sizes[0], record.HEADER)])
    raw, sizes, mine2 = batch(4, ["d", "a"])
    pending.add_own(4, raw, sizes, record.HEADER, lambda: pytest.fail("parsed while raw records wait"))
    assert len(pending._spans) == 3 and pending.last == 5
    assert pending.first_match(Query([QueryItem(tags=["a"])]), 1) == 5
    assert pending.entries == mine + others + mine2
