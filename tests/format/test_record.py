"""The record of format 3: encode/parse round trips for any ids and bodies, every single-byte
change caught (header CRC or body hash), torn prefixes told apart from damage, and canonical JSON
never holding the newline that frames a record."""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kroniko_ops import Event
from kroniko_ops.codec import encode_event
from kroniko_ops.format import record

ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
ids = st.text(ID_CHARS, min_size=1, max_size=64)
# parse_at frames by the header's length, so any bytes round-trip, newlines included.
raw_bodies = st.binary(max_size=600)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    """The records of an encoded batch, one by one."""
    out, at = [], 0
    for n in sizes:
        out.append(data[at:at + n])
        at += n
    assert at == len(data)
    return out


@settings(max_examples=200, deadline=None)
@given(first=st.integers(1, 10**11), previous=st.binary(min_size=32, max_size=32),
       items=st.lists(st.tuples(ids, raw_bodies), min_size=1, max_size=8))
def test_encode_then_parse_round_trips(first: int, previous: bytes, items: list[tuple[str, bytes]]) -> None:
    data, sizes, last_chain = record.encode(first, previous, items)
    recs = list(record.iter_records(data))
    assert [r.size for r in recs] == sizes
    assert [(r.event_id, r.body) for r in recs] == items
    assert [r.position for r in recs] == list(range(first, first + len(items)))
    assert [r.commit for r in recs] == [False] * (len(items) - 1) + [True]  # the last one commits the batch
    chain = previous
    for r, (_eid, body) in zip(recs, items, strict=True):
        assert r.event_hash == hashlib.sha256(body).digest() and record.body_hash_ok(r)
        chain = record.chain_of(chain, r.event_hash)
        assert r.chain == chain
    assert last_chain == chain
    assert all(len(raw) == record.HEADER + len(body) + 1 and raw.endswith(b"\n")
               for raw, (_eid, body) in zip(split(data, sizes), items, strict=True))
    # Offsets are where each record starts, shifted by ``base``; a record parsed alone is the same.
    starts = [0]
    for n in sizes[:-1]:
        starts.append(starts[-1] + n)
    assert [r.offset for r in record.iter_records(data, 0, 1000)] == [s + 1000 for s in starts]
    for raw, r in zip(split(data, sizes), recs, strict=True):
        assert record.parse_at(raw) == record.Record(r.position, r.event_id, r.event_hash, r.chain, r.commit,
                                                     r.body, 0, r.size)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(st.tuples(ids, json_values.map(lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS))),
                      min_size=1, max_size=6))
def test_bodies_and_headers_split_a_run_of_canonical_json(items: list[tuple[str, bytes]]) -> None:
    data, _sizes, _chain = record.encode(5, record.GENESIS, items)
    assert record.bodies(data) == [body for _eid, body in items]
    heads = [record.parse_header(h) for h in record.headers_only(data)]
    assert [(h.position, h.event_id, h.commit) for h in heads] == [
        (5 + i, eid, i == len(items) - 1) for i, (eid, _body) in enumerate(items)]


@settings(max_examples=200, deadline=None)
@given(value=json_values, tags=st.lists(st.text(), max_size=3), type_=st.text(min_size=1),
       meta=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3))
def test_the_codec_never_writes_a_raw_newline(value: Any, tags: list[str], type_: str, meta: Any) -> None:
    # Control characters in any string come out escaped: a segment can be split on b"\n".
    try:
        _eid, raw = encode_event(Event(type_, value, tags, meta))
    except Exception:  # lone surrogates: refused by the codec, nothing to frame
        return
    assert b"\n" not in raw and b"\r" not in raw and b"\x00" not in raw
    data, _sizes, _chain = record.encode(1, record.GENESIS, [("x", raw)])
    assert data.count(b"\n") == 1


SAMPLE_ITEMS = [("order-1.a_B", b'{"data":{"n":1,"s":"caf\xc3\xa9"},"id":"order-1.a_B"}'), ("x" * 64, b"{}")]


