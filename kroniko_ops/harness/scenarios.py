"""Scenarios ("shapes") that the crash and fault sweeps run many times over: one append, or one
maintenance operation, against a prepared store.

A shape fixes the store the append meets (empty, a few events, a torn tail left by a dead
writer, an index behind its log or about to be caught up inside the append, a synced position
written before a reboot, the batch already committed, an active segment too full for the batch)
and the append itself (batch size, durability, a condition that passes or fails, explicit or
generated ids, the store's segment size). :func:`prepare` builds the store once as a template
and records its setup as history; each sweep case copies the template, runs the call once under
a kill or a fault, and then checks the result with the full checker.

Engine parameters are passed, never patched: a shape that must roll a segment creates its store
with a small ``segment_bytes``; one that must cross the engine's indexing step sets the index
back (``Index.truncate``) so that the append has the records to index.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from typing import Any

from .. import fileio
from ..codec import encode_event
from ..errors import AppendConditionFailed, DurabilityError, KronikoError, NothingWritten
from ..format import record as recfmt
from ..layout import TMP_PREFIX
from ..model import Event
from ..store import INDEX_EVERY, EventStore
from ..synced import SyncedFile
from . import history as hist
from . import maint
from .checker import Violation
from .workload import SMALL_SEGMENT, EventPlan, QuerySpec, condition_for

SETUPS = ("empty", "some", "torn-tail", "index-lag", "index-step", "reboot", "committed", "full-segment", "wreck")
ACTIONS = ("append", "compact", "backup", "recover")
LONG_TAG = "long:" + "x" * 200
SWEEP_WORKER, RETRY_WORKER, AFTER_WORKER = 1, 2, 3  # who makes the call, its retry, the append after


@dataclass(frozen=True)
class Shape:
    """One append scenario. ``condition``: ``none``, ``pass`` (nothing matches after the head)
    or ``fail`` (an event of the setup matches). ``setup``: one of :data:`SETUPS`.
    ``segment_bytes`` is passed when the template store is created. ``action`` is the
    operation under test: ``append``, or a maintenance one (:data:`ACTIONS`) run on a store
    with sealed segments, an index behind its log and a dead writer's leftovers."""

    name: str
    batch: int = 1
    durable: bool = False
    condition: str = "none"
    explicit: bool = True
    setup: str = "some"
    long_tag: bool = False
    segment_bytes: int | None = None
    action: str = "append"


def default_shapes(full: bool = False) -> list[Shape]:
    """The shapes the sweeps cover: every setup, sizes 1/3/20, durable or not, each condition,
    explicit and generated ids, a segment roll, and the engine's indexing step."""
    shapes = [
        Shape("empty-1", 1, durable=True, setup="empty"),
        Shape("some-1", 1, durable=True),
        Shape("some-3-fast", 3),
        Shape("some-3-pass", 3, durable=True, condition="pass"),
        Shape("some-2-fail", 2, durable=True, condition="fail"),
        Shape("some-20", 20, durable=True),
        Shape("generated-4", 4, durable=True, explicit=False),
        Shape("torn-tail-2", 2, durable=True, setup="torn-tail"),
        Shape("torn-tail-2-fast-pass", 2, condition="pass", setup="torn-tail"),
        Shape("index-lag-3", 3, durable=True, setup="index-lag"),
        Shape("index-lag-2-pass", 2, condition="pass", setup="index-lag"),
        Shape("index-step-20", 20, durable=True, setup="index-step"),
        Shape("reboot-2", 2, durable=True, setup="reboot"),
        Shape("retry-committed-3", 3, durable=True, setup="committed"),
        Shape("long-tag-2", 2, durable=True, long_tag=True),
        Shape("roll-1", 1, durable=True, setup="full-segment", segment_bytes=SMALL_SEGMENT),
        Shape("roll-20-fast-pass", 20, condition="pass", setup="full-segment", segment_bytes=SMALL_SEGMENT),
        Shape("generated-20-fail", 20, durable=True, condition="fail", explicit=False),
    ]
    if full:
        shapes += [
            Shape("torn-tail-20-roll", 20, durable=True, setup="torn-tail", segment_bytes=SMALL_SEGMENT,
                  long_tag=True),
            Shape("index-lag-20-fail", 20, durable=True, condition="fail", setup="index-lag"),
            Shape("reboot-20-generated", 20, explicit=False, setup="reboot"),
            Shape("index-step-roll-20-pass", 20, durable=True, condition="pass", setup="index-step",
                  segment_bytes=SMALL_SEGMENT),
        ]
    return shapes


