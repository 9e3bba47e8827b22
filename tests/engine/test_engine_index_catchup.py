"""The index is derived: a reader never misses a committed event because the index is behind or
gone, and the next writer brings it to exactly what the log implies (no row lost, none extra)."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import engine_mp_workers as workers
import pytest
from engine_helpers import run_child

from kroniko_ops import Event, EventStore, Query, QueryItem, fileio
from kroniko_ops.indexdb import db_name, generations

TYPES = ("A", "B", "C")
TAGS = ("t1", "t2", "cart:1", "../x")


def _fill(store: EventStore, sizes: tuple[int, ...] = (3, 1, 4, 2, 2)) -> None:
    """Batches of ``sizes`` with types and tags spread over them."""
    n = store.head()
    for size in sizes:
        batch = []
        for _ in range(size):
            tags = [t for k, t in enumerate(TAGS) if (n >> k) & 1]
            batch.append(Event(TYPES[n % 3], {"n": n}, tags, None, f"e-{n}"))
            n += 1
        store.append(batch)


@pytest.fixture
def filled(store: EventStore) -> EventStore:
    """Twelve events in five batches."""
    _fill(store)
    assert store.head() == 12
    return store


def _queries() -> list[Query]:
    out = [Query.all()]
    out += [Query([QueryItem(types=[t])]) for t in TYPES]
    out += [Query([QueryItem(tags=[t])]) for t in TAGS]
    out += [Query([QueryItem(types=[ty], tags=[t])]) for ty, t in itertools.product(TYPES, TAGS)]
    out += [Query([QueryItem(tags=["t1", "t2"])]), Query([QueryItem(tags=["t1"]), QueryItem(types=["C"])])]
    return out


def _check_reads(store: EventStore) -> None:
    """Every query returns exactly what a scan of all events gives, both ways."""
    everything = [(e.position, e.event) for e in store.read()]
    assert [p for p, _ in everything] == list(range(1, store.head() + 1))
    for query in _queries():
        want = [p for p, e in everything if query.matches(e.type, e.tags)]
        assert [e.position for e in store.read(query)] == want, query
        assert [e.position for e in store.read(query, backwards=True)] == want[::-1], query


def _check_index_rows(store: EventStore) -> None:
    """The index itself (not the unindexed tail a reader also scans) holds exactly the log's rows."""
    head = store.head()
    assert store.index.checkpoint()[0] == head
    everything = [(e.position, e.event) for e in store.read()]
    for query in _queries()[1:]:
        want = [p for p, e in everything if query.matches(e.type, e.tags)]
        assert list(store.index.positions(query, 1, head)) == want, query
    ids = [e.id for _, e in everything]
    assert store.index.id_positions(ids) == {e.id: p for p, e in everything}
    assert store.index.counts()["ids"] == head


def _caught_up(store: EventStore) -> None:
    """After one more append and a flush, the index is exactly what the log implies."""
    store.append(Event("A", {"n": "late"}, ["t1", "late"], None, "late"))
    with store.locked():
        store.flush_index()
    _check_reads(store)
    _check_index_rows(store)


def test_a_writer_that_died_with_unindexed_records(store_path: str) -> None:
    with EventStore(store_path) as store:
        _fill(store)
    head = run_child(workers.append_and_die, store_path, 20)
    assert head == 12 + 60
    with EventStore(store_path) as store:
        assert store.head() == head
        assert store.index.checkpoint()[0] < head, "the dead writer left records unindexed"
        _check_reads(store)
        assert [e.data["b"] for e in store.read(Query([QueryItem(tags=["b:7"])]))] == [7, 7, 7]
        _caught_up(store)


def test_index_generation_deleted_after_a_close_with_pending_records(store_path: str) -> None:
    store = EventStore(store_path)
    _fill(store)
    # Someone else holds the lock while this handle closes: its pending rows stay unindexed.
    other = EventStore(store_path)
    with other.locked():
        store.close()
    other.close()
    folder = os.path.join(store_path, "index")
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    with EventStore(store_path) as fresh:
        assert fresh.head() == 12
        _check_reads(fresh)
        _caught_up(fresh)


def test_index_folder_deleted_is_rebuilt(filled: EventStore) -> None:
    path, durable = filled.path, filled.durable
    filled.close()
    shutil.rmtree(os.path.join(path, "index"))
    with EventStore(path, durable=durable) as fresh:
        _check_reads(fresh)
        _caught_up(fresh)


def test_a_damaged_index_database_does_not_stop_the_store(filled: EventStore) -> None:
    # The index is derived: a database that no longer opens is replaced by a new generation,
    # caught up from the log, instead of making the store unusable.
    path, durable = filled.path, filled.durable
    filled.close()
    folder = os.path.join(path, "index")
    for name in os.listdir(folder):
        Path(folder, name).write_bytes(b"not an SQLite database, whatever it was" * 50)
    with EventStore(path, durable=durable) as fresh:
        _check_reads(fresh)
        _caught_up(fresh)
        assert fresh.index.generation == 2


