"""Reads load only what they return: a tag or type read opens its matching events and no
others; ``start``/``backwards``/``limit`` are applied before events are loaded. Counted in file
opens, not seconds, so the rule is checked the same on any machine."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from kroniko_ops import Event, EventStore, Query, QueryItem

N = 300


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventStore]:
    """300 events; tag ``rare`` on 3 of them, type ``Rare`` on 4, every event has ``common``."""
    path = str(tmp_path_factory.mktemp("cost") / "store")
    with EventStore(path, durable=False) as store:
        for chunk in range(0, N, 50):
            batch = []
            for n in range(chunk, chunk + 50):
                tags = ["common"] + (["rare"] if n in (10, 150, 290) else [])
                batch.append(Event("Rare" if n in (5, 6, 200, 201) else "Common", n, tags))
            store.append(batch)
        assert store.index.read_checkpoint().trusted == N
        yield store


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch, big: EventStore) -> list[str]:
    """The event files opened while the test runs."""
    events_dir = big.layout.events + os.sep
    seen: list[str] = []
    real_open = os.open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if isinstance(path, str) and path.startswith(events_dir):
            seen.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    return seen


def _read(store: EventStore, query: Query | None = None, **kw: Any) -> list[int]:
    return [e.data for e in store.read(query, **kw)]


def test_tag_read_opens_only_its_matches(big: EventStore, opened: list[str]) -> None:
    assert _read(big, Query([QueryItem(tags=["rare"])])) == [10, 150, 290]
    assert len(opened) == 3


def test_type_read_opens_only_its_matches(big: EventStore, opened: list[str]) -> None:
    assert _read(big, Query([QueryItem(types=["Rare"])])) == [5, 6, 200, 201]
    assert len(opened) == 4


def test_rare_tag_of_a_common_type_opens_only_its_matches(big: EventStore, opened: list[str]) -> None:
    assert _read(big, Query([QueryItem(types=["Common"], tags=["rare", "common"])])) == [10, 150, 290]
    assert len(opened) == 3


def test_limit_start_and_backwards_load_only_what_is_returned(big: EventStore, opened: list[str]) -> None:
    assert _read(big, limit=2) == [0, 1]
    assert _read(big, backwards=True, limit=2) == [299, 298]
    assert _read(big, start=N - 1) == [298, 299]
    assert _read(big, Query([QueryItem(tags=["rare"])]), backwards=True, limit=1) == [290]
    assert _read(big, Query([QueryItem(tags=["common"])]), start=100, limit=3) == [99, 100, 101]
    assert len(opened) == 2 + 2 + 2 + 1 + 3


def test_head_and_an_empty_match_open_no_event(big: EventStore, opened: list[str]) -> None:
    assert big.head() == N
    assert _read(big, Query([QueryItem(tags=["absent"])])) == []
    assert _read(big, Query([QueryItem(types=["Rare"], tags=["rare"])])) == []
    assert opened == []