def maintenance_shapes() -> list[Shape]:
    """Compaction, backup, and recovery of a wrecked store (torn tail, index behind, a stale
    temp file), each on a store with sealed segments."""
    return [
        Shape("compact", durable=True, action="compact", segment_bytes=SMALL_SEGMENT),
        Shape("compact-torn-tail", action="compact", setup="torn-tail", segment_bytes=SMALL_SEGMENT),
        Shape("backup", durable=True, action="backup", segment_bytes=SMALL_SEGMENT),
        Shape("recover-wreck", durable=True, action="recover", setup="wreck", segment_bytes=SMALL_SEGMENT),
    ]


@dataclass
class Prepared:
    """A template store and the call to make against copies of it."""

    shape: Shape
    template: str
    history: hist.History
    ids: tuple[str, ...]
    plans: tuple[EventPlan, ...]
    query: QuerySpec | None
    after: int | None
    head: int

    def events(self) -> list[Event]:
        """The batch for the engine (ids only when explicit; the id is always in ``data``)."""
        return [Event(p.type, {"op": eid}, p.tags, id=eid if self.shape.explicit else None)
                for eid, p in zip(self.ids, self.plans, strict=True)]

    def call(self, path: str) -> dict[str, Any]:
        """Make the call against the store at ``path``; the outcome as a JSON-able dict."""
        if self.shape.action != "append":
            return maint.call(self.shape.action, path)
        with EventStore(path, durable=self.shape.durable, create=False) as s:
            try:
                condition = condition_for(self.query, self.after) if self.query is not None else None
                return {"outcome": hist.COMMITTED, "pos": s.append(self.events(), condition)}
            except AppendConditionFailed as exc:
                return {"outcome": hist.REJECTED, "conflict": exc.position}
            except NothingWritten as exc:
                return {"outcome": hist.NOT_WRITTEN, "error": f"{type(exc).__name__}: {exc}"}
            except (DurabilityError, OSError) as exc:
                return {"outcome": hist.UNKNOWN, "error": f"{type(exc).__name__}: {exc}"}
            except KronikoError as exc:
                return {"outcome": hist.ERROR, "error": f"{type(exc).__name__}: {exc}"}

    def reset(self, case: str) -> str:
        """A fresh copy of the template at ``case`` (and no backup left from the last case)."""
        maint.clear_backups(case)
        return copy_store(self.template, case)

    def followup(self, case: str, history: hist.History) -> list[Violation]:
        """After the crash or fault (and recovery): what a user does next must work. An append
        is retried (same ids: it must land exactly once); a maintenance operation is run again
        and must succeed. Then one more append. Everything is recorded in ``history``."""
        if self.shape.action != "append":
            return maint.followup(self.shape.action, case) + one_more(case, self.shape.durable, history)
        if self.shape.explicit:
            t = time.monotonic_ns()
            retry = self.call(case)
            op = self.record(RETRY_WORKER, 0, t, time.monotonic_ns(), retry, kind="retry")
            assert op is not None
            history.ops.append(op)
        return one_more(case, self.shape.durable, history)

    def record(self, worker: int, index: int, invoke: int, complete: int | None, result: dict[str, Any] | None,
               kind: str = "append") -> hist.OpRecord | None:
        """The history record of one call of this shape's append (None for maintenance, which
        appends nothing: the checker then proves it changed no event)."""
        if self.shape.action != "append":
            return None
        op = hist.OpRecord(worker, index, kind if self.query is None else "conditional", self.ids, self.plans,
                           conditional=self.query is not None, query=self.query, after=self.after,
                           invoke=invoke, complete=complete)
        if result is not None:
            op.outcome = result["outcome"]
            op.position, op.conflict, op.error = result.get("pos"), result.get("conflict"), result.get("error")
        return op


def copy_store(src: str, dst: str) -> str:
    """A fresh copy of a template store at ``dst`` (small stores: every file is copied, since
    the active segment and the index are written in place)."""
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _setup_append(s: EventStore, h: hist.History, index: int, ids: tuple[str, ...],
                  plans: tuple[EventPlan, ...]) -> int:
    t0 = time.monotonic_ns()
    pos = s.append([Event(p.type, {"op": i}, p.tags, id=i) for i, p in zip(ids, plans, strict=True)])
    h.ops.append(hist.OpRecord(0, index, "append", ids, plans, invoke=t0, complete=time.monotonic_ns(),
                               outcome=hist.COMMITTED, position=pos))
    return pos


def _filler(s: EventStore, h: hist.History, index: int, n: int) -> None:
    _setup_append(s, h, index, tuple(f"f.{index}.{k}" for k in range(n)),
                  tuple(EventPlan("C", (f"s:{k % 4}", "cart:3")) for k in range(n)))


