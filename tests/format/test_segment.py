"""Log segments of format 3: seal offsets round trip, the offset index refuses any tampering,
sealing a whole segment file and the writer's fast seal agree, and a sealed segment finds any
position in O(1) and verifies against its trailer."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kroniko_ops.format import record, segment


def write_segment(path: Path, first: int, bodies: list[bytes], batch_ends: set[int]) -> tuple[bytes, bytes]:
    """Records ``first..`` holding ``bodies``, in batches ending after the indexes in
    ``batch_ends`` (and at the last); returns the file's bytes and the last chain."""
    out, chain, batch = [], record.GENESIS, []
    pos = first
    for i, body in enumerate(bodies):
        batch.append((f"e-{first + i}", body))
        if i in batch_ends or i == len(bodies) - 1:
            data, _sizes, chain = record.encode(pos, chain, batch)
            out.append(data)
            pos += len(batch)
            batch = []
    raw = b"".join(out)
    path.write_bytes(raw)
    return raw, chain


def seal_of(path: Path, first: int) -> bytes:
    """The offset index bytes ``build_seal`` makes for the segment at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return segment.build_seal(fd, first, os.fstat(fd).st_size)
    finally:
        os.close(fd)


@settings(max_examples=150, deadline=None)
@given(first=st.integers(1, 10**11), gaps=st.lists(st.integers(1, 10**6), min_size=1, max_size=40),
       chain=st.binary(min_size=32, max_size=32), digest=st.binary(min_size=32, max_size=32))
def test_idx_round_trips(first: int, gaps: list[int], chain: bytes, digest: bytes) -> None:
    offsets = [0]
    for g in gaps:
        offsets.append(offsets[-1] + g)
    seal = segment.decode_idx(segment.encode_idx(first, offsets, chain, digest), first)
    assert (seal.first, seal.count, seal.last, seal.last_chain, seal.seg_sha256) == (
        first, len(gaps), first + len(gaps) - 1, chain, digest)
    assert list(seal.offsets) == offsets and seal.size == offsets[-1]


@pytest.fixture(scope="module")
def idx_bytes() -> bytes:
    """A small offset index."""
    return segment.encode_idx(11, [0, 300, 301, 900], b"c" * 32, b"s" * 32)


def test_idx_refuses_every_single_byte_change(idx_bytes: bytes) -> None:
    for at in range(len(idx_bytes)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(idx_bytes)
            damaged[at] ^= mask
            with pytest.raises(segment.SegmentError):
                segment.decode_idx(bytes(damaged), 11)


def test_idx_refuses_truncation_extension_and_the_wrong_segment(idx_bytes: bytes) -> None:
    for size in range(len(idx_bytes)):
        with pytest.raises(segment.SegmentError):
            segment.decode_idx(idx_bytes[:size], 11)
    with pytest.raises(segment.SegmentError):
        segment.decode_idx(idx_bytes + bytes(8), 11)
    with pytest.raises(segment.SegmentError):
        segment.decode_idx(bytes(8) + idx_bytes, 11)
    with pytest.raises(segment.SegmentError, match="first"):
        segment.decode_idx(idx_bytes, 12)  # a valid index renamed to another segment's name
    # Offsets out of order are refused even under a valid checksum (a writer bug, not damage).
    for bad in ([0, 300, 300, 900], [5, 300, 900], [0, 900, 300]):
        with pytest.raises(segment.SegmentError, match="order"):
            segment.decode_idx(segment.encode_idx(11, bad, b"c" * 32, b"s" * 32), 11)


@settings(max_examples=40, deadline=None)
@given(first=st.integers(1, 10**9), sizes=st.lists(st.integers(0, 700), min_size=1, max_size=30),
       ends=st.sets(st.integers(0, 29), max_size=10), seed=st.integers(0, 99))
def test_build_seal_and_seal_fast_agree(tmp_path_factory: pytest.TempPathFactory, first: int, sizes: list[int],
                                        ends: set[int], seed: int) -> None:
    rnd = random.Random(seed)
    bodies = [b'{"s":"' + bytes(rnd.choice(b"ab {}:\\") for _ in range(n)).replace(b"\\", b"/") + b'"}'
              for n in sizes]
    path = tmp_path_factory.mktemp("seg") / segment.seg_name(first)
    raw, chain = write_segment(path, first, bodies, ends)
    built = seal_of(path, first)
    assert built == segment.seal_fast(raw, first, chain)
    seal = segment.decode_idx(built, first)
    assert (seal.count, seal.last_chain, seal.size) == (len(bodies), chain, len(raw))
    (path.parent / segment.idx_name(first)).write_bytes(built)
    sealed = segment.SealedSegment(str(path.parent), first)
    try:
        assert sealed.verify() == []
        for i, body in enumerate(bodies):
            rec = sealed.record(first + i)
            assert (rec.position, rec.body) == (first + i, body)
        lo = rnd.randint(first, seal.last)
        hi = rnd.randint(lo, seal.last)
        assert record.bodies(sealed.read_run(lo, hi)) == bodies[lo - first:hi - first + 1]
    finally:
        sealed.close()


def test_records_spanning_read_chunks_are_scanned(tmp_path: Path) -> None:
    # Records bigger than a read chunk, and records straddling chunk edges, come out whole.
    big = b'"' + b"x" * (segment.READ_CHUNK + 1000) + b'"'
    bodies = [b"{}", big, *([b'"' + b"y" * 70_000 + b'"'] * 20), big, b"{}"]
    path = tmp_path / segment.seg_name(1)
    raw, chain = write_segment(path, 1, bodies, set(range(len(bodies))))
    assert segment.seal_fast(raw, 1, chain) == seal_of(path, 1)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert [r.body for r in segment.scan(fd, 0, len(raw))] == bodies
    finally:
        os.close(fd)


@pytest.mark.parametrize("damage", ["uncommitted end", "torn end", "position gap", "empty"])
def test_build_seal_refuses_anything_but_whole_committed_records(tmp_path: Path, damage: str) -> None:
    path = tmp_path / segment.seg_name(1)
    raw, _chain = write_segment(path, 1, [b"{}"] * 4, {1})
    if damage == "uncommitted end":
        more, sizes, _c = record.encode(5, _chain, [("a", b"{}"), ("b", b"{}")])
        path.write_bytes(raw + more[:sizes[0]])  # a whole record without the commit mark
    elif damage == "torn end":
        path.write_bytes(raw[:-3])
    elif damage == "position gap":
        more, _s, _c = record.encode(9, _chain, [("a", b"{}")])
        path.write_bytes(raw + more)
    else:
        path.write_bytes(b"")
    with pytest.raises((segment.SegmentError, record.RecordError)):
        seal_of(path, 1)


def test_sealed_segment_verify_finds_a_changed_or_missing_byte(tmp_path: Path) -> None:
    path = tmp_path / segment.seg_name(3)
    raw, _chain = write_segment(path, 3, [b'{"n":%d}' % i for i in range(10)], {2, 5})
    (tmp_path / segment.idx_name(3)).write_bytes(seal_of(path, 3))
    for at in (0, 100, record.HEADER + 2, len(raw) - 1):
        damaged = bytearray(raw)
        damaged[at] ^= 0x20
        path.write_bytes(damaged)
        sealed = segment.SealedSegment(str(tmp_path), 3)
        try:
            assert sealed.verify(), f"a change at byte {at} went unnoticed"
        finally:
            sealed.close()
    path.write_bytes(raw + b"x")
    sealed = segment.SealedSegment(str(tmp_path), 3)
    try:
        assert sealed.verify()
    finally:
        sealed.close()


@given(first=st.integers(0, 10**12 - 1))
def test_names_round_trip(first: int) -> None:
    assert segment.parse_name(segment.seg_name(first)) == (first, "seg")
    assert segment.parse_name(segment.idx_name(first)) == (first, "idx")


@pytest.mark.parametrize("name", ["1.seg", "0000000000001.seg", "000000000001.seg.tmp", ".tmp-1-000000000001.idx",
                                  "000000000001.pack", "00000000000a.seg", "000000000001.seg/"])
def test_other_names_are_not_segments(name: str) -> None:
    assert segment.parse_name(name) is None
