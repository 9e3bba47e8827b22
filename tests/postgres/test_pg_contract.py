"""The DCB contract suite, unchanged, against PostgresEventStore (a fresh schema per store)."""

from __future__ import annotations

import itertools
import threading

import pytest

from kroniko_ops import Event, Query, QueryItem
from kroniko_ops.postgres import PostgresEventStore
from kroniko_ops.testing import DCBContract

_count = itertools.count(1)


class TestPostgresContract(DCBContract):
    @pytest.fixture(autouse=True)
    def _server(self, pg_server) -> None:  # type: ignore[no-untyped-def]
        self._url = pg_server.url()

    def make_store(self, path: str) -> PostgresEventStore:
        return PostgresEventStore(self._url, schema=f"contract_{next(_count)}")


def test_subscribe_is_woken_by_notify_from_another_connection(pg_url: str) -> None:
    """The fallback re-check is an hour away: only LISTEN/NOTIFY can deliver within the guard."""
    got: list[int] = []
    with PostgresEventStore(pg_url) as reader, PostgresEventStore(pg_url) as writer:
        writer.append(Event("A", 0, ["s"]))

        def follow() -> None:
            sub = reader.subscribe(Query([QueryItem(tags=["s"])]), wait=3600)
            for e in sub:
                got.append(e.position)
                if len(got) == 3:
                    sub.close()
                    return

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        writer.append(Event("B", 1, ["other"]))
        writer.append([Event("A", 2, ["s"]), Event("A", 3, ["s"])])
        thread.join(120)  # a hang guard: without a notification this would wait an hour
        assert not thread.is_alive() and got == [1, 3, 4]