def prepare(shape: Shape, folder: str) -> Prepared:
    """Build the shape's template store in ``folder`` and its setup history."""
    if os.path.exists(folder):
        shutil.rmtree(folder)
    h = hist.History()
    extra = (LONG_TAG,) if shape.long_tag else ()
    plans = tuple(EventPlan("A", ("cart:9", f"s:{k % 2}", *extra)) for k in range(shape.batch))
    ids = tuple(f"x.{k}" for k in range(shape.batch))
    with EventStore(folder, durable=shape.durable, segment_bytes=shape.segment_bytes) as s:
        if shape.setup != "empty":
            _setup_append(s, h, 0, ("p.0",), (EventPlan("A", ("cart:1",)),))
            _setup_append(s, h, 1, ("p.1", "p.2"), (EventPlan("B", ("cart:1", "s:0")), EventPlan("A", ("cart:2",))))
        if shape.setup == "committed":
            _setup_append(s, h, 99, ids, plans)
        if shape.setup == "index-step":
            for k in range(INDEX_EVERY // 20 + 1):
                _filler(s, h, 10 + k, 20)
        if shape.setup == "full-segment":
            k = 0
            while s.synced_state().end < SMALL_SEGMENT - 300:  # less room than one record
                _filler(s, h, 10 + k, 1)
                k += 1
        if shape.action != "append":
            maint.setup(s, lambda i, n: _filler(s, h, i, n))
        head = s.head()
    if shape.setup in ("index-lag", "index-step", "wreck"):
        # As if the last writers died after committing but before indexing their records.
        _index_back_to(folder, head - (INDEX_EVERY - 10 if shape.setup == "index-step" else 2))
    if shape.setup == "reboot":
        _synced_from_another_boot(folder)
    if shape.setup in ("torn-tail", "wreck"):
        _torn_tail(folder)
    if shape.setup == "wreck":
        # A temp file of a writer that is gone (pid beyond any live one).
        with open(os.path.join(folder, "log", f"{TMP_PREFIX}4194000-0badc0ffee00"), "wb") as f:
            f.write(b"half a seal")
    query: QuerySpec | None = None
    after: int | None = None
    if shape.condition == "pass":
        query, after = ((("A",), ("cart:9",)), ((), ("s:3",))), head
        # The head the condition names was read by every process that appends with it.
        for w in (SWEEP_WORKER, RETRY_WORKER):
            h.reads.append(hist.ReadRecord(w, -1, 0, 0, head))
    elif shape.condition == "fail":
        query, after = ((("A",), ("cart:1",)),), None
    return Prepared(shape, folder, h, ids, plans, query, after, head)


def _index_back_to(folder: str, position: int) -> None:
    """Set the index back to ``position`` (its rows past it dropped), through the engine."""
    with EventStore(folder, create=False, durable=False) as s:
        chain = next(iter(s.records(position, position))).chain if position else recfmt.GENESIS
        s.index.truncate(position, chain)


def _synced_from_another_boot(folder: str) -> None:
    """Stamp the synced position with another boot id, as a power cut leaves it: the next
    writer must re-verify everything past it instead of trusting it."""
    with EventStore(folder, create=False, durable=False) as s:
        state = s.synced_state()
        sf = SyncedFile(s.layout.synced_file)
        try:
            fileio.pwrite_all(sf.fd, replace(state, boot="another-boot").encode(), 0, sf.path)
        finally:
            sf.close()


def _torn_tail(folder: str) -> None:
    """A dead writer's leftovers in the active segment: one whole record without its commit
    mark, then the first half of the record that would have carried it."""
    with EventStore(folder, create=False, durable=False) as s:
        state = s.synced_state()
        path = s.view.active.path if s.view.active is not None else ""
    items = [encode_event(Event("A", {"op": f"ghost-{k}"}, ("cart:1",), id=f"ghost-{k}")) for k in range(2)]
    data, sizes, _chain = recfmt.encode(state.position + 1, state.chain, items)
    with open(path, "r+b") as f:  # where a writer writes: at the synced end, over the preallocated zeros
        f.seek(state.end)
        f.write(data[: sizes[0] + sizes[1] // 2])


def one_more(case: str, durable: bool, history: hist.History) -> list[Violation]:
    """The store takes a new append after the crash or fault (recorded for the checker)."""
    t = time.monotonic_ns()
    op = hist.OpRecord(AFTER_WORKER, 1, "append", ("after.0",), (EventPlan("Z", ("s:0",)),), invoke=t)
    history.ops.append(op)
    try:
        with EventStore(case, durable=durable, create=False) as s:
            op.position = s.append(Event("Z", {"op": "after.0"}, ("s:0",), id="after.0"))
    except KronikoError as exc:
        op.complete, op.outcome, op.error = time.monotonic_ns(), hist.ERROR, f"{type(exc).__name__}: {exc}"
        return [Violation(6, "store-unusable", f"a new append after recovery failed: {exc}", [op])]
    op.complete, op.outcome = time.monotonic_ns(), hist.COMMITTED
    return []
