"""Worker processes: start them together behind a barrier, let them run their schedules, record.

Workers are real processes from a ``spawn``-like multiprocessing context (``forkserver`` by
default: a fresh interpreter started once, from which each worker is forked with the engine
already imported, so a worker costs milliseconds; ``spawn`` works too and is slower). Each
records every call to its own history file (:mod:`.history`) with ``time.monotonic_ns()``,
the machine-wide monotonic clock all processes share.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

from .. import fileio
from ..errors import AppendConditionFailed, DurabilityError, KronikoError, NothingWritten
from ..postgres import is_url, open_store
from ..store import EventStore
from . import history as hist
from .crash import kill_at_nth_op
from .mutants import applied
from .workload import OpPlan, QuerySpec, Workload, condition_for, to_events, to_query

START_TIMEOUT = 60.0


class HarnessError(RuntimeError):
    """The harness itself failed (a worker hung, could not start...): not a store violation."""


def context(method: str = "forkserver") -> BaseContext:
    """The multiprocessing context workers run in; ``forkserver`` preloads the engine."""
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        # psycopg is preloaded too when installed (a PostgreSQL run); a missing one is skipped.
        ctx.set_forkserver_preload(["kroniko_ops.store", "kroniko_ops.harness.worker", "psycopg"])
    return ctx


def create_store(path: str, workload: Workload) -> None:
    """Create the store a workload runs on, with its segment size (workers open it with
    ``create=False``, so the size is the one the store was created with)."""
    open_store(path, durable=workload.durable, segment_bytes=workload.segment_bytes).close()


@dataclass(frozen=True)
class WorkerArgs:
    """What one worker process needs: where the store is, its schedule, where to record, and
    which broken engine of :mod:`.mutants` to run instead of the real one (None: the real one)."""

    path: str
    workload: Workload
    worker: int
    history: str
    lock_timeout: float = 60.0
    mutant: str | None = None


def worker_main(args: WorkerArgs, ready: Any, go: Any) -> None:
    """Entry point of a worker process: say it is ready, wait for the start, run the schedule.

    ``ready`` and ``go`` are pipe ends, not multiprocessing Events or a Barrier: those share
    locks between processes, and a worker SIGKILLed while holding one (waking up from the
    start, say) would leave the others blocked forever. A pipe has no such lock: the parent
    closes its end of ``go`` and every worker sees end-of-file at once.
    """
    with applied(args.mutant) as mutant:  # this process only: it ends with the schedule
        _serve(args, ready, go, open_store if mutant is None else mutant.store or EventStore)


def _serve(args: WorkerArgs, ready: Any, go: Any, engine: Any) -> None:
    rec = hist.Recorder(args.history)
    store = engine(args.path, durable=args.workload.durable, create=False, lock_timeout=args.lock_timeout)
    ready.send_bytes(b"r")
    ready.close()
    if not go.poll(START_TIMEOUT):
        raise HarnessError("the parent never gave the start signal")
    go.close()
    try:
        run_schedule(store, args.workload, args.worker, rec)
    except Exception as exc:  # e.g. a read finding the store corrupt: the checker reports it
        rec.record(i=-1, ev="error", error=f"{type(exc).__name__}: {exc}")
    store.close()
    rec.close()


def run_schedule(store: EventStore, workload: Workload, worker: int, rec: hist.Recorder) -> None:
    """Run one worker's operations against ``store``, recording each."""
    calls: dict[int, tuple[list[Any], Any]] = {}
    for i, op in enumerate(workload.workers[worker]):
        if op.kind == "read":
            assert op.query is not None
            _read(store, op.query, i, rec, op.start, op.backwards)
            continue
        if op.kind == "retry":
            assert op.retry_of is not None
            if op.retry_of not in calls:
                rec.record(i=i, ev="skip")  # its target decided not to append: nothing to retry
                continue
            events, condition = calls[op.retry_of]
        else:
            events = to_events(workload.event_ids(worker, i), op.events)
            condition = None
            if op.kind == "conditional":
                assert op.query is not None
                result, found = _read(store, op.query, i, rec)
                if op.skip_if_found and found:
                    rec.record(i=i, ev="skip")
                    continue
                if op.think_us:
                    time.sleep(op.think_us / 1e6)
                condition = condition_for(op.query, result.head if op.after_read else None)
            calls[i] = (events, condition)
        _append(store, events, condition, op, i, rec)


def _read(store: EventStore, spec: QuerySpec, i: int, rec: hist.Recorder, start: int | None = None,
          backwards: bool = False) -> tuple[Any, int]:
    """Read, and record what came back: count, digest of positions and body hashes, order."""
    t0 = time.monotonic_ns()
    result = store.read(to_query(spec), start=start, backwards=backwards)
    events = list(result)
    t1 = time.monotonic_ns()
    pairs = [(e.position, hist.body_hash(e.event)) for e in events]
    positions = [p for p, _ in pairs]
    step = -1 if backwards else 1
    ordered = all((b - a) * step > 0 for a, b in itertools.pairwise(positions))
    rec.record(i=i, ev="read", t0=t0, t1=t1, head=result.head, found=len(events), query=spec, start=start,
               backwards=backwards, digest=hist.read_digest(pairs), ordered=ordered,
               positions=positions if len(positions) <= hist.POSITIONS_KEPT else None)
    return result, len(events)


