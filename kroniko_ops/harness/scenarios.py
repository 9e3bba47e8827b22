"""Scenarios ("shapes") that the crash and fault sweeps run many times over: one append, or one
maintenance operation, against a prepared store.

A shape fixes the store the append meets (empty, a few events, a torn tail left by a dead
writer, an index behind its log, the batch already committed, a store about to cross the
index's durability step) and the append itself (batch size, durability, a condition that passes
or fails, explicit or generated ids). :func:`prepare` builds the store once as a template and
records its setup as history; each sweep case copies the template, runs the call once under a
kill or a fault, and then checks the result with the full checker.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .. import index as index_module
from .. import store as store_module
from ..errors import AppendConditionFailed, DurabilityError, KronikoError
from ..index import BOOT_ID, Checkpoint
from ..layout import TMP_PREFIX
from ..log import LINE_LEN, LogLine, encode_line
from ..model import Event
from ..store import EventStore
from . import history as hist
from . import maint
from .checker import Violation
from .workload import EventPlan, QuerySpec, condition_for

SETUPS = ("empty", "some", "torn-tail", "index-lag", "reboot", "committed", "wreck")
ACTIONS = ("append", "compact", "backup", "recover")
LONG_TAG = "long:" + "x" * 200  # its index file name is hashed, with the name kept beside it


@dataclass(frozen=True)
class Shape:
    """One append scenario. ``condition``: ``none``, ``pass`` (nothing matches after the head)
    or ``fail`` (an event of the setup matches). ``setup``: one of :data:`SETUPS`.
    ``durable_every`` lowers the engine's index durability step so that this append crosses it
    (the step is 1024 positions; a small one keeps the scenario's store small). ``action`` is
    the operation under test: ``append``, or a maintenance one (:data:`ACTIONS`) run on a store
    with loose and packed events, a dangling event and a dead writer's leftovers."""

    name: str
    batch: int = 1
    durable: bool = False
    condition: str = "none"
    explicit: bool = True
    setup: str = "some"
    long_tag: bool = False
    durable_every: int | None = None
    syncfs_over: int | None = None
    action: str = "append"


def default_shapes(full: bool = False) -> list[Shape]:
    """The shapes the sweeps cover: every setup, sizes 1/3/20, durable or not, each condition,
    explicit and generated ids, a hashed index name, and the index durability step."""
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
        Shape("reboot-2", 2, durable=True, setup="reboot"),
        Shape("retry-committed-3", 3, durable=True, setup="committed"),
        Shape("long-tag-2", 2, durable=True, long_tag=True),
        Shape("durable-step-5", 5, durable=True, durable_every=8),
        Shape("durable-step-syncfs-5", 5, durable=True, durable_every=8, syncfs_over=0),
        Shape("some-20-fast-pass", 20, condition="pass"),
        Shape("generated-20-fail", 20, durable=True, condition="fail", explicit=False),
    ]
    if full:
        shapes += [
            Shape("torn-tail-20-step", 20, durable=True, setup="torn-tail", durable_every=16, long_tag=True),
            Shape("index-lag-20-fail", 20, durable=True, condition="fail", setup="index-lag"),
            Shape("reboot-20-generated", 20, explicit=False, setup="reboot"),
        ]
    return shapes


def maintenance_shapes() -> list[Shape]:
    """Compaction (packing, merging packs, pruning a dangling event, past a dead writer's tail),
    backup, and recovery of a wrecked store (torn tail, index behind, a stale temp file)."""
    return [
        Shape("compact", durable=True, action="compact"),
        Shape("compact-torn-tail", action="compact", setup="torn-tail"),
        Shape("backup", durable=True, action="backup"),
        Shape("recover-wreck", durable=True, action="recover", setup="wreck"),
    ]


@contextmanager
def engine_tuned(shape: Shape) -> Iterator[None]:
    """Apply the shape's engine tuning (the index durability step, and how many lists it flushes
    one by one before it flushes the file system instead) for the ``with`` body."""
    if shape.durable_every is None:
        yield
        return
    saved = store_module.DURABLE_EVERY, index_module.SYNCFS_OVER
    store_module.DURABLE_EVERY = shape.durable_every
    if shape.syncfs_over is not None:
        index_module.SYNCFS_OVER = shape.syncfs_over
    try:
        yield
    finally:
        store_module.DURABLE_EVERY, index_module.SYNCFS_OVER = saved


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
            op = self.record(2, 0, t, time.monotonic_ns(), retry, kind="retry")
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
    """Copy a template store (a fresh folder each case). Event files are immutable (never
    rewritten, only linked and unlinked), so they are hard-linked; everything else is copied."""
    if os.path.exists(dst):
        shutil.rmtree(dst)
    events = os.path.join(src, "events") + os.sep

    def copy(a: str, b: str) -> None:
        if a.startswith(events) and not os.path.basename(a).startswith(TMP_PREFIX):
            os.link(a, b)
        else:
            shutil.copyfile(a, b)
            shutil.copymode(a, b)

    shutil.copytree(src, dst, symlinks=True, copy_function=copy)
    return dst


