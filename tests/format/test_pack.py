"""The pack file of format 3: round trips over random record runs and block sizes, reads by
position and by range, and verify() catching any flipped byte, truncation or bad input."""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops import fileio
from kroniko_ops.format import pack, record

_ALPHABET = "abcdefghij0123456789 {}:,\"\\é"


def make_records(first: int, sizes: list[int], batch_ends: set[int], seed: int = 0) -> tuple[list[bytes], bytes]:
    """The raw records of positions ``first..`` with bodies of ``sizes`` bytes-ish, cut into
    batches after the indexes in ``batch_ends`` (and after the last), and the last chain."""
    rnd = random.Random(seed)
    out: list[bytes] = []
    chain = record.GENESIS
    batch: list[tuple[str, bytes]] = []
    for i, size in enumerate(sizes):
        text = "".join(rnd.choices(_ALPHABET, k=size)).replace("\\", "/").replace('"', "'")
        batch.append((f"ev-{first + i}", f'{{"d":"{text}"}}'.encode()))
        if i in batch_ends or i == len(sizes) - 1:
            raw, rec_sizes, chain = record.encode(first + len(out), chain, batch)
            at = 0
            for n in rec_sizes:
                out.append(raw[at:at + n])
                at += n
            batch = []
    return out, chain


def runs_of(recs: list[bytes], first: int, cuts: list[int]) -> list[tuple[int, bytes]]:
    """The records cut into runs at the record indexes ``cuts``."""
    bounds = sorted({0, len(recs), *(c % (len(recs) + 1) for c in cuts)})
    return [(first + a, b"".join(recs[a:b])) for a, b in itertools.pairwise(bounds) if a < b]


def build(path: Path, first: int = 1, n: int = 40, block: int = 1024, seed: int = 1) -> list[bytes]:
    """A pack of ``n`` records of varied sizes at ``path``; returns the records."""
    rnd = random.Random(seed)
    sizes = [rnd.choice([0, 10, 100, 400, 3000]) for _ in range(n)]
    recs, chain = make_records(first, sizes, {i for i in range(n) if rnd.random() < 0.3}, seed)
    pack.write_pack(str(path), runs_of(recs, first, [5, 17, 18]), chain, block)
    return recs


@st.composite
def packs(draw: st.DrawFn) -> tuple[int, list[int], set[int], list[int], int, int]:
    """(first, body sizes, batch ends, run cuts, block bytes, seed)."""
    n = draw(st.integers(1, 50))
    sizes = draw(st.lists(st.one_of(st.integers(0, 300), st.integers(1000, 5000)), min_size=n, max_size=n))
    ends = set(draw(st.lists(st.integers(0, n - 1), max_size=n)))
    cuts = draw(st.lists(st.integers(0, n), max_size=6))
    block = draw(st.sampled_from([1, 200, 700, 4096, 65536]))
    return draw(st.integers(1, 10**9)), sizes, ends, cuts, block, draw(st.integers(0, 1000))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=packs(), data=st.data())