def test_a_lost_index_is_caught_up_in_chunks_not_held_in_memory(tmp_path: Path) -> None:
    # Far behind, the index is brought up to the synced position before the writer reads the
    # tail; otherwise it would keep one pending entry per record of the whole store.
    path = str(tmp_path / "store")
    with EventStore(path, durable=False) as store:
        for b in range(6):
            store.append([Event("A", {"i": i}, [f"t:{i % 7}", f"b:{b}"], None, f"e-{b}-{i}") for i in range(1000)])
    shutil.rmtree(os.path.join(path, "index"))
    with EventStore(path, durable=False) as fresh:
        with fresh.locked():
            fresh.writable_tail()
            assert fresh.index.checkpoint()[0] == 6000  # caught up, nothing left pending
        _check_index_rows(fresh)
        assert fresh.append(Event("B", 0, ["t:1"], None, "after")) == 6001
        assert len(list(fresh.read(Query([QueryItem(tags=["t:1"])])))) == 6 * len(range(1, 1000, 7)) + 1


@pytest.mark.parametrize("more", [0, 5000], ids=["just behind", "far behind"])
def test_an_index_of_another_history_is_rebuilt(tmp_path: Path, more: int) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with EventStore(a, durable=False) as sa, EventStore(b, durable=False) as sb:
        _fill(sa)
        if more:
            sa.append([Event("A", {"n": i}, ["t1"], None, f"more-{i}") for i in range(more)])
        sb.append([Event("Z", i, ["t2"], None, f"z-{i}") for i in range(12)])  # same length, other events
        for s in (sa, sb):
            with s.locked():
                s.flush_index()
    shutil.rmtree(os.path.join(a, "index"))
    shutil.copytree(os.path.join(b, "index"), os.path.join(a, "index"))
    with EventStore(a, durable=False) as fresh:
        assert fresh.append(Event("A", 0, ["t1"], None, "after")) == 13 + more
        assert [e.id for e in fresh.read(Query([QueryItem(types=["Z"])]))] == []
        _check_reads(fresh)
        _caught_up(fresh)
        assert generations(os.path.join(a, "index")) == [2], "rebuilt beside, then swapped in"


def test_a_reader_follows_a_rebuilt_index(filled: EventStore) -> None:
    with EventStore(filled.path, durable=filled.durable) as reader:
        _check_reads(reader)
        old = reader.index.generation
        # The writer's index is replaced by a generation built from the log (as reindex does).
        from kroniko_ops.rebuild import rebuild_index

        with filled.locked():
            rebuild_index(filled, filled.writable_tail())
        assert not os.path.exists(os.path.join(filled.path, "index", db_name(old)))
        filled.append(Event("A", 0, ["t1"], None, "after-rebuild"))
        _check_reads(reader)
        assert reader.index.generation > old


def test_fast_store_reopened_durably_reads_the_same(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    with EventStore(path, durable=False) as fast:
        fast.append([Event("A", i, ["t1"] if i % 2 else [], None, f"a-{i}") for i in range(20)])
        want = [(e.position, e.event) for e in fast.read()]
    with EventStore(path) as durable:
        assert [(e.position, e.event) for e in durable.read()] == want
        assert [e.position for e in durable.read(Query([QueryItem(tags=["t1"])]))] == list(range(2, 21, 2))
        durable.append(Event("B", 0))
        _check_reads(durable)


def test_durable_store_fsyncs_the_log_and_fast_store_never_fsyncs(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []
    previous = fileio.set_fault_injector(lambda op, path: calls.append((op, path)))
    try:
        with EventStore(str(tmp_path / "fast"), durable=False, segment_bytes=4096) as fast:
            for i in range(30):
                fast.append([Event("A", {"i": i, "pad": "p" * 200}), Event("B", i)])
            assert [c for c in calls if c[0] == "fsync"] == []
            calls.clear()
            list(fast.read())
            assert calls == []  # reads never write
        with EventStore(str(tmp_path / "durable")) as durable:
            calls.clear()
            durable.append(Event("A", 1))
            assert ("fsync", "active segment") in calls
            calls.clear()
            list(durable.read())
            durable.head()
            assert calls == []
    finally:
        fileio.set_fault_injector(previous)


def test_a_writer_that_finds_the_index_done_parses_nothing(tmp_path: Path) -> None:
    """Every writer carries every other writer's records; when several reach the indexing point
    together, only the one that writes them parses them (the others find the checkpoint there)."""
    from kroniko_ops.index import Index

    folder = str(tmp_path / "index")
    os.makedirs(folder)
    a, b = Index(folder), Index(folder)
    made: list[int] = []

    def entries(first: int, last: int) -> Callable[[], list]:
        def make() -> list:
            made.append(first)
            return [(p, f"e{p}", "T", ("x",)) for p in range(first, last + 1)]
        return make

    try:
        assert a.add(entries(1, 3), (3, b"\x03" * 32))
        assert b.add(entries(1, 3), (3, b"\x03" * 32))  # done already: nothing parsed
        assert made == [1]
        assert b.add(entries(1, 5), (5, b"\x05" * 32))  # the rows past the checkpoint are written
        assert made == [1, 1] and b.checkpoint() == (5, b"\x05" * 32)
        assert [p for p, in a.con.execute("SELECT position FROM ids ORDER BY position")] == [1, 2, 3, 4, 5]
    finally:
        a.close()
        b.close()
