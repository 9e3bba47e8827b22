"""The engine against a model, for any sequence of operations: appends (conditional or not,
batches big enough to roll 4 KiB segments and to cross the index's flush threshold), idempotent
retries, reused ids, two handles on one store, reopening, index flushes and a dead writer's
leftovers. Positions, reads by every query and every outcome must match the model."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from engine_helpers import append_raw, as_other_boot, hand_records, synced_state
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kroniko_ops import AppendCondition, AppendConditionFailed, Event, EventStore, InvalidEvent, Query, QueryItem

TYPES = ("A", "B", "C")
TAGS = ("x", "y", "z:1", "")
items = st.builds(lambda types, tags: QueryItem(types=types, tags=tags),
                  st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
                  st.lists(st.sampled_from(TAGS), max_size=2, unique=True))
queries = st.lists(items, min_size=1, max_size=2).map(Query)
specs = st.lists(st.tuples(st.sampled_from(TYPES), st.lists(st.sampled_from(TAGS), max_size=3, unique=True),
                           st.sampled_from([0, 10, 300, 1500])), min_size=1, max_size=40)


class EngineModel(RuleBasedStateMachine):
    """Two handles on one store of 4 KiB segments, checked after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="engine-model-")
        self.path = os.path.join(self.tmp, "store")
        self.handles = [EventStore(self.path, durable=False, segment_bytes=4096),
                        EventStore(self.path, durable=False)]
        self.log: list[Event] = []  # the model: events in position order
        self.batches: list[tuple[list[Event], int]] = []  # batches with explicit ids, and their last position
        self.counter = 0

    def teardown(self) -> None:
        for h in self.handles:
            h.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _events(self, spec: list[tuple[str, list[str], int]], explicit: bool) -> list[Event]:
        out = []
        for type_, tags, pad in spec:
            self.counter += 1
            out.append(Event(type_, {"n": self.counter, "pad": "p" * pad}, tags, None,
                             f"id-{self.counter}" if explicit else None))
        return out

    def _matches(self, query: Query, after: int) -> int | None:
        return next((p for p, e in enumerate(self.log, 1) if p > after and query.matches(e.type, e.tags)), None)

    @rule(h=st.integers(0, 1), spec=specs, explicit=st.booleans(), condition=st.none() | queries,
          lag=st.integers(0, 5))
    def append(self, h: int, spec: list[tuple[str, list[str], int]], explicit: bool, condition: Query | None,
               lag: int) -> None:
        batch = self._events(spec, explicit)
        cond = None if condition is None else AppendCondition(condition, after=max(0, len(self.log) - lag))
        conflict = None if cond is None else self._matches(condition, cond.after or 0)  # type: ignore[arg-type]
        if conflict is not None:
            with pytest.raises(AppendConditionFailed) as info:
                self.handles[h].append(batch, cond)
            assert info.value.position == conflict
            return
        last = self.handles[h].append(batch, cond)
        self.log.extend(batch)
        assert last == len(self.log)
        if explicit:
            self.batches.append((batch, last))

    @precondition(lambda self: self.batches)
    @rule(h=st.integers(0, 1), k=st.integers(0, 10**6))
    def retry(self, h: int, k: int) -> None:
        batch, last = self.batches[k % len(self.batches)]
        assert self.handles[h].append(batch) == last  # idempotent: nothing written
        assert self.handles[h].head() == len(self.log)

    @precondition(lambda self: self.batches)
    @rule(h=st.integers(0, 1), k=st.integers(0, 10**6))
    def reuse_an_id(self, h: int, k: int) -> None:
        batch, _last = self.batches[k % len(self.batches)]
        self.counter += 1
        with pytest.raises(InvalidEvent):
            self.handles[h].append([Event("A", 0, [], None, f"fresh-{self.counter}"), batch[-1]])

    @rule(h=st.integers(0, 1))
    def reopen(self, h: int) -> None:
        self.handles[h].close()
        self.handles[h] = EventStore(self.path, durable=False)

    @rule(h=st.integers(0, 1))
    def flush_index(self, h: int) -> None:
        with self.handles[h].locked():
            self.handles[h].flush_index()

    @rule(spec=specs, commit=st.booleans(), cut=st.integers(1, 400))
    def dead_writer(self, spec: list[tuple[str, list[str], int]], commit: bool, cut: int) -> None:
        # A writer wrote (part of) a batch and died before its fsync: a whole committed batch
        # becomes part of the log at the next writer; anything less is cut.
        self.handles[0].head()  # the tail on disk is committed and synced before this
        batch = self._events(spec, True)
        data = hand_records(self.path, batch, commit=commit)
        if commit:
            append_raw(self.path, data)
            self.log.extend(batch)
            self.batches.append((batch, len(self.log)))
        else:
            append_raw(self.path, data[: max(1, len(data) - cut)])
        self.handles[1].sync_idle()

    @rule()
    def reboot(self) -> None:
        # The synced value of an earlier boot: the next user re-verifies everything past it.
        for h in self.handles:
            h.close()
        if synced_state(self.path) is not None:  # a store never appended to has no value yet
            as_other_boot(self.path)
        self.handles = [EventStore(self.path, durable=False), EventStore(self.path, durable=False)]

    @rule()
    def index_deleted(self) -> None:
        for h in self.handles:
            h.close()
        for name in os.listdir(os.path.join(self.path, "index")):
            os.unlink(os.path.join(self.path, "index", name))
        self.handles = [EventStore(self.path, durable=False), EventStore(self.path, durable=False)]

    @invariant()
    def reads_match_the_model(self) -> None:
        for h in self.handles:
            assert h.head() == len(self.log)
        got = list(self.handles[len(self.log) % 2].read())
        assert [e.event.data["n"] for e in got] == [e.data["n"] for e in self.log]
        assert [e.position for e in got] == list(range(1, len(self.log) + 1))

    @rule(h=st.integers(0, 1), query=queries, backwards=st.booleans(), start=st.none() | st.integers(0, 300),
          limit=st.none() | st.integers(0, 5))
    def query(self, h: int, query: Query, backwards: bool, start: int | None, limit: int | None) -> None:
        want = [p for p, e in enumerate(self.log, 1) if query.matches(e.type, e.tags)
                and (start is None or (p <= start if backwards else p >= start))]
        if backwards:
            want.reverse()
        if limit is not None:
            want = want[:limit]
        got = [e.position for e in self.handles[h].read(query, start=start, backwards=backwards, limit=limit)]
        assert got == want