def test_round_trip(tmp_path: Path, spec: tuple, data: st.DataObject) -> None:
    first, sizes, ends, cuts, block, seed = spec
    recs, chain = make_records(first, sizes, ends, seed)
    path = tmp_path / f"{os.urandom(6).hex()}.pack"
    info = pack.write_pack(str(path), runs_of(recs, first, cuts), chain, block)
    last = first + len(recs) - 1
    assert (info.first, info.last, info.count, info.last_chain) == (first, last, len(recs), chain)
    assert info.size == path.stat().st_size
    with pack.PackReader(path) as reader:
        assert (reader.first, reader.last, reader.count, reader.last_chain) == (first, last, len(recs), chain)
        assert reader.verify() == []
        for b in reader.blocks:  # whole records only, at most one block's worth unless one big record
            assert b.ulen <= block or b.count == 1
        for i, raw in enumerate(recs):
            rec = reader.record(first + i)
            assert dataclasses.replace(rec, offset=0) == record.parse_at(raw)
            assert b"".join(reader.read_range(first + i, first + i)) == raw
        lo = data.draw(st.integers(first, last))
        hi = data.draw(st.integers(lo, last))
        chunks = list(reader.read_range(lo, hi))
        assert b"".join(chunks) == b"".join(recs[lo - first:hi - first + 1])
        assert all(c.endswith(b"\n") for c in chunks)
        assert list(reader.bodies_range(lo, hi)) == [record.parse_at(r).body for r in recs[lo - first:hi - first + 1]]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a small pack of several blocks (and its records' big ones)."""
    path = tmp_path_factory.mktemp("sample") / pack.name_of(7, 36)
    build(path, first=7, n=30, block=900)
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


def test_sample_is_sound_and_every_byte_counts(sample: bytes, tmp_path: Path) -> None:
    path = tmp_path / "ok.pack"
    path.write_bytes(sample)
    assert pack.verify_file(path) == []
    with pack.PackReader(path) as reader:
        assert len(reader.blocks) > 3
        with pytest.raises(IndexError):
            reader.record(6)
        with pytest.raises(IndexError):
            list(reader.read_range(30, 37))
        assert list(reader.read_range(9, 8)) == []


def test_record_bigger_than_a_block_gets_its_own(tmp_path: Path) -> None:
    recs, chain = make_records(1, [10, 10, 5000, 10, 6000, 6000], {1, 3})
    info = pack.write_pack(str(tmp_path / "big.pack"), [(1, b"".join(recs))], chain, block_bytes=1000)
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


def test_writer_refuses_bad_runs(tmp_path: Path) -> None:
    recs, _ = make_records(1, [10] * 6, {2})
    cases = [
        ([(1, recs[0][:-1])], "whole record"),
        ([(1, b"".join(recs[:2])), (4, b"".join(recs[3:]))], "expected 3"),
        ([(2, b"".join(recs))], "expected 2"),
        ([(1, b"".join(recs[:2]))], "commit mark"),
        ([(1, b"".join([recs[0], recs[2], *recs[3:]]))], "block holds"),
        ([(1, b"".join(recs))], "last chain"),
        ([], "at least one record"),
    ]
    for i, (runs, message) in enumerate(cases):
        with pytest.raises(pack.PackError, match=message):
            pack.write_pack(str(tmp_path / f"{i}.pack"), runs, bytes(32) if message == "last chain" else None, 1 << 20)
    with pytest.raises(FileExistsError):
        pack.PackWriter(str(tmp_path / "0.pack"))


def test_writer_on_a_descriptor_goes_through_fileio(tmp_path: Path) -> None:
    recs, chain = make_records(1, [50] * 20, set())
    path = str(tmp_path / "fd.pack")
    fd = fileio.open_write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        writer = pack.PackWriter(fd, block_bytes=300, name=path)
        for i, raw in enumerate(recs):
            writer.add(raw, i + 1)
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
            pack.write_pack(str(tmp_path / "faulty.pack"), [(1, b"".join(recs))], chain, 300)
    finally:
        fileio.set_fault_injector(previous)
    assert calls[0] == ("open", str(tmp_path / "faulty.pack"))


def test_verify_reads_every_record(tmp_path: Path) -> None:
    """Damage no CRC sees, because the pack was written from bad records: the writer checks
    only each block's ends, verify() checks each record."""
    good, _ = make_records(1, [20] * 6, set())
    other, _ = make_records(4, [20] * 3, set(), seed=9)
    wrong_hash, _, _ = record.encode(1, record.GENESIS, [("a", b"{}"), ("b", b"[]")], [bytes(32)] * 2)
    cases = [
        (b"".join([*good[:3], *other]), "record 4 breaks the chain"),
        (b"".join([good[0], good[2], good[1], *good[3:]]), "record 3 where 2 belongs"),
        (wrong_hash, "record 1 fails its event hash"),
    ]
    for i, (run, message) in enumerate(cases):
        path = tmp_path / f"{i}.pack"
        pack.write_pack(str(path), [(1, run)], block_bytes=1 << 20)
        assert any(message in p for p in pack.verify_file(path)), (message, pack.verify_file(path))
