"""One real PostgreSQL server per test session (fsync=off: the tests kill clients, not the
machine), a fresh database per test that asks for ``pg_url``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from kroniko_ops.postgres import server as pgserver

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    """The session's server; failing to start fails the tests (never a silent skip)."""
    srv = pgserver.start(fsync=False)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def pg_url(pg_server: pgserver.Server) -> str:
    """The URL of a new, empty database."""
    return pg_server.create_database(f"t{next(_names)}")
