"""The PostgreSQL store's known gaps (issue 16): events carry their batch's commit time and batch
end as the file store's do, kept by ``migrate`` both ways and by ``mirror``; ``max_event_bytes`` is
fixed in the schema at creation; the ``synced`` table keeps no row per connection ever made; a
store of the previous schema version is upgraded in place."""

from __future__ import annotations

import time

import psycopg
import pytest

from kroniko_ops import Event, EventStore, InvalidEvent
from kroniko_ops.ops.postgres.transfer import from_postgres, mirror, to_postgres
from kroniko_ops.postgres import PostgresEventStore


def _times(store) -> list[tuple[int, int, bool]]:  # type: ignore[no-untyped-def]
    return [(e.position, e.commit_us, e.batch_end) for e in store.read()]


def test_events_carry_commit_times_and_batch_ends(pg_url: str) -> None:
    before = time.time_ns() // 1000
    with PostgresEventStore(pg_url) as s:
        s.append([Event("A", 1), Event("B", 2), Event("C", 3)])
        s.append(Event("D", 4))
        got = _times(s)
        events = list(s.read())
    after = time.time_ns() // 1000
    assert [(p, end) for p, _t, end in got] == [(1, False), (2, False), (3, True), (4, True)]
    stamps = [t for _p, t, _e in got]
    assert before <= stamps[0] == stamps[1] == stamps[2] <= stamps[3] <= after
    assert events[3].committed_at is not None and events[3].committed_at.tzinfo is not None
    with psycopg.connect(pg_url) as conn:  # SQL users see them too
        sql = "SELECT count(*) FROM kroniko.events_json WHERE committed_at IS NOT NULL"
        assert conn.execute(sql).fetchone() == (4,)


def test_migrate_both_ways_and_mirror_keep_commit_times(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = str(tmp_path / "src")
    with EventStore(src, durable=False) as fs:
        fs.append([Event("A", 1), Event("B", 2)])
        time.sleep(0.01)
        fs.append(Event("C", 3))
        original = _times(fs)
    to_postgres(src, pg_url)
    with PostgresEventStore(pg_url) as pg:
        assert _times(pg) == original
    back = str(tmp_path / "back")
    from_postgres(pg_url, back)
    with EventStore(back) as fs:
        assert _times(fs) == original
    mirrored = pg_url + "?schema=mirror"
    mirror(src, mirrored)
    with PostgresEventStore(mirrored) as pg:
        assert _times(pg) == original


def test_max_event_bytes_is_fixed_at_creation(pg_url: str) -> None:
    with PostgresEventStore(pg_url, max_event_bytes=2000) as s:
        s.append(Event("Small", "x" * 100))
    with PostgresEventStore(pg_url) as again:  # no limit given: the one the store was made with
        assert again.max_event_bytes == 2000
        with pytest.raises(InvalidEvent):
            again.append(Event("Big", "x" * 3000))
        assert again.head() == 1


def test_the_synced_table_is_pruned(pg_url: str) -> None:
    for i in range(6):
        with PostgresEventStore(pg_url) as s:
            s.append(Event("A", i))
    with PostgresEventStore(pg_url) as s:
        assert s.head() == 6 and len(list(s.read())) == 6
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT position FROM kroniko.synced").fetchall()
    assert rows == [(6,)], rows


def test_a_version_1_store_is_upgraded_in_place(pg_url: str) -> None:
    with PostgresEventStore(pg_url) as s:
        s.append(Event("Old", 1))
    with psycopg.connect(pg_url, autocommit=True) as conn:  # make it what version 1 wrote
        conn.execute("DROP VIEW kroniko.events_json; ALTER TABLE kroniko.events DROP COLUMN commit_us; "
                     "ALTER TABLE kroniko.head DROP COLUMN commit_us; UPDATE kroniko.meta SET value = '1' "
                     "WHERE key = 'version'; DELETE FROM kroniko.meta WHERE key = 'max_event_bytes'")
    with PostgresEventStore(pg_url) as s:
        s.append(Event("New", 2))
        got = _times(s)
    assert got[0] == (1, 0, True) and got[1][1] > 0
