"""Reads from packs touch only the blocks they need, a block decoded once serves every event in it
(a bounded cache of decoded blocks), and reading a few events from many sealed segments opens
each segment once. Counted in blocks decompressed and files opened, not seconds."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest

from kroniko_ops import Event, EventStore, Query, QueryItem, logview
from kroniko_ops.format import pack as packfmt
from kroniko_ops.format import segment as segfmt
from kroniko_ops.ops.compact import compact

N = 2000


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """2,000 events in small segments, all sealed ones packed in blocks of 4 KiB."""
    path = str(tmp_path_factory.mktemp("packs") / "store")
    with EventStore(path, durable=False, segment_bytes=8192) as store:
        for a in range(0, N, 10):
            store.append([Event("T", {"n": n, "pad": "x" * 40}, [f"k:{n % 50}"], None, f"e-{n}")
                          for n in range(a, a + 10)])
    assert compact(path, block_bytes=4096).exit_code == 0
    return path


@pytest.fixture
def blocks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[tuple[str, int]]]:
    """Counts the blocks decompressed, by (pack name, block index)."""
    seen: Counter[tuple[str, int]] = Counter()
    real = packfmt.PackReader._payload

    def counting(self: packfmt.PackReader, i: int) -> bytes:
        seen[(self.name, i)] += 1
        return real(self, i)

    monkeypatch.setattr(packfmt.PackReader, "_payload", counting)
    yield seen


def _pack(path: str) -> packfmt.PackReader:
    [name] = os.listdir(os.path.join(path, "packs"))
    return packfmt.PackReader(os.path.join(path, "packs", name))


def test_start_and_limit_read_only_the_blocks_they_need(packed: str, blocks: Counter) -> None:
    with _pack(packed) as reader:
        target = reader.blocks[len(reader.blocks) // 2]
        n_blocks = len(reader.blocks)
    with EventStore(packed, create=False) as store:
        got = [e.position for e in store.read(start=target.first, limit=target.count)]
        assert got == list(range(target.first, target.first + target.count))
        assert list(blocks) == [(reader.name, n_blocks // 2)]
        blocks.clear()
        back = [e.position for e in store.read(start=target.last, backwards=True, limit=3)]
        assert back == [target.last, target.last - 1, target.last - 2] and len(blocks) == 1


def test_a_block_is_decoded_once_for_the_events_of_every_read(packed: str, blocks: Counter) -> None:
    query = Query([QueryItem(tags=["k:7"])])
    with EventStore(packed, create=False) as store:
        first = [(e.position, e.event) for e in store.read(query)]
        assert len(first) == N // 50
        touched = dict(blocks)
        assert max(touched.values()) == 1  # each block once, though it holds several matches
        for _ in range(3):
            assert [(e.position, e.event) for e in store.read(query)] == first
        assert dict(blocks) == touched  # served from the cache of decoded blocks


def test_the_cache_of_decoded_blocks_is_bounded(packed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logview, "BLOCK_CACHE_BYTES", 40_000)
    with EventStore(packed, create=False) as store:
        for k in range(50):
            list(store.read(Query([QueryItem(tags=[f"k:{k}"])])))
            assert store.view._block_bytes <= 40_000
        assert store.view._blocks


def test_a_few_events_from_many_sealed_segments_open_each_once(tmp_path: os.PathLike[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "store")
    with EventStore(path, durable=False, segment_bytes=4096) as store:
        for a in range(0, 1500, 10):
            store.append([Event("T", {"n": n}, [f"k:{n % 30}"]) for n in range(a, a + 10)])
    sealed = len([n for n in os.listdir(os.path.join(path, "log")) if n.endswith(".idx")])
    assert sealed > 64
    opened: Counter[int] = Counter()
    real = segfmt.SealedSegment.__init__

    def counting(self: segfmt.SealedSegment, directory: str, first: int) -> None:
        opened[first] += 1
        real(self, directory, first)

    monkeypatch.setattr(segfmt.SealedSegment, "__init__", counting)
    with EventStore(path, create=False) as store:
        for _ in range(3):
            for k in range(30):  # every tag has an event in nearly every segment
                assert len(list(store.read(Query([QueryItem(tags=[f"k:{k}"])])))) == 50
    assert opened and max(opened.values()) == 1, "a segment was opened again"
