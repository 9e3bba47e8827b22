"""Recorded runs: worker processes append and read on a store while every change they make to
the disk is recorded; then the crash states of :mod:`.model` are built and checked."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from ...report import Report
from ...store import EventStore
from . import materialize, procs
from .model import Model
from .promises import Promises
from .recorder import load
from .trace import trace_problems

StoreFactory = Callable[..., EventStore]
STORE = procs.STORE


@dataclass(frozen=True)
class Action:
    """A maintenance operation the simulator cuts the power during: ``prepare(root)`` runs
    before the recording (its results are durable), ``run(root)`` under it, and
    ``verify(root)`` on every crash state after the store itself was checked (problems found)."""

    prepare: Callable[[str], None]
    run: Callable[[str], Report | None]
    verify: Callable[[str], list[str]]
    output: str | None = None  # what it makes under the run's root, if anything
    audit: Callable[[str], list[str]] | None = None  # once, on the run's own folder as it ended


ACTIONS: dict[str, Action] = {}  # filled by :mod:`.actions`


@dataclass(frozen=True)
class Scenario:
    """What the workers of one recorded run do."""

    name: str
    workers: int = 0
    appends: int = 6  # per worker
    max_batch: int = 1
    readers: int = 0  # extra processes that only read, recording what they were shown
    segment_bytes: int = 1 << 20
    seed: int = 0
    factory: StoreFactory = field(default=EventStore, compare=False)
    prefill: int = 0  # events appended (and synced) before the recording starts
    action: str | None = None  # a maintenance operation of :data:`ACTIONS`, run while recording
    orphans: int = 0  # batches whose writer dies before its fsync, then retried or conflicted with
    fsync_pause_us: tuple[int, int] = (0, 3000)  # writers pause this long (least, most) before each fsync of the log
    lost_tail: bool = False  # instead of a recorded run: the disk loses acknowledged records (:mod:`.losttail`)


@dataclass
class Recorded:
    """A recorded run: its folder, the crash model and the histories of its processes."""

    base: str
    model: Model
    history: list[dict]
    factory: StoreFactory = EventStore
    problems: list[str] = field(default_factory=list)  # of the run itself (its trace and history)
    promises: Promises = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.promises = Promises(self.history)

    @property
    def store(self) -> str:
        """The store's folder as the run left it."""
        return os.path.join(self.base, "run", STORE)


def record(sc: Scenario, base: str, timeout: float = 60.0) -> Recorded:
    """Create a store, snapshot it, run the scenario's processes under recording (writers, the
    maintenance operation and readers together; then the orphaner, alone with the readers), and
    build the crash model of what they did, with the problems of the run itself."""
    root = os.path.join(base, "run")
    os.makedirs(os.path.join(base, "hist"))
    sc.factory(os.path.join(root, STORE), segment_bytes=sc.segment_bytes).close()
    if sc.prefill:
        procs.prefill(sc, base)
    if sc.action is not None:
        ACTIONS[sc.action].prepare(root)
    os.sync()  # the starting point is durable
    materialize.snapshot(root, os.path.join(base, materialize.SNAPSHOT))
    ctx = mp.get_context("fork")  # children inherit the factory and the mutant's patches
    stop = time.monotonic() + timeout
    writing = ctx.Event()
    busy = [ctx.Process(target=procs.guarded("w", procs.writer), args=(sc, base, k, writing))
            for k in range(sc.workers)]
    if sc.action is not None:
        busy.append(ctx.Process(target=procs.guarded("action", procs.action), args=(sc, base, writing)))
    readers = [ctx.Process(target=procs.guarded("r", procs.reader), args=(sc, base, k, stop))
               for k in range(sc.readers)]
    try:
        for p in busy + readers:
            p.start()
        for p in busy:
            p.join(max(0.1, stop - time.monotonic()))
        if sc.orphans:  # alone with the readers: no other writer's fsync covers the orphaned batch
            orphaner = ctx.Process(target=procs.guarded("o", procs.orphaner), args=(sc, base, 0))
            busy.append(orphaner)
            orphaner.start()
            orphaner.join(max(0.1, stop - time.monotonic()))
    finally:
        for p in busy + readers:
            if p.is_alive():
                p.kill()
            p.join(5)
    index = os.path.join(root, STORE, "index")
    shutil.copytree(index, os.path.join(base, materialize.FINAL_INDEX, STORE, "index"))
    rec = load_recorded(base, sc.factory)
    audit = ACTIONS[sc.action].audit if sc.action is not None else None
    if audit is not None:
        try:
            rec.problems.extend(audit(root))
        except Exception as exc:  # what the operation made does not even open: a finding too
            rec.problems.append(f"checking what the {sc.action} operation made failed: {type(exc).__name__}: {exc}")
    return rec


def load_recorded(base: str, factory: StoreFactory = EventStore) -> Recorded:
    """A run recorded into ``base`` (also one kept because one of its states failed), checked
    as a whole: its trace and history (:mod:`.trace`)."""
    root = os.path.join(base, "run")
    snap = os.path.join(base, materialize.SNAPSHOT)
    initial = {os.path.relpath(os.path.join(d, n), snap) for d, _s, names in os.walk(snap) for n in names}
    history: list[dict] = []
    for name in sorted(os.listdir(os.path.join(base, "hist"))):
        with open(os.path.join(base, "hist", name), "rb") as f:
            history.extend({**orjson.loads(line), "who": name.removesuffix(".jsonl")}
                           for line in f if line.endswith(b"\n"))
    model = Model.build(load(os.path.join(base, "ops")), root, initial)
    return Recorded(base, model, history, factory, trace_problems(model, history))