EngineModel.TestCase.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
TestEngineModel = EngineModel.TestCase


@pytest.mark.parametrize("query", [Query.all(), Query([QueryItem()]), Query([QueryItem(tags=["x"]), QueryItem()])],
                         ids=["all", "empty item", "an empty item among others"])
@pytest.mark.parametrize("indexed", [False, True])
def test_a_condition_matching_every_event(store: EventStore, query: Query, indexed: bool) -> None:
    # "Fail if anything at all was appended after N": optimistic concurrency on the whole store.
    store.append([Event("A", 1), Event("A", 2)])
    if indexed:
        with store.locked():
            store.flush_index()
    with pytest.raises(AppendConditionFailed) as info:
        store.append(Event("B", 3), AppendCondition(query, after=1))
    assert info.value.position == 2
    assert store.append(Event("B", 3), AppendCondition(query, after=2)) == 3


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventStore]:
    """600 indexed events tagged ``p:<n>`` and ``all``; event 7 also carries ``p:0..p:599``."""
    store = EventStore(str(tmp_path_factory.mktemp("big-queries") / "store"), durable=False)
    every = [f"p:{j}" for j in range(600)]
    store.append([Event("A" if n % 2 else "B", n, [f"p:{n}", "all"] + (every if n == 7 else []), None, f"e-{n}")
                  for n in range(600)])
    with store.locked():
        store.flush_index()
    yield store
    store.close()


@pytest.mark.parametrize("query", [
    Query([QueryItem(tags=[f"p:{i}"]) for i in range(n)]) for n in (499, 500, 501, 1200)
] + [
    Query([QueryItem(tags=[f"p:{i}" for i in range(n)])]) for n in (499, 501, 600)
] + [
    Query([QueryItem(types=["A"], tags=[f"p:{i}" for i in range(550)] + ["all"])]),
    Query([QueryItem(tags=[f"p:{i}" for i in range(550)] + ["absent"])]),
    Query([QueryItem(types=["B"], tags=[f"p:{i}"]) for i in range(0, 1200, 2)]),
], ids=["499 items", "500 items", "501 items", "1200 items", "499 tags", "501 tags", "600 tags",
        "550 tags and a type", "550 tags and an absent one", "600 items with a type"])
def test_queries_of_any_size(tagged: EventStore, query: Query) -> None:
    # SQLite takes at most 500 terms in one compound SELECT; a query may have more.
    everything = [(e.position, e.event) for e in tagged.read()]
    want = [p for p, e in everything if query.matches(e.type, e.tags)]
    assert [e.position for e in tagged.read(query)] == want
    assert [e.position for e in tagged.read(query, backwards=True, limit=3)] == want[::-1][:3]
    head = tagged.head()
    if want:
        with pytest.raises(AppendConditionFailed) as info:
            tagged.append(Event("C", 0), AppendCondition(query, after=want[0] - 1))
        assert info.value.position == want[0]
    assert tagged.head() == head
