"""Record header versions: version 2 carries each batch's commit time; version 1 records (228-byte
headers, written before commit times were recorded) stay readable beside version 2 ones, in the
record functions, in a store's reads, appends and fsck. Commit times never decrease along the log."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import kroniko_ops.writer as writer_module
from kroniko_ops import Event, EventStore, Query, QueryItem, fsck
from kroniko_ops.codec import encode_event
from kroniko_ops.format import record

ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=64)
# Canonical JSON never holds a raw newline, which frames records in a run.
bodies = st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" "))


def encode_v1(first: int, previous: bytes, items: list[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    """Records as version 1 wrote them (no commit time), built here by hand from the format."""
    out, chain = [], previous
    for i, (eid, body) in enumerate(items):
        digest = hashlib.sha256(body).digest()
        chain = hashlib.sha256(chain + digest).digest()
        head = b"%012d %-64s %s %s %c %08d " % (first + i, eid.encode(), digest.hex().encode(),
                                                chain.hex().encode(), 67 if i == len(items) - 1 else 45, len(body))
        out.append(b"%s%08x %s\n" % (head, zlib.crc32(head), body))
    return b"".join(out), chain


@settings(max_examples=100, deadline=None)
@given(old=st.lists(st.tuples(ids, bodies), min_size=1, max_size=4),
       new=st.lists(st.tuples(ids, bodies), min_size=1, max_size=4),
       stamp=st.integers(0, record.MAX_TIME_US))
def test_version_1_then_version_2_records_parse_as_one_run(old: list[tuple[str, bytes]],
                                                           new: list[tuple[str, bytes]], stamp: int) -> None:
    v1, chain = encode_v1(1, record.GENESIS, old)
    v2, _sizes, last = record.encode(len(old) + 1, chain, new, time_us=stamp)
    run = v1 + v2
    recs = list(record.iter_records(run))
    assert [(r.event_id, r.body) for r in recs] == old + new
    assert [r.time for r in recs] == [0] * len(old) + [stamp] * len(new)
    assert recs[-1].chain == last
    assert record.bodies(run) == [b for _, b in old + new]
    # fsck's bulk check sees no problem in a mixed run, and ends on the same chain
    _ids, bodies, end_chain, problems = record.check_run(run, 1, record.GENESIS)
    assert problems == [] and end_chain == last and bodies == [b for _, b in old + new]
    # one group per batch: the version 1 batch (no time) and the version 2 one
    assert record.commits(run) == [(len(old) - 1, 0, True), (len(old) + len(new) - 1, stamp, True)]
    heads = record.headers_only(run)
    assert [len(h) for h in heads] == [record.HEADER_V1] * len(old) + [record.HEADER] * len(new)
    assert [record.parse_header(h).time for h in heads] == [0] * len(old) + [stamp] * len(new)


def test_every_byte_of_a_version_2_header_is_checked() -> None:
    data, _sizes, _chain = record.encode(7, record.GENESIS, [("e", b'{"a":1}')], time_us=1_796_000_000_123_456)
    assert record.parse_at(data).time == 1_796_000_000_123_456
    for at in range(record.HEADER):
        bad = bytearray(data)
        bad[at] ^= 0x01
        try:
            rec = record.parse_at(bytes(bad))
        except record.RecordError:
            continue
        raise AssertionError(f"a changed byte {at} of the header went unnoticed: {rec}")


def test_a_commit_time_out_of_range_is_refused() -> None:
    for bad in (-1, record.MAX_TIME_US + 1):
        try:
            record.encode(1, record.GENESIS, [("e", b"{}")], time_us=bad)
        except ValueError as exc:
            assert "commit time" in str(exc)
        else:
            raise AssertionError(f"time {bad} was encoded")


def test_reads_carry_commit_times_and_batch_ends(tmp_path: Path) -> None:
    with EventStore(str(tmp_path / "s"), durable=False) as s:
        s.append([Event("A", 1, tags=["x"]), Event("B", 2), Event("C", 3, tags=["x"])])
        s.append(Event("D", 4, tags=["x"]))
        every = list(s.read())
        assert [e.batch_end for e in every] == [False, False, True, True]
        assert every[0].commit_us == every[1].commit_us == every[2].commit_us <= every[3].commit_us
        assert every[0].committed_at is not None and every[0].committed_at.tzinfo is not None
        # the same through the index, backwards, from the unindexed tail, one at a time
        tagged = list(s.read(Query([QueryItem(tags=["x"])])))
        assert [(e.position, e.batch_end, e.commit_us) for e in tagged] == \
            [(e.position, e.batch_end, e.commit_us) for e in every if "x" in e.tags]
        back = list(s.read(backwards=True, limit=2))
        assert [(e.position, e.batch_end) for e in back] == [(4, True), (3, True)]


def test_commit_times_never_decrease_even_when_the_clock_steps_back(tmp_path: Path, monkeypatch) -> None:
    path = str(tmp_path / "s")
    with EventStore(path, durable=False) as s:
        s.append(Event("A", 1))
        first = next(iter(s.read())).commit_us

    class Past:  # a clock stepped back an hour
        @staticmethod
        def time_ns() -> int:
            return (first - 3_600_000_000) * 1000

    monkeypatch.setattr(writer_module, "time", Past)
    with EventStore(path, durable=False) as s:  # a new handle: the last time comes from the log
        s.append(Event("B", 2))
        s.append(Event("C", 3))
        times = [e.commit_us for e in s.read()]
    assert times == [first, first, first]


def test_a_store_with_version_1_records_reads_appends_and_checks(tmp_path: Path) -> None:
    path = str(tmp_path / "old")
    EventStore(path, durable=False).close()
    events = [Event("Old", {"n": i}, tags=[f"t:{i % 2}"], id=f"old-{i}") for i in range(5)]
    items = [encode_event(e) for e in events]
    # Two version 1 batches, as a store written before commit times would hold them.
    first, chain = encode_v1(1, record.GENESIS, items[:3])
    second, _chain = encode_v1(4, chain, items[3:])
    with open(os.path.join(path, "log", "000000000001.seg"), "wb") as f:
        f.write(first + second)
    with open(os.path.join(path, "locks", "synced"), "wb"):
        pass  # no hint: the engine verifies the log from its start, as after a reboot
    with EventStore(path, durable=False) as s:
        got = list(s.read())
        assert [e.id for e in got] == [e.id for e in events]
        assert [e.commit_us for e in got] == [0] * 5 and [e.committed_at for e in got] == [None] * 5
        assert [e.batch_end for e in got] == [False, False, True, False, True]
        s.append(Event("New", 1, tags=["t:0"]))
        assert [e.position for e in s.read(Query([QueryItem(tags=["t:0"])]))] == [1, 3, 5, 6]
        assert list(s.read())[-1].commit_us > 0
    report = fsck(path)
    assert report.exit_code == 0, [f.code for f in report.findings]
