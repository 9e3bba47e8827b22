"""What a PostgreSQL deployment may throw at the store: long schema names, a failed durability
commit, a database whose default isolation is not read committed, text PostgreSQL cannot hold,
a store made by an older release of the append function, and passwords written in unusual ways."""

from __future__ import annotations

import threading

import psycopg
import pytest
from click.testing import CliRunner

from kroniko_ops import AppendCondition, Event, EventStore, InvalidArgument, InvalidEvent, Query, QueryItem
from kroniko_ops.cli import cli
from kroniko_ops.postgres import PostgresEventStore
from kroniko_ops.postgres.errors import CommitUnknown
from kroniko_ops.postgres.url import parse, redact, scrub


def test_a_schema_name_of_the_longest_allowed_length_works(pg_url: str) -> None:
    schema = "s" * 63
    with PostgresEventStore(pg_url, schema=schema) as store:
        assert store.append(Event("A", 1, ["t:1"])) == 1
        feed = store.subscribe(Query([QueryItem(tags=["t:1"])]), max_interval=0.2)
        assert next(feed).position == 1
        feed.close()
        assert [e.position for e in store.read()] == [1]


def test_a_failed_durability_commit_leaves_the_handle_usable(pg_url: str) -> None:
    with PostgresEventStore(pg_url, lock_timeout=0.2) as store:
        store.append(Event("A", 1))
        pid = store.connection().info.backend_pid
        with psycopg.connect(pg_url) as other:
            # Hold this handle's own synced row: its next durability commit times out.
            other.execute("SELECT 1 FROM kroniko.synced WHERE slot = %s FOR UPDATE", (pid,))
            with pytest.raises(CommitUnknown):
                store.append(Event("B", 2, id="b-1"))
        # Released: the same handle goes on; a retry with the same id is answered, not refused.
        assert store.append(Event("B", 2, id="b-1")) == 2
        assert store.head() == 2
        assert [e.event.type for e in store.read()] == ["A", "B"]


def test_a_repeatable_read_default_does_not_fail_concurrent_appends(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        db = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{db}" SET default_transaction_isolation = \'repeatable read\'')
    PostgresEventStore(pg_url).close()
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with PostgresEventStore(pg_url) as store:
                for i in range(40):
                    store.append(Event("A", {"w": w, "i": i}))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    with PostgresEventStore(pg_url) as store:
        assert [e.position for e in store.read()] == list(range(1, 161))


@pytest.mark.parametrize("event", [Event("A\x00B", 1), Event("A", 1, ["t:\x00"])], ids=["type", "tag"])
def test_a_nul_character_is_refused_before_anything_is_written(pg_url: str, event: Event) -> None:
    with PostgresEventStore(pg_url) as store:
        with pytest.raises(InvalidEvent, match="NUL"):
            store.append(event)
        with pytest.raises(InvalidArgument, match="NUL"):
            store.read(Query([QueryItem(tags=["x\x00"])]))
        with pytest.raises(InvalidArgument, match="NUL"):
            store.append(Event("A", 1), AppendCondition(Query([QueryItem(types=["\x00"])]), after=0))
        assert store.head() == 0


def test_migrating_a_file_store_with_a_nul_tag_is_refused_and_writes_nothing(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = str(tmp_path / "s")
    with EventStore(folder, durable=False) as store:
        store.append([Event("A", 1), Event("B", 2, ["t:\x00"])])
    result = CliRunner().invoke(cli, ["migrate", folder, pg_url])
    assert result.exit_code == 2, result.output
    assert "NUL" in result.output and "event at 2" in result.output
    with PostgresEventStore(pg_url) as store:
        assert store.head() == 0


def test_a_store_made_with_another_append_function_gets_this_one(pg_url: str) -> None:
    PostgresEventStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP FUNCTION kroniko.append")
        conn.execute("UPDATE kroniko.meta SET value = 'older' WHERE key = 'append_fn'")
    with PostgresEventStore(pg_url) as store:
        assert store.append(Event("A", 1)) == 1


@pytest.mark.parametrize("url, secret", [
    ("postgresql://host/db?user=u&password=Query-Secret", "Query-Secret"),
    ("postgresql://u:wr@ng-secret@127.0.0.1:5/db", "wr@ng-secret"),
    ("postgresql://u:sl/ash-secret@host/db", "sl/ash-secret"),
    ("postgresql://u:pw-secret@h/db?schema=x&sslpassword=ssl-secret", "ssl-secret"),
])
def test_a_password_is_never_shown_however_it_is_written(url: str, secret: str) -> None:
    shown = parse(url).shown
    assert secret not in shown and "***" in shown
    assert secret not in redact(url)
    if "sslpassword" not in url:
        # libpq splits at the first "@": its message may quote the rest of the password.
        message = f"could not translate host name \"{secret.split('@')[-1]}@127.0.0.1\"; {url}"
        for piece in secret.split("@"):
            assert piece not in scrub(message, parse(url).password)
