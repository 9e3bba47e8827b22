"""The pack file: the dense version 4 over random events, batches, commit times and block sizes
(round trips to the exact records, reads by position, range and block), any flipped byte,
truncation or forged block found by verify(), bad input refused by the writer; version 3 packs
still read and verified."""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops import fileio
from kroniko_ops.format import pack, packwrite, record

_ALPHABET = "abcdefghij0123456789 {}:,é\u2028"
T0 = 1_796_000_000_000_000


def v1_records(first: int, previous: bytes, items: list[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    """Records as header version 1 wrote them (no commit time), built by hand from the format."""
    import hashlib

    out, chain = [], previous
    for i, (eid, body) in enumerate(items):
        digest = hashlib.sha256(body).digest()
        chain = hashlib.sha256(chain + digest).digest()
        head = b"%012d %-64s %s %s %c %08d " % (first + i, eid.encode(), digest.hex().encode(),
                                                chain.hex().encode(), 67 if i == len(items) - 1 else 45, len(body))
        out.append(b"%s%08x %s\n" % (head, zlib.crc32(head), body))
    return b"".join(out), chain


def make_records(first: int, sizes: list[int], batch_ends: set[int], seed: int = 0, old: int = 0,
                 before: bytes = record.GENESIS) -> tuple[list[bytes], bytes]:
    """The raw records of positions ``first..`` whose JSON is about ``sizes`` bytes, cut into
    batches after the indexes in ``batch_ends`` (and after the last); the first ``old`` batches
    in header version 1 (no commit time), the others with increasing commit times. Returns the
    records and the last chain."""
    rnd = random.Random(seed)
    out: list[bytes] = []
    chain = before
    batch: list[tuple[str, bytes]] = []
    batches = 0
    for i, size in enumerate(sizes):
        text = "".join(rnd.choices(_ALPHABET, k=size))
        eid = f"ev-{first + i}"
        body = record_body(eid, text)
        batch.append((eid, body))
        if i in batch_ends or i == len(sizes) - 1:
            if batches < old:
                raw, chain = v1_records(first + len(out), chain, batch)
                rec_sizes = [len(r) + 1 for r in raw.split(b"\n")[:-1]]
            else:
                raw, rec_sizes, chain = record.encode(first + len(out), chain, batch, time_us=T0 + 1000 * batches)
            at = 0
            for n in rec_sizes:
                out.append(raw[at:at + n])
                at += n
            batch = []
            batches += 1
    return out, chain


def record_body(eid: str, text: str) -> bytes:
    """Canonical-looking JSON of an event (as orjson writes it: sorted keys, no spaces)."""
    import orjson

    return orjson.dumps({"data": {"d": text}, "id": eid, "metadata": None, "tags": ["t"], "type": "T"},
                        option=orjson.OPT_SORT_KEYS)


def runs_of(recs: list[bytes], first: int, cuts: list[int]) -> list[tuple[int, bytes]]:
    """The records cut into runs at the record indexes ``cuts``."""
    bounds = sorted({0, len(recs), *(c % (len(recs) + 1) for c in cuts)})
    return [(first + a, b"".join(recs[a:b])) for a, b in itertools.pairwise(bounds) if a < b]


def build(path: Path, n: int = 40, block: int = 1024, seed: int = 1) -> list[bytes]:
    """A pack of ``n`` events of varied sizes from position 1 at ``path``; returns their records."""
    rnd = random.Random(seed)
    sizes = [rnd.choice([0, 10, 100, 400, 3000]) for _ in range(n)]
    recs, chain = make_records(1, sizes, {i for i in range(n) if rnd.random() < 0.3}, seed)
    packwrite.write_pack(str(path), runs_of(recs, 1, [5, 17, 18]), chain, block)
    return recs


@st.composite
def packs(draw: st.DrawFn) -> tuple[int, list[int], set[int], list[int], int, int, int]:
    """(first, body sizes, batch ends, run cuts, block bytes, seed, version 1 batches)."""
    n = draw(st.integers(1, 50))
    sizes = draw(st.lists(st.one_of(st.integers(0, 300), st.integers(1000, 5000)), min_size=n, max_size=n))
    ends = set(draw(st.lists(st.integers(0, n - 1), max_size=n)))
    cuts = draw(st.lists(st.integers(0, n), max_size=6))
    block = draw(st.sampled_from([1, 200, 700, 4096, 65536]))
    return (draw(st.integers(1, 10**9)), sizes, ends, cuts, block, draw(st.integers(0, 1000)),
            draw(st.integers(0, 3)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=packs(), data=st.data())
def test_round_trip(tmp_path: Path, spec: tuple, data: st.DataObject) -> None:
    first, sizes, ends, cuts, block, seed, old = spec
    before = bytes(range(32)) if first > 1 else record.GENESIS
    recs, chain = make_records(first, sizes, ends, seed, old, before)
    path = tmp_path / f"{os.urandom(6).hex()}.pack"
    info = packwrite.write_pack(str(path), runs_of(recs, first, cuts), chain, block, chain_before=before)
    last = first + len(recs) - 1
    assert (info.first, info.last, info.count, info.last_chain) == (first, last, len(recs), chain)
    assert info.size == path.stat().st_size
    with pack.PackReader(path) as reader:
        assert (reader.version, reader.first, reader.last, reader.count, reader.last_chain, reader.chain_before) == \
            (4, first, last, len(recs), chain, before)
        assert reader.verify() == []
        for b in reader.blocks:  # whole events only, at most one block's worth unless one big event
            assert b.ulen <= block + 5 + 13 * b.count or b.count == 1
        # Every record comes back exactly as it was in its segment: ids, hashes, chain, marks, times.
        assert b"".join(reader.read_range(first, last)) == b"".join(recs)
        for i, raw in enumerate(recs):
            rec = reader.record(first + i)
            assert dataclasses.replace(rec, offset=0) == record.parse_at(raw)
        lo = data.draw(st.integers(first, last))
        hi = data.draw(st.integers(lo, last))
        want = b"".join(recs[lo - first:hi - first + 1])
        assert b"".join(reader.read_range(lo, hi)) == want
        spans = list(reader.spans(lo, hi))
        assert [b for s in spans for b in s[1]] == record.bodies(want)
        # the batches of each span are those of its records
        at = lo
        for s_first, bodies, commits, _array in spans:
            assert s_first == at
            assert commits == record.commits(b"".join(recs[at - first:at - first + len(bodies)]))
            at += len(bodies)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a small pack of several blocks (and its records' big ones)."""
    path = tmp_path_factory.mktemp("sample") / pack.name_of(1, 30)
    build(path, n=30, block=900)
    return path.read_bytes()


@settings(max_examples=400, deadline=None)
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_any_flipped_byte_is_found(sample: bytes, tmp_path_factory: pytest.TempPathFactory, where: float,
                                   mask: int) -> None:
    at = int(where * len(sample))
    damaged = bytearray(sample)
    damaged[at] ^= mask
    path = tmp_path_factory.getbasetemp() / "flipped.pack"
    path.write_bytes(damaged)
    assert pack.verify_file(path), f"byte {at} ^ {mask:#x} went unnoticed"


def test_every_truncation_and_extension_is_found(sample: bytes, tmp_path: Path) -> None:
    path = tmp_path / "cut.pack"
    for size in [*range(0, len(sample), 7), len(sample) - 1]:
        path.write_bytes(sample[:size])
        problems = pack.verify_file(path)
        assert problems and str(path) in problems[0]
    path.write_bytes(sample + b"\0")
    with pytest.raises(pack.PackError, match="trailer"):
        pack.PackReader(path)


def _retrailer(data: bytes, **change: int) -> bytes:
    """``data`` with its trailer's fields changed (and its CRC made right again)."""
    names = ["magic", "first", "last", "count", "blocks", "table", "table_crc", "chain", "sha", "crc"]
    fields = dict(zip(names, pack.TRAILER.unpack(data[-pack.TRAILER_SIZE:]), strict=True))
    fields.update(change)
    body = pack.TRAILER.pack(*fields.values())[:-4]
    return data[:-pack.TRAILER_SIZE] + body + struct.pack(">I", zlib.crc32(body))


def test_a_truncated_table_is_named(sample: bytes, tmp_path: Path) -> None:
    """A table that lost its last entry, under a trailer made consistent with it again."""
    fields = pack.TRAILER.unpack(sample[-pack.TRAILER_SIZE:])
    nblocks, table_offset = fields[4], fields[5]
    end = table_offset + 32 + (nblocks - 1) * pack.ENTRY_SIZE
    table = sample[table_offset:end]
    cut = _retrailer(sample[:end] + sample[-pack.TRAILER_SIZE:], blocks=nblocks - 1, table_crc=zlib.crc32(table))
    path = tmp_path / "short-table.pack"
    path.write_bytes(cut)
    with pytest.raises(pack.PackError, match=r"does not cover the pack|out of place|last chain"):
        pack.PackReader(path)
    # and one that says it holds more blocks than it does
    path.write_bytes(_retrailer(sample, blocks=nblocks + 1))
    with pytest.raises(pack.PackError, match="table"):
        pack.PackReader(path)


def test_a_block_whose_chain_does_not_continue_is_named(tmp_path: Path) -> None:
    """A writer given a wrong chain for one block (every CRC and the file's SHA-256 right): only
    recomputing the chain finds it, and names that block."""
    recs, _chain = make_records(1, [40] * 30, set(range(0, 30, 4)))
    ids, bodies, _commits = record.split(b"".join(recs))
    path = tmp_path / "forged.pack"
    with packwrite.PackWriter(str(path), record.GENESIS, block_bytes=600) as w:
        w.add(1, bodies[:10], record.commits(b"".join(recs[:10])), ids[:10])
        w.add(11, bodies[10:20], record.commits(b"".join(recs[10:20])), ids[10:20], chains=[bytes(32)] * 10)
        w.add(21, bodies[20:], record.commits(b"".join(recs[20:])), ids[20:])
        w.finish()
    problems = pack.verify_file(path)
    assert problems and all("chain recomputed" in p for p in problems), problems
    with pack.PackReader(path) as reader:
        bad = [i for i, b in enumerate(reader.blocks) if reader.check_block(i).problems]
        assert bad and all(reader.blocks[i].first <= 20 and reader.blocks[i].last >= 11 for i in bad)
        assert [code for code, _m in reader.check_block(bad[0]).problems] == ["chain-mismatch"]


def test_sample_is_sound_and_reads_are_bounded(sample: bytes, tmp_path: Path) -> None:
    path = tmp_path / "ok.pack"
    path.write_bytes(sample)
    assert pack.verify_file(path) == []
    with pack.PackReader(path) as reader:
        assert len(reader.blocks) > 3
        with pytest.raises(IndexError):
            reader.record(31)
        with pytest.raises(IndexError):
            list(reader.read_range(25, 37))
        assert list(reader.read_range(9, 8)) == []


def test_event_bigger_than_a_block_gets_its_own(tmp_path: Path) -> None:
    recs, chain = make_records(1, [10, 10, 5000, 10, 6000, 6000], {1, 3})
    info = packwrite.write_pack(str(tmp_path / "big.pack"), [(1, b"".join(recs))], chain, block_bytes=1000)
    with pack.PackReader(tmp_path / "big.pack") as reader:
        assert [(b.first, b.count) for b in reader.blocks] == [(1, 2), (3, 1), (4, 1), (5, 1), (6, 1)]
        assert info.blocks == 5 and reader.verify() == []
        assert [reader.record(p).size for p in range(1, 7)] == [len(r) for r in recs]


def test_names() -> None:
    assert pack.name_of(1, 42) == "000000000001-000000000042.pack"
    assert pack.parse_name("000000000001-000000000042.pack") == (1, 42)
    assert pack.parse_name(pack.name_of(5, 5)) == (5, 5)
    for bad in ["000000000042-000000000001.pack", "000000000000-000000000001.pack", "1-42.pack",
                "000000000001-000000000042.pack.tmp", "000000000001-000000000042.idx",
                "x000000000001-000000000042.pack", "000000000001-000000000042.pack\n",
                "pack-000000000001-000000000042.pack", ""]:
        assert pack.parse_name(bad) is None, bad


def test_writer_refuses_bad_input(tmp_path: Path) -> None:
    recs, chain = make_records(1, [10] * 6, {2})
    wrong_id, _s, _c = record.encode(1, record.GENESIS, [("a", record_body("b", "x"))], time_us=T0)
    not_json, _s, _c = record.encode(1, record.GENESIS, [("a", b'{"id":"a",')], time_us=T0)
    cases = [
        ([(1, b"".join(recs[:2])), (4, b"".join(recs[3:]))], "expected 3"),
        ([(1, b"".join(recs[:2]))], "commit mark"),
        ([(1, b"".join(recs))], "chain recomputed"),
        ([(1, wrong_id)], "does not hold the id 'a' of its record"),
    ]
    for i, (runs, message) in enumerate(cases):
        with pytest.raises(pack.PackError, match=message):
            packwrite.write_pack(str(tmp_path / f"{i}.pack"), runs, bytes(32) if "chain" in message else None, 1 << 20)
    with pytest.raises(pack.PackError, match="not all JSON"):  # events given without ids: their JSON is parsed
        with packwrite.PackWriter(str(tmp_path / "j.pack"), record.GENESIS) as w:
            w.add(1, record.bodies(not_json), record.commits(not_json))
            w.finish()
    with pytest.raises(pack.PackError, match="at least one"):
        packwrite.PackWriter(str(tmp_path / "e.pack"), record.GENESIS).finish()
    with pytest.raises(FileExistsError):
        packwrite.PackWriter(str(tmp_path / "e.pack"), record.GENESIS)
    with pytest.raises(pack.PackError, match="must be given"):
        packwrite.write_pack(str(tmp_path / "x.pack"), runs_of(recs, 1, [2])[1:], chain)


def test_writer_on_a_descriptor_goes_through_fileio(tmp_path: Path) -> None:
    recs, chain = make_records(1, [50] * 20, set())
    path = str(tmp_path / "fd.pack")
    fd = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        writer = packwrite.PackWriter(fd, record.GENESIS, block_bytes=300, name=path)
        for i, raw in enumerate(recs):
            writer.add_records(raw, i + 1)
        info = writer.finish()
        os.write(fd, b"")  # still open: the caller fsyncs and closes
    finally:
        os.close(fd)
    assert info.last_chain == chain and pack.verify_file(path) == []

    calls: list[tuple[str, str]] = []

    def injector(op: str, where: str) -> None:
        calls.append((op, where))
        if op == "write" and len(calls) > 3:
            raise OSError(5, "injected", where)

    previous = fileio.set_fault_injector(injector)
    try:
        with pytest.raises(OSError, match="injected"):
            packwrite.write_pack(str(tmp_path / "faulty.pack"), [(1, b"".join(recs))], chain, 300)
    finally:
        fileio.set_fault_injector(previous)
    assert calls[0] == ("open", str(tmp_path / "faulty.pack"))


def test_a_dense_pack_is_a_fraction_of_its_records(tmp_path: Path) -> None:
    """What the dense format is for: ids, hashes and headers are not stored, JSON compresses."""
    recs, chain = make_records(1, [60] * 2000, set(range(0, 2000, 10)))
    info = packwrite.write_pack(str(tmp_path / "d.pack"), [(1, b"".join(recs))], chain)
    assert info.size < 0.2 * sum(map(len, recs))


# -- version 3 -------------------------------------------------------------------------------

def test_version_3_packs_read_and_verify(tmp_path: Path, v3_pack) -> None:
    recs, chain = make_records(1, [random.Random(i).choice([10, 300, 2000]) for i in range(40)], {3, 9, 20}, old=1)
    path = tmp_path / pack.name_of(1, 40)
    v3_pack(str(path), b"".join(recs), block_bytes=2000)
    with pack.PackReader(path) as reader:
        assert (reader.version, reader.last_chain, reader.chain_before) == (3, chain, None)
        assert len(reader.blocks) > 3 and reader.verify() == []
        assert b"".join(reader.read_range(1, 40)) == b"".join(recs)
        assert b"".join(reader.read_range(7, 23)) == b"".join(recs[6:23])
        assert [b for s in reader.spans(5, 33) for b in s[1]] == record.bodies(b"".join(recs[4:33]))
        for p in (1, 17, 40):
            assert dataclasses.replace(reader.record(p), offset=0) == record.parse_at(recs[p - 1])
    data = bytearray(path.read_bytes())
    for at in range(8, len(data), max(1, len(data) // 50)):
        data[at] ^= 0x20
        path.write_bytes(bytes(data))
        assert pack.verify_file(path), f"byte {at} went unnoticed"
        data[at] ^= 0x20