@pytest.fixture(scope="module")
def sample() -> list[bytes]:
    """Two records of one batch: one with a body, one with a short body and the commit mark."""
    data, sizes, _chain = record.encode(42, hashlib.sha256(b"previous").digest(), SAMPLE_ITEMS)
    return split(data, sizes)


def _detected(raw: bytes | bytearray) -> bool:
    """Whether a reader refuses these bytes as the record they claim to be."""
    try:
        rec = record.parse_at(bytes(raw))
    except record.RecordError:
        return True
    return not record.body_hash_ok(rec)


def test_every_single_byte_change_is_detected(sample: list[bytes]) -> None:
    for raw in sample:
        assert not _detected(raw)
        missed = []
        for at in range(len(raw)):
            for value in range(256):
                if value == raw[at]:
                    continue
                damaged = bytearray(raw)
                damaged[at] = value
                if not _detected(damaged):
                    missed.append((at, chr(raw[at]), chr(value)))
        assert missed == [], f"{len(missed)} single-byte changes went unnoticed, e.g. {missed[:5]}"


def test_every_header_change_fails_the_header_checksum(sample: list[bytes]) -> None:
    # Damage in the header is found without the body: by the CRC (or its own field not matching).
    raw = sample[0]
    for at in range(record.HEADER):
        damaged = bytearray(raw)
        damaged[at] ^= 0x01
        with pytest.raises(record.RecordError) as info:
            record.parse_at(bytes(damaged))
        assert not info.value.torn or at in range(210, 218)  # a longer length reads as cut short


@pytest.mark.parametrize("which", [0, 1])
def test_every_prefix_is_torn(sample: list[bytes], which: int) -> None:
    raw = sample[which]
    for k in range(len(raw)):
        with pytest.raises(record.RecordError) as info:
            record.parse_at(raw[:k])
        assert info.value.torn, f"a prefix of {k} bytes was reported as damage"


def test_a_torn_batch_yields_its_whole_records_then_stops_torn(sample: list[bytes]) -> None:
    data = b"".join(sample)
    for k in range(len(sample[0]) + 1, len(data)):
        got = []
        with pytest.raises(record.RecordError) as info:
            for rec in record.iter_records(data[:k]):
                got.append(rec.position)
        assert got == [42] and info.value.torn


def test_garbage_is_damage_not_torn() -> None:
    for junk in (b"x" * 300, bytes(300), b"000000000001 " + b" " * 300):
        with pytest.raises(record.RecordError) as info:
            record.parse_at(junk)
        assert not info.value.torn
    with pytest.raises(record.RecordError):
        record.parse_header(b"z" * record.HEADER)


def test_a_header_inside_a_body_is_only_data(sample: list[bytes]) -> None:
    # A body that holds a whole record (header lookalike and all) is framed by its own length.
    inner = sample[1][:-1]
    data, _sizes, _ = record.encode(1, record.GENESIS, [("outer", inner), ("next", b"{}")])
    recs = list(record.iter_records(data))
    assert [(r.position, r.event_id, r.body) for r in recs] == [(1, "outer", inner), (2, "next", b"{}")]


@pytest.mark.parametrize("stamp", [b" 000000000000012", b"+000000000000012", b"0000_00000000012", b"00000000000001x2"])
def test_a_followed_records_time_must_be_as_written(stamp: bytes) -> None:
    """A writer following another's records takes the last one's chain and commit time from its
    header: a checksummed header whose time field is not 16 digits (only a buggy writer makes
    one) is not taken, as a full parse would not take it either."""
    encoded = [encode_event(Event("A", {"n": 1}, ["t"]))]
    raw, _sizes, chain = record.encode(1, record.GENESIS, encoded, time_us=12)
    assert record.chain_and_time(raw, 0, record.HEADER) == (chain, 12)
    head = raw[:219] + stamp + raw[235:236]
    bad = head + b"%08x" % zlib.crc32(head) + raw[244:]
    with pytest.raises(record.RecordError):
        record.parse_at(bad)
    assert record.chain_and_time(bad, 0, record.HEADER) is None
