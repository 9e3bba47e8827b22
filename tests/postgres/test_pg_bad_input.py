"""Bad input on a URL: an unreachable server, a wrong password, a schema holding other tables or
a newer kroniko store. A clear error, exit 8 or 2, nothing written, the password never shown."""

from __future__ import annotations

import socket

import psycopg
import pytest
from click.testing import CliRunner, Result

from kroniko_ops import Event, EventStore
from kroniko_ops.cli import cli
from kroniko_ops.postgres import PostgresEventStore
from kroniko_ops.postgres.errors import SchemaMismatch, ServerUnavailable
from kroniko_ops.postgres.server import PASSWORD

APPEND = '{"type": "A"}\n'


def run(*args: str, secret: str = PASSWORD) -> Result:
    result = CliRunner().invoke(cli, list(args), input=APPEND)
    assert secret not in result.output, "a URL's password was printed"
    return result


def _tables(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return {(s, t) for s, t in conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")}


def test_an_unreachable_server_is_operational(pg_server) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    url = f"postgresql://postgres:s3cr3t-unreach@127.0.0.1:{port}/db"
    for args in (("append", url), ("read", url), ("fsck", url), ("stats", url)):
        res = run(*args, secret="s3cr3t-unreach")
        assert res.exit_code == 8, res.output
        assert "cannot connect" in res.output and "***" in res.output


def test_a_wrong_password_is_operational(pg_url: str) -> None:
    bad = pg_url.replace(PASSWORD, "wrong-pw-123")
    res = run("append", bad, secret="wrong-pw-123")
    assert res.exit_code == 8 and "password authentication failed" in res.output
    with pytest.raises(ServerUnavailable):
        PostgresEventStore(bad)
    assert _tables(pg_url) == set()


def test_a_schema_of_other_tables_is_refused_untouched(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA kroniko; CREATE TABLE kroniko.orders (id int)")
    before = _tables(pg_url)
    src = str(tmp_path / "src")
    with EventStore(src) as fs:
        fs.append(Event("A", 1))
    for args in (("append", pg_url), ("init", pg_url), ("fsck", pg_url), ("mirror", "--once", src, pg_url),
                 ("migrate", src, pg_url)):
        res = run(*args)
        assert res.exit_code == 2, (args, res.output)
    assert "not a kroniko store" in run("append", pg_url).output
    assert _tables(pg_url) == before
    # Another schema of the same database is fine.
    with PostgresEventStore(pg_url + "?schema=events") as s:
        assert s.append(Event("A", 1)) == 1


def test_a_newer_store_version_is_refused_untouched(pg_url: str) -> None:
    with PostgresEventStore(pg_url) as s:
        s.append(Event("A", 1))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE kroniko.meta SET value = '99' WHERE key = 'version'")
    res = run("append", pg_url)
    assert res.exit_code == 2 and "version 99" in res.output and "upgrade kroniko-ops" in res.output
    with pytest.raises(SchemaMismatch):
        PostgresEventStore(pg_url)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM kroniko.events").fetchone()[0] == 1


def test_reading_a_database_without_a_store_creates_nothing(pg_url: str) -> None:
    res = run("read", pg_url)
    assert res.exit_code == 8 and "holds no kroniko store" in res.output
    assert _tables(pg_url) == set()


def test_a_malformed_url_is_bad_input() -> None:
    res = run("read", "postgresql://u:pw-xyz@host/db?schema=Bad-Name", secret="pw-xyz")
    assert res.exit_code == 2 and "schema name" in res.output
