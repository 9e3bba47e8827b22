"""The plumbing every contract class shares: store creation, temp folders, sample events."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from ..model import AppendCondition, Event, Query, QueryItem, SequencedEvent


class ReadResultLike(Protocol):
    """What ``read`` returns: iterable, re-iterable, with the head it answered for."""

    head: int

    def __iter__(self) -> Iterator[SequencedEvent]: ...


class DCBStore(Protocol):
    """The API the contract exercises (the public API the README documents)."""

    def append(self, events: Event | Iterable[Event], condition: AppendCondition | None = None) -> int: ...

    def read(self, query: Query | None = None, *, start: int | None = None, backwards: bool = False,
             limit: int | None = None) -> ReadResultLike: ...

    def head(self) -> int: ...

    def subscribe(self, query: Query | None = None, *, after: int = 0) -> Iterator[SequencedEvent]: ...


# Six events in three batches; the read tests name them by position.
#   1 A [t1]   2 B [t1 t2]   3 A [t2]   4 C [t1 t2 t3]   5 B []   6 A [t1 t3]
SAMPLE: tuple[tuple[Event, ...], ...] = (
    (Event("A", {"n": 1}, ("t1",)), Event("B", {"n": 2}, ("t1", "t2"))),
    (Event("A", {"n": 3}, ("t2",)),),
    (Event("C", {"n": 4}, ("t1", "t2", "t3")), Event("B", {"n": 5}, ()), Event("A", {"n": 6}, ("t1", "t3"))),
)


def q(*items: tuple[Sequence[str], Sequence[str]]) -> Query:
    """Shorthand: ``q((types, tags), ...)`` is a query of those items."""
    return Query([QueryItem(types=list(types), tags=list(tags)) for types, tags in items])


def positions(result: Iterable[SequencedEvent]) -> list[int]:
    """The positions a read yields, in the order yielded."""
    return [e.position for e in result]


class ContractBase:
    """Creates stores for the contract tests in temporary folders and closes them afterwards.

    Works under pytest (``setup_method``) and under unittest (``setUp``) alike.
    """

    def make_store(self, path: str) -> DCBStore:
        """Return a new, empty store in ``path`` (a fresh empty folder). Override this."""
        raise NotImplementedError("override make_store(path) to return the store under test")

    def close_store(self, store: DCBStore) -> None:
        """Release a store made by :meth:`make_store` (calls its ``close()`` if it has one)."""
        close = getattr(store, "close", None)
        if callable(close):
            close()

    # -- life cycle ------------------------------------------------------------------------

    def setup_method(self, method: Any = None) -> None:
        """Give the test a temporary folder for its stores."""
        if getattr(self, "_contract_dir", None) is not None:
            return  # a unittest.TestCase under pytest gets both setup_method and setUp
        self._contract_dir: str | None = tempfile.mkdtemp(prefix="dcb-contract-")
        self._contract_stores: list[DCBStore] = []
        self._contract_count = 0

    def teardown_method(self, method: Any = None) -> None:
        """Close every store the test made and remove its folder."""
        if getattr(self, "_contract_dir", None) is None:
            return
        for store in self._contract_stores:
            self.close_store(store)
        shutil.rmtree(self._contract_dir, ignore_errors=True)
        self._contract_dir = None

    def setUp(self) -> None:
        """unittest entry point: same as :meth:`setup_method`."""
        self.setup_method()

    def tearDown(self) -> None:
        """unittest entry point: same as :meth:`teardown_method`."""
        self.teardown_method()

    # -- helpers for the tests -------------------------------------------------------------

    def new_store(self) -> DCBStore:
        """A new empty store, closed when the test ends."""
        self._contract_count += 1
        store = self.make_store(f"{self._contract_dir}/store-{self._contract_count}")
        self._contract_stores.append(store)
        return store

    @contextmanager
    def fresh_store(self) -> Iterator[DCBStore]:
        """A new empty store for one block (one Hypothesis example), closed at its end."""
        self._contract_count += 1
        store = self.make_store(f"{self._contract_dir}/store-{self._contract_count}")
        try:
            yield store
        finally:
            self.close_store(store)

    def sample_store(self) -> DCBStore:
        """A new store holding :data:`SAMPLE` at positions 1-6."""
        store = self.new_store()
        for batch in SAMPLE:
            store.append(list(batch))
        assert store.head() == 6, "the sample's three batches should end at position 6"
        return store
