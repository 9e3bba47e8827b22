"""Recorded runs: worker processes append and read on a store while every change they make to
the disk is recorded; then the crash states of :mod:`.model` are built and checked."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from ...model import AppendCondition, Event, Query, QueryItem
from ...store import EventStore
from . import materialize
from .model import Model
from .recorder import Recorder, load

StoreFactory = Callable[..., EventStore]
STORE = "store"


@dataclass(frozen=True)
class Action:
    """A maintenance operation the simulator cuts the power during: ``prepare(root)`` runs
    before the recording (its results are durable), ``run(root)`` under it, and
    ``verify(root)`` on every crash state after the store itself was checked (problems found)."""

    prepare: Callable[[str], None]
    run: Callable[[str], None]
    verify: Callable[[str], list[str]]
    output: str | None = None  # what it makes under the run's root, if anything


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


@dataclass
class Recorded:
    """A recorded run: its folder, the crash model and the histories of its processes."""

    base: str
    model: Model
    history: list[dict]

    @property
    def store(self) -> str:
        """The store's folder as the run left it."""
        return os.path.join(self.base, "run", STORE)


def _history(base: str, name: str) -> str:
    return os.path.join(base, "hist", f"{name}.jsonl")


def _log(path: str, entry: dict) -> None:
    with open(path, "ab", buffering=0) as f:
        f.write(orjson.dumps(entry) + b"\n")


def _writer(sc: Scenario, base: str, k: int) -> None:
    rng = random.Random(sc.seed * 1000 + k)
    hist = _history(base, f"w{k}")
    Recorder(os.path.join(base, "ops")).start()
    store = sc.factory(os.path.join(base, "run", STORE), create=False)
    tags = [f"t{j}" for j in range(3)]
    for n in range(sc.appends):
        tag = rng.choice(tags)
        query = Query([QueryItem(tags=[tag])])
        t0 = time.monotonic_ns()
        result = store.read(query)
        shown = [[e.position, e.id] for e in result]
        _log(hist, {"ev": "read", "t0": t0, "t1": time.monotonic_ns(), "head": result.head, "events": shown})
        size = rng.randint(1, sc.max_batch)
        events = [Event("E", {"w": k, "n": n, "i": i, "pad": "x" * rng.randint(0, 300)}, tags=[tag],
                        id=f"w{k}-{n}-{i}") for i in range(size)]
        condition = AppendCondition(query, after=result.head) if rng.random() < 0.5 else None
        t0 = time.monotonic_ns()
        try:
            last = store.append(events, condition)
        except Exception as exc:  # a rejection or a failure: not acknowledged, nothing to keep
            _log(hist, {"ev": "fail", "t0": t0, "t1": time.monotonic_ns(), "error": type(exc).__name__})
            continue
        _log(hist, {"ev": "append", "t0": t0, "t1": time.monotonic_ns(), "last": last,
                    "ids": [e.id for e in events]})
    store.close()


def _reader(sc: Scenario, base: str, k: int, stop: float) -> None:
    hist = _history(base, f"r{k}")
    store = sc.factory(os.path.join(base, "run", STORE), create=False)
    while time.monotonic() < stop:
        t0 = time.monotonic_ns()
        result = store.read()
        shown = [[e.position, e.id] for e in result]
        _log(hist, {"ev": "read", "t0": t0, "t1": time.monotonic_ns(), "head": result.head, "events": shown})
    store.close()


def _prefill(sc: Scenario, base: str) -> None:
    """Events that exist before the run: acknowledged long before any cut."""
    rng = random.Random(sc.seed)
    hist = _history(base, "prefill")
    store = sc.factory(os.path.join(base, "run", STORE), create=False)
    n = 0
    while n < sc.prefill:
        size = min(sc.prefill - n, rng.randint(1, 5))
        events = [Event("P", {"n": n + i, "pad": "p" * rng.randint(0, 200)}, tags=[f"t{(n + i) % 3}"],
                        id=f"p-{n + i}") for i in range(size)]
        last = store.append(events)
        _log(hist, {"ev": "append", "t0": 0, "t1": 0, "last": last, "ids": [e.id for e in events]})
        n += size
    store.close()


def _action(sc: Scenario, base: str) -> None:
    hist = _history(base, "action")
    t0 = time.monotonic_ns()
    _log(hist, {"ev": "action-start", "name": sc.action, "t0": t0, "t1": t0})
    Recorder(os.path.join(base, "ops")).start()
    try:
        ACTIONS[sc.action or ""].run(os.path.join(base, "run"))
        ok = True
    except Exception as exc:  # recorded: the states still have to be sound
        ok = False
        _log(hist, {"ev": "action-error", "t0": t0, "t1": time.monotonic_ns(), "error": repr(exc)})
    _log(hist, {"ev": "action", "name": sc.action, "t0": t0, "t1": time.monotonic_ns(), "ok": ok})


def record(sc: Scenario, base: str, timeout: float = 60.0) -> Recorded:
    """Create a store, snapshot it, run the scenario's processes under recording, and build the
    crash model of what they did."""
    root = os.path.join(base, "run")
    os.makedirs(os.path.join(base, "hist"))
    sc.factory(os.path.join(root, STORE), segment_bytes=sc.segment_bytes).close()
    if sc.prefill:
        _prefill(sc, base)
    if sc.action is not None:
        ACTIONS[sc.action].prepare(root)
    os.sync()  # the starting point is durable
    initial = materialize.snapshot(root, os.path.join(base, materialize.SNAPSHOT))
    ctx = mp.get_context("fork")  # children inherit the factory, mutants defined in tests included
    stop = time.monotonic() + timeout
    procs = [ctx.Process(target=_writer, args=(sc, base, k)) for k in range(sc.workers)]
    if sc.action is not None:
        procs.append(ctx.Process(target=_action, args=(sc, base)))
    procs += [ctx.Process(target=_reader, args=(sc, base, k, stop)) for k in range(sc.readers)]
    for p in procs:
        p.start()
    try:
        for p in procs[: sc.workers + (sc.action is not None)]:
            p.join(max(0.1, stop - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)
    index = os.path.join(root, STORE, "index")
    shutil.copytree(index, os.path.join(base, materialize.FINAL_INDEX, STORE, "index"))
    ops = load(os.path.join(base, "ops"))
    history: list[dict] = []
    for name in sorted(os.listdir(os.path.join(base, "hist"))):
        with open(os.path.join(base, "hist", name), "rb") as f:
            history.extend({**orjson.loads(line), "who": name} for line in f if line.endswith(b"\n"))
    return Recorded(base, Model.build(ops, root, initial), history)


def load_recorded(base: str) -> Recorded:
    """A run recorded earlier into ``base`` (kept because one of its states failed)."""
    root = os.path.join(base, "run")
    snap = os.path.join(base, materialize.SNAPSHOT)
    initial = {os.path.relpath(os.path.join(d, n), snap) for d, _s, names in os.walk(snap) for n in names}
    history: list[dict] = []
    for name in sorted(os.listdir(os.path.join(base, "hist"))):
        with open(os.path.join(base, "hist", name), "rb") as f:
            history.extend({**orjson.loads(line), "who": name} for line in f if line.endswith(b"\n"))
    return Recorded(base, Model.build(load(os.path.join(base, "ops")), root, initial), history)