def _setup_append(s: EventStore, h: hist.History, index: int, ids: tuple[str, ...],
                  plans: tuple[EventPlan, ...]) -> int:
    t0 = time.monotonic_ns()
    pos = s.append([Event(p.type, {"op": i}, p.tags, id=i) for i, p in zip(ids, plans, strict=True)])
    h.ops.append(hist.OpRecord(0, index, "append", ids, plans, invoke=t0, complete=time.monotonic_ns(),
                               outcome=hist.COMMITTED, position=pos))
    return pos


def prepare(shape: Shape, folder: str) -> Prepared:
    """Build the shape's template store in ``folder`` and its setup history."""
    if os.path.exists(folder):
        shutil.rmtree(folder)
    h = hist.History()
    extra = (LONG_TAG,) if shape.long_tag else ()
    plans = tuple(EventPlan("A", ("cart:9", f"s:{k % 2}", *extra)) for k in range(shape.batch))
    ids = tuple(f"x.{k}" for k in range(shape.batch))
    with EventStore(folder, durable=shape.durable) as s:
        if shape.setup != "empty":
            _setup_append(s, h, 0, ("p.0",), (EventPlan("A", ("cart:1",)),))
            _setup_append(s, h, 1, ("p.1", "p.2"), (EventPlan("B", ("cart:1", "s:0")), EventPlan("A", ("cart:2",))))
        if shape.setup == "committed":
            _setup_append(s, h, 99, ids, plans)
        if shape.action != "append":
            maint.setup(s, lambda i, n: _setup_append(s, h, i, tuple(f"q.{i}.{k}" for k in range(n)), tuple(
                EventPlan("C", (f"s:{k % 4}", "cart:3")) for k in range(n))))
        head = s.head()
        if shape.setup in ("index-lag", "wreck"):
            # As if the last writer died after writing its index lines but before the checkpoint.
            cp = s.index.read_checkpoint()
            s.index.write_checkpoint(Checkpoint(head - 2, min(cp.durable, head - 2), BOOT_ID), durable=False)
        if shape.setup == "reboot":
            # As after a power loss: the checkpoint was written on another boot, so only its
            # durable part is trusted and the next writer cuts and rewrites the index tail.
            cp = s.index.read_checkpoint()
            s.index.write_checkpoint(Checkpoint(cp.written, 0, "another-boot"), durable=False)
        if shape.setup in ("torn-tail", "wreck"):
            _torn_tail(s, head)
        if shape.setup == "wreck":
            # A temp file of a writer that is gone (pid beyond any live one).
            with open(os.path.join(s.layout.events, ".tmp-4194000-0badc0ffee00"), "wb") as f:
                f.write(b'{"half": ')
    query: QuerySpec | None = None
    after: int | None = None
    if shape.condition == "pass":
        query, after = ((("A",), ("cart:9",)), ((), ("s:3",))), head
    elif shape.condition == "fail":
        query, after = ((("A",), ("cart:1",)),), 0
    return Prepared(shape, folder, h, ids, plans, query, after, head)


def _torn_tail(s: EventStore, head: int) -> None:
    """A dead writer's leftovers: one whole line without its commit mark, then a torn one."""
    ghost = LogLine(head + 1, "ghost-0", "0" * 64, "0" * 64, False)
    with open(s.layout.log, "ab") as f:
        torn = encode_line(LogLine(head + 2, "ghost-1", "1" * 64, "1" * 64, True))[: LINE_LEN // 2]
        f.write(encode_line(ghost) + torn)


def one_more(case: str, durable: bool, history: hist.History) -> list[Violation]:
    """The store takes a new append after the crash or fault (recorded for the checker)."""
    t = time.monotonic_ns()
    op = hist.OpRecord(2, 1, "append", ("after.0",), (EventPlan("Z", ("s:0",)),), invoke=t)
    history.ops.append(op)
    try:
        with EventStore(case, durable=durable, create=False) as s:
            op.position = s.append(Event("Z", {"op": "after.0"}, ("s:0",), id="after.0"))
    except KronikoError as exc:
        op.complete, op.outcome, op.error = time.monotonic_ns(), hist.ERROR, f"{type(exc).__name__}: {exc}"
        return [Violation(6, "store-unusable", f"a new append after recovery failed: {exc}", [op])]
    op.complete, op.outcome = time.monotonic_ns(), hist.COMMITTED
    return []