def _append(store: EventStore, events: list[Any], condition: Any, op: OpPlan, i: int, rec: hist.Recorder) -> None:
    after = condition.after if condition is not None else None
    t = time.monotonic_ns()
    rec.record(i=i, ev="invoke", t=t, conditional=condition is not None, after=after)
    previous = None
    if op.kill_at and is_url(store.path):
        # No file operations to count on a server: die inside the transaction, just before its
        # COMMIT, holding the writers' lock (the server must roll it back and let the others on).
        store.before_commit = _kill_self
    elif op.kill_at:
        previous = fileio.set_fault_injector(kill_at_nth_op(op.kill_at))
    try:
        pos = store.append(events, condition)
        outcome: dict[str, Any] = {"outcome": hist.COMMITTED, "pos": pos}
    except AppendConditionFailed as exc:
        outcome = {"outcome": hist.REJECTED, "conflict": exc.position}
    except NothingWritten as exc:
        outcome = {"outcome": hist.NOT_WRITTEN, "error": str(exc)}
    except (DurabilityError, OSError) as exc:
        outcome = {"outcome": hist.UNKNOWN, "error": str(exc)}
    except KronikoError as exc:
        outcome = {"outcome": hist.ERROR, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        if op.kill_at and not is_url(store.path):
            fileio.set_fault_injector(previous)
    rec.record(i=i, ev="done", t=time.monotonic_ns(), **outcome)


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # pragma: no cover - the signal is delivered before this returns


# -- the parent side ---------------------------------------------------------------------------


def _await_ready(procs: list[Any], ready: Any) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    count = 0
    while count < len(procs):
        if ready.poll(0.05):
            try:
                ready.recv_bytes()
                count += 1
                continue
            except EOFError:  # every worker has closed its end: some died before saying ready
                time.sleep(0.1)
        dead = [w for w, p in enumerate(procs) if not p.is_alive()]
        if dead:
            raise HarnessError(f"worker {dead[0]} died before the start (exit code {procs[dead[0]].exitcode}): "
                               "see its stderr")
        if time.monotonic() > deadline:
            raise HarnessError(f"only {count} of {len(procs)} workers were ready within {START_TIMEOUT:g}s")


@dataclass
class RunResult:
    """A finished run: the history, and which workers were killed (by the parent or themselves)."""

    history: hist.History
    killed: list[int]
    exit_codes: dict[int, int | None]

    @property
    def kills(self) -> int:
        """How many workers died by SIGKILL."""
        return len(self.killed)


def run_workload(path: str, workload: Workload, kills: Sequence[tuple[int, float]] = (),
                 ctx: BaseContext | None = None, timeout: float = 120.0, workdir: str | None = None,
                 lock_timeout: float = 60.0, mutant: str | None = None) -> RunResult:
    """Run every worker of ``workload`` against the store at ``path`` (which must exist: see
    :func:`create_store`); ``mutant`` names a broken engine of :mod:`.mutants` to run instead.

    ``kills`` lists ``(worker, seconds after the start)``: the parent SIGKILLs that worker then.
    Every child is reaped before this returns, within ``timeout`` seconds (then killed and
    reported as a :class:`HarnessError`, which keeps the workers' history files for a look).
    """
    ctx = ctx or context()
    n = len(workload.workers)
    own_dir = workdir is None
    folder = workdir or tempfile.mkdtemp(prefix="kroniko-harness-")
    files = [os.path.join(folder, f"history-{workload.run}-{w}.jsonl") for w in range(n)]
    # The barrier, made of two pipes (see worker_main): every worker says it is ready on one,
    # then all wait for the parent to close the other.
    ready_r, ready_w = ctx.Pipe(duplex=False)
    go_r, go_w = ctx.Pipe(duplex=False)
    procs = [ctx.Process(target=worker_main, args=(WorkerArgs(path, workload, w, files[w], lock_timeout, mutant),
                                                   ready_w, go_r), daemon=True, name=f"kroniko-worker-{w}")
             for w in range(n)]
    deaths: dict[int, int] = {}
    try:
        for p in procs:
            p.start()
        ready_w.close()
        go_r.close()
        _await_ready(procs, ready_r)
        go_w.close()
        start = time.monotonic()
        for w, delay in sorted(kills, key=lambda k: k[1]):
            wait = start + delay - time.monotonic()
            if wait > 0:
                procs[w].join(wait)  # a cheap sleep that ends early if the worker exits on its own
            if procs[w].is_alive() and procs[w].pid is not None:
                try:
                    os.kill(procs[w].pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for w, p in enumerate(procs):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                raise HarnessError(f"worker {w} did not finish within {timeout:g}s")
            if p.exitcode == -signal.SIGKILL:
                deaths[w] = time.monotonic_ns()
    except HarnessError as exc:
        raise HarnessError(f"{exc}; the workers' histories are kept in {folder}") from None
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)
        for conn in (ready_r, ready_w, go_r, go_w):
            conn.close()  # idempotent
    exit_codes = {w: p.exitcode for w, p in enumerate(procs)}
    bad = {w: c for w, c in exit_codes.items() if c not in (0, -signal.SIGKILL)}
    history = hist.load(workload, files, deaths)
    if own_dir:
        for f in files:
            if os.path.exists(f):
                os.unlink(f)
        os.rmdir(folder)
    if bad:
        raise HarnessError(f"worker(s) failed with exit codes {bad} (not a kill): see their stderr")
    return RunResult(history, sorted(deaths), exit_codes)
