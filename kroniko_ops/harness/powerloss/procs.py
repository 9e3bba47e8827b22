"""The processes of a recorded run: writers, readers, the orphaner (retries and rejections that
lean on a batch whose writer died before its fsync) and the maintenance operation. Each records
its disk changes (:class:`~.recorder.Recorder`) and logs what every call returned, and when, to
its own history file (one JSON line per call)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ... import fileio
from ...errors import AppendConditionFailed
from ...model import AppendCondition, Event, Query, QueryItem
from .recorder import Recorder

if TYPE_CHECKING:
    from .run import Scenario

STORE = "store"
ACTION_DONE = "action-done"  # beside the run folder (unrecorded): writers stop once it exists
WRITER_CAP = 12  # a writer running beside a maintenance operation appends at most this many times its quota


def history_file(base: str, name: str) -> str:
    """Where process ``name`` logs its calls."""
    return os.path.join(base, "hist", f"{name}.jsonl")


def log(path: str, entry: dict) -> None:
    """Append one entry (one unbuffered write: a SIGKILL cannot leave half a line that parses)."""
    with open(path, "ab", buffering=0) as f:
        f.write(orjson.dumps(entry) + b"\n")


def guarded(name: str, body: Callable[..., None]) -> Callable[..., None]:
    """``body`` as a process's target that logs an exception (``error``: a finding of the run,
    see :mod:`.trace`) instead of printing a traceback."""
    def target(sc: Scenario, base: str, *args: Any) -> None:
        try:
            body(sc, base, *args)
        except Exception as exc:
            who = f"{name}{args[0]}" if args and isinstance(args[0], int) else name
            log(history_file(base, f"{who}-error"), {"ev": "error", "t0": 0, "t1": 0,
                                                      "error": f"{type(exc).__name__}: {exc}"})
    return target


def _store_path(base: str) -> str:
    return os.path.join(base, "run", STORE)


def pause_before_log_fsync(least_us: int, most_us: int, seed: int, writing: Any):  # type: ignore[no-untyped-def]
    """A fault injector that fails nothing: it sleeps ``least_us`` to ``most_us`` before each
    fsync of the log, so the windows between a write and its fsync (where readers, backups and
    other writers must not take unsynced bytes for durable ones) are wide enough to be hit. It
    sets ``writing`` as it starts to pause: unsynced records are in the log then."""
    rng = random.Random(seed)

    def injector(op: str, path: str) -> None:
        if op == "fsync" and path == "active segment":
            writing.set()
            time.sleep(rng.randint(least_us, most_us) / 1e6)

    return injector


def _die_before_log_fsync(op: str, path: str) -> None:
    if op == "fsync" and path == "active segment":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # pragma: no cover - the signal is delivered before this returns


def writer(sc: Scenario, base: str, k: int, writing: Any) -> None:
    """Read-decide-append ``sc.appends`` times (more, while a maintenance operation runs); set
    ``writing`` (which the maintenance operation waits for) when it first pauses before an
    fsync, or else after its first append."""
    rng = random.Random(sc.seed * 1000 + k)
    hist = history_file(base, f"w{k}")
    Recorder(os.path.join(base, "ops")).start()
    if sc.fsync_pause_us[1]:
        fileio.set_fault_injector(pause_before_log_fsync(*sc.fsync_pause_us, sc.seed * 31 + k, writing))
    store = sc.factory(_store_path(base), create=False)
    tags = [f"t{j}" for j in range(3)]
    done = os.path.join(base, ACTION_DONE)
    n = 0
    while n < sc.appends or (sc.action is not None and n < WRITER_CAP * sc.appends and not os.path.exists(done)):
        tag = rng.choice(tags)
        query = Query([QueryItem(tags=[tag])])
        head = read(store, hist, query)
        size = rng.randint(1, sc.max_batch)
        events = [Event("E", {"w": k, "n": n, "i": i, "pad": "x" * rng.randint(0, 300)}, tags=[tag],
                        id=f"w{k}-{n}-{i}") for i in range(size)]
        condition = AppendCondition(query, after=head) if rng.random() < 0.5 else None
        append(store, hist, events, condition, tag)
        writing.set()
        n += 1
    store.close()


def read(store, hist: str, query: Query | None = None) -> int:  # type: ignore[no-untyped-def]
    """Read and log what was shown; return the head."""
    t0 = time.monotonic_ns()
    result = store.read(query)
    shown = [[e.position, e.id] for e in result]
    log(hist, {"ev": "read", "t0": t0, "t1": time.monotonic_ns(), "head": result.head, "events": shown})
    return result.head


def append(store, hist: str, events: list[Event], condition: AppendCondition | None = None,  # type: ignore[no-untyped-def]
           tag: str = "") -> None:
    """Append and log the outcome: ``append`` (acknowledged), ``reject`` (with the conflicting
    position and ``tag``, the one tag the condition's query asks for) or ``fail``. Every batch
    tried is logged first (``try``): the check retries lost ones."""
    ids = [e.id for e in events]
    t0 = time.monotonic_ns()
    log(hist, {"ev": "try", "t0": t0, "t1": t0, "ids": ids})
    try:
        last = store.append(events, condition)
    except AppendConditionFailed as exc:
        log(hist, {"ev": "reject", "t0": t0, "t1": time.monotonic_ns(), "conflict": exc.position, "tag": tag,
                   "ids": ids})
        return
    except Exception as exc:  # a failure: not acknowledged, nothing to keep
        log(hist, {"ev": "fail", "t0": t0, "t1": time.monotonic_ns(), "error": type(exc).__name__})
        return
    log(hist, {"ev": "append", "t0": t0, "t1": time.monotonic_ns(), "last": last, "ids": ids})


def reader(sc: Scenario, base: str, k: int, stop: float) -> None:
    """Read everything, again and again, until killed."""
    hist = history_file(base, f"r{k}")
    store = sc.factory(_store_path(base), create=False)
    while time.monotonic() < stop:
        read(store, hist)
        time.sleep(0.0005)
    store.close()


def orphaner(sc: Scenario, base: str, k: int) -> None:
    """``sc.orphans`` times: a child appends a batch and is SIGKILLed just before the fsync that
    would make it durable (its records are written, committed, not synced); then this process,
    alternately, retries that same batch (an idempotent retry must make it durable before it
    acknowledges it) or appends under a condition the orphaned batch violates (the rejection
    must make the conflicting event durable before it is raised). Then :func:`late_fsync`."""
    hist = history_file(base, f"o{k}")
    Recorder(os.path.join(base, "ops")).start()
    store = sc.factory(_store_path(base), create=False)
    for n in range(sc.orphans):
        tag = f"o{k}-{n}"  # no one else's: the conflict is exactly the orphaned batch's first event
        head = read(store, hist)
        events = [Event("O", {"n": n, "i": i}, tags=[tag], id=f"o{k}-{n}-{i}") for i in range(1 + n % 3)]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child is killed before it returns
            try:
                Recorder(os.path.join(base, "ops")).start()
                child = sc.factory(_store_path(base), create=False)
                log(history_file(base, f"o{k}-{n}-orphan"), {"ev": "try", "t0": time.monotonic_ns(),
                                                             "t1": time.monotonic_ns(), "ids": [e.id for e in events]})
                fileio.set_fault_injector(_die_before_log_fsync)
                child.append(events)
            finally:
                os._exit(0)  # a store that skips the fsync lives on: gone all the same
        os.waitpid(pid, 0)
        if n % 2 == 0:
            append(store, hist, events)
        else:
            condition = AppendCondition(Query([QueryItem(tags=[tag])]), after=head)
            append(store, hist, [Event("R", {"n": n}, tags=[tag], id=f"o{k}-{n}-r")], condition, tag)
    late_fsync(sc, base, store, hist, f"o{k}")
    append(store, hist, [Event("E", {"after": "orphans"}, tags=["t0"], id=f"o{k}-last")])
    store.close()


LATE = "late-fsync"  # the thread whose fsync is held back


def _hold_late_fsync(op: str, path: str) -> None:
    if op == "fsync" and path == "active segment" and threading.current_thread().name == LATE:
        time.sleep(0.03)


def late_fsync(sc: Scenario, base: str, store, hist: str, who: str) -> None:  # type: ignore[no-untyped-def]
    """Two handles of this process: the first writes a batch and is held 30 ms before its fsync
    while the second commits a batch after it, so the first one's fsync finishes last; the synced
    position it then records must not go back below the second's."""
    other = sc.factory(_store_path(base), create=False)
    previous = fileio.set_fault_injector(_hold_late_fsync)
    try:
        slow = threading.Thread(target=append, name=LATE,
                                args=(store, hist, [Event("E", {"late": 1}, tags=["t1"], id=f"{who}-late")]))
        slow.start()
        time.sleep(0.01)
        append(other, hist, [Event("E", {"late": 0}, tags=["t1"], id=f"{who}-early")])
        slow.join()
    finally:
        fileio.set_fault_injector(previous)
        other.close()


def prefill(sc: Scenario, base: str) -> None:
    """Events that exist before the run: acknowledged long before any cut."""
    rng = random.Random(sc.seed)
    hist = history_file(base, "prefill")
    store = sc.factory(_store_path(base), create=False)
    n = 0
    while n < sc.prefill:
        size = min(sc.prefill - n, rng.randint(1, 5))
        events = [Event("P", {"n": n + i, "pad": "p" * rng.randint(0, 200)}, tags=[f"t{(n + i) % 3}"],
                        id=f"p-{n + i}") for i in range(size)]
        last = store.append(events)
        log(hist, {"ev": "append", "t0": 0, "t1": 0, "last": last, "ids": [e.id for e in events]})
        n += size
    store.close()


def action(sc: Scenario, base: str, writing: Any) -> None:
    """Run the maintenance operation once the writers are under way (``writing``); log whether
    it succeeded (a failure with no fault injected is a violation: a broken operation often
    fails its own self-checks)."""
    from .run import ACTIONS

    if sc.workers:
        writing.wait(10)
    hist = history_file(base, "action")
    t0 = time.monotonic_ns()
    log(hist, {"ev": "action-start", "name": sc.action, "t0": t0, "t1": t0})
    Recorder(os.path.join(base, "ops")).start()
    error = None
    try:
        report = ACTIONS[sc.action or ""].run(os.path.join(base, "run"))
        if report is not None and report.exit_code not in (0, 1):
            codes = sorted({f.code for f in report.problems})
            error = f"it exited {report.exit_code} with {codes}"
    except Exception as exc:  # recorded: the states still have to be sound
        error = f"it raised {type(exc).__name__}: {exc}"
    log(hist, {"ev": "action", "name": sc.action, "t0": t0, "t1": time.monotonic_ns(), "ok": error is None,
               "error": error})
    with open(os.path.join(base, ACTION_DONE), "wb"):
        pass
