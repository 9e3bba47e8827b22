"""The inside of a dense pack block, for all inputs: a payload decodes to the bodies and batches
it was made of, any span of it gives the batches the same records would, and events decoded
from a span are the events decoded one by one."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from kroniko_ops.codec import decode_event, decode_run
from kroniko_ops.format import packblock, record

T0 = 1_796_000_000_000_000


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[bytes], list[tuple[int, int, bool]], bytes]:
    """Bodies of events, their batches (the last maybe unfinished) and the raw records."""
    n = draw(st.integers(1, 40))
    bodies = [orjson.dumps({"data": draw(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20),
                                                   st.lists(st.integers(0, 99), max_size=3))),
                            "id": f"e{i}", "metadata": None, "tags": draw(st.lists(st.text(max_size=5), max_size=3)),
                            "type": "T"}, option=orjson.OPT_SORT_KEYS) for i in range(n)]
    cuts = sorted(set(draw(st.lists(st.integers(0, n - 1), max_size=n))) | {n - 1})
    raw, chain, k = b"", record.GENESIS, 0
    for g, last in enumerate(cuts):
        items = [(f"e{i}", bodies[i]) for i in range(k, last + 1)]
        data, _sizes, chain = record.encode(k + 1, chain, items, time_us=T0 + g)
        raw += data
        k = last + 1
    if draw(st.booleans()) and n > 1:  # a run ending inside a batch, as a block may
        cut = draw(st.integers(1, n - 1))
        raw = raw[:sum(len(line) + 1 for line in raw.split(b"\n")[:cut])]
        bodies = bodies[:cut]
    return bodies, record.commits(raw), raw


@settings(max_examples=200, deadline=None)
@given(run=runs(), data=st.data())
def test_a_payload_and_its_spans_hold_what_went_in(run: tuple, data: st.DataObject) -> None:
    bodies, commits, raw = run
    d = packblock.decode(packblock.encode(bodies, commits), 1, len(bodies))
    assert list(d.bodies) == bodies and d.commits == commits
    assert orjson.loads(d.array) == [orjson.loads(b) for b in bodies]
    a = data.draw(st.integers(1, len(bodies)))
    b = data.draw(st.integers(a, len(bodies)))
    first, span_bodies, span_commits, _array = d.span(a, b)
    lines = raw.split(b"\n")[a - 1:b]
    assert first == a and list(span_bodies) == bodies[a - 1:b]
    assert span_commits == record.commits(b"\n".join(lines) + b"\n")


@settings(max_examples=200, deadline=None)
@given(run=runs(), data=st.data())
def test_decoding_a_span_is_decoding_each_event(run: tuple, data: st.DataObject) -> None:
    bodies, commits, _raw = run
    positions = sorted(data.draw(st.sets(st.integers(1, 10**6), min_size=len(bodies), max_size=len(bodies))))
    events = decode_run(0, bodies, "", commits, positions=positions)
    ends = {last for last, _t, e in commits if e}
    times = [next(stamp for last, stamp, _e in commits if last >= i) for i in range(len(bodies))]
    assert [(e.position, e.event, e.commit_us, e.batch_end) for e in events] == \
        [(positions[i], decode_event(b), times[i], i in ends) for i, b in enumerate(bodies)]
    whole = decode_run(7, bodies, "", commits, b"[" + b",".join(bodies) + b"]")
    assert [e.position for e in whole] == list(range(7, 7 + len(bodies))) and [e.event for e in whole] == \
        [e.event for e in events]


@settings(max_examples=200, deadline=None)
@given(run=runs(), data=st.data())
def test_point_reads_of_a_cached_block_are_exact_and_never_work_out_every_offset(run: tuple,
                                                                                 data: st.DataObject) -> None:
    """A block kept in the cache serves point reads again and again (an entity's events, each in
    its own block): each one adds up the lengths before its body, whatever was read before, and
    gets exactly that event's bytes."""
    bodies, commits, _raw = run
    d = packblock.decode(packblock.encode(bodies, commits), 1, len(bodies))
    for i in data.draw(st.lists(st.integers(-len(bodies), len(bodies) - 1), min_size=1, max_size=6)):
        assert d.bodies[i] == bodies[i]
    a = data.draw(st.integers(0, len(bodies)))
    b = data.draw(st.integers(a, len(bodies)))
    assert d.bodies[a:b] == bodies[a:b]
    assert d.bodies._starts is None  # no point read paid for every offset of the block
    assert list(d.bodies) == bodies and d.bodies[a:b] == bodies[a:b]  # iterating works them out, same bytes
