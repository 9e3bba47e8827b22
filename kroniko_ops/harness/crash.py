"""Crashes: SIGKILL at random moments, and at every file operation of a commit.

Two mechanisms:

- :func:`random_kills` plans when the parent SIGKILLs which worker (used by
  :func:`~kroniko_ops.harness.worker.run_workload` and the torture driver);
- :func:`kill_at_nth_op` is a :func:`kroniko_ops.fileio.set_fault_injector` hook that SIGKILLs
  its own process just before the Nth mutating file operation. :func:`crash_sweep` uses it to
  kill one append (of many shapes) before each of its file operations in turn, in a forked
  child, then recovers the store and checks every property (see :mod:`.scenarios`).

A killed process's page cache survives it, so fsync makes no difference to what a *process*
kill leaves behind: durable shapes matter here because they add file operations (fsyncs) to
kill at, and they exercise the same paths a power loss would.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import fileio
from . import history as hist
from . import scenarios
from .checker import Violation
from .verify import check_store, recover_and_fsck

Injector = Callable[[str, str], None]


def kill_at_nth_op(n: int) -> Injector:
    """An injector that SIGKILLs this process just before its ``n``-th mutating file operation."""
    lock = threading.Lock()  # fsyncs may run on a thread pool
    count = [0]

    def injector(op: str, path: str) -> None:
        with lock:
            count[0] += 1
            hit = count[0] == n
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # pragma: no cover - the signal is delivered before this returns

    return injector


class OpCounter:
    """An injector that fails nothing and records every file operation: ``(op, path, site)``,
    where ``site`` is the engine's ``file:line`` that asked for it (outside ``fileio``)."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, op: str, path: str) -> None:
        site = call_site()
        with self._lock:
            self.ops.append((op, path, site))


def call_site() -> str:
    """``module.py:line (function)`` of the nearest engine frame that asked for a file operation
    (skipping ``fileio`` and this harness), e.g. ``store.py:430 (fsync_log)`` for the
    group-commit fsync of the active segment or ``segments.py:125 (publish_idx)`` for a seal."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for frame in reversed(traceback.extract_stack(limit=24)[:-1]):
        name = os.path.basename(frame.filename)
        if (not frame.filename.startswith(package) or name == "fileio.py"
                or os.path.dirname(frame.filename).endswith("harness")):
            continue
        return f"{name}:{frame.lineno} ({frame.name})"
    return "outside the engine"


def random_kills(rng: random.Random, workers: int, rate: float, horizon: float) -> list[tuple[int, float]]:
    """Each worker is killed with probability ``rate`` at a uniform moment in ``[0, horizon)``."""
    return [(w, rng.uniform(0.0, horizon)) for w in range(workers) if rng.random() < rate]


class ChildFailed(RuntimeError):
    """A forked child ended in a way the harness did not plan (an exception, a hang)."""


def run_forked(fn: Callable[[], Any], timeout: float = 60.0) -> tuple[bool, Any]:
    """Run ``fn`` in a forked child; return ``(killed, result)``.

    ``killed`` is True when the child died by SIGKILL (result None); otherwise ``result`` is
    what ``fn`` returned (JSON-serialisable), sent back over a pipe. The child is always reaped.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which leaves through os._exit
        code = 1
        try:
            os.close(r)
            payload = orjson.dumps({"ok": fn()})
            code = 0
        except BaseException as exc:
            payload = orjson.dumps({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})
        try:
            os.write(w, payload)
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([r], [], [], max(0.0, left))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise ChildFailed(f"child {pid} did not finish within {timeout:g}s")
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == -signal.SIGKILL:
        return True, None
    doc = orjson.loads(b"".join(chunks)) if chunks else {"error": f"exit code {code}, no result"}
    if "error" in doc:
        raise ChildFailed(f"child failed: {doc['error']}\n{doc.get('trace', '')}")
    return False, doc["ok"]


# -- the crash-point sweep -----------------------------------------------------------------------


@dataclass
class CrashReport:
    """What a crash sweep did: points, kills, and any violation with its shape and kill point."""

    points: int = 0
    killed: int = 0
    recovered: int = 0
    property6: bool = True
    sites: dict[str, int] = field(default_factory=dict)
    per_shape: dict[str, int] = field(default_factory=dict)
    violations: list[tuple[str, Violation]] = field(default_factory=list)

    def summary(self) -> str:
        """One line of figures."""
        return (f"{self.points} crash points over {len(self.per_shape)} shapes, {self.killed} kills, "
                f"{self.recovered} recoveries, {len(self.violations)} violation(s)"
                + ("" if self.property6 else " (recover + fsck not run: property 6 not checked)"))


def crash_sweep(shapes: list[scenarios.Shape], workdir: str, stride: int = 1,
                on_point: Callable[[], None] | None = None, recover: bool = True) -> CrashReport:
    """Kill one append of each shape before each of its file operations (every ``stride``-th),
    in a forked child; then recover, fsck, retry the same call, append once more, and check
    properties 1-7 over the whole store. ``recover=False`` skips recover + fsck (property 6):
    the retry's writer then meets the dead writer's leftovers itself."""
    report = CrashReport(property6=recover)
    for shape in shapes:
        _sweep_shape(shape, workdir, stride, report, on_point)
    return report


def _sweep_shape(shape: scenarios.Shape, workdir: str, stride: int, report: CrashReport,
                 on_point: Callable[[], None] | None) -> None:
    prep = scenarios.prepare(shape, os.path.join(workdir, f"template-{shape.name}"))
    case = os.path.join(workdir, f"case-{shape.name}")
    prep.reset(case)
    ops = count_ops(prep, case)
    for n in range(1, len(ops) + 1, stride):
        prep.reset(case)
        found = _crash_point(prep, case, n, report)
        label = f"{shape.name} killed before file op {n}/{len(ops)} ({ops[n - 1][0]} at {ops[n - 1][2]})"
        report.sites[ops[n - 1][2]] = report.sites.get(ops[n - 1][2], 0) + 1
        report.violations.extend((label, v) for v in found)
        report.points += 1
        report.per_shape[shape.name] = report.per_shape.get(shape.name, 0) + 1
        if on_point is not None:
            on_point()
    shutil.rmtree(case, ignore_errors=True)
    shutil.rmtree(prep.template, ignore_errors=True)


def count_ops(prep: scenarios.Prepared, case: str) -> list[tuple[str, str, str]]:
    """Every file operation the shape's call makes against ``case``, with its call site (in a
    forked child, so this process's store state and thread pool stay untouched)."""

    def run() -> list[list[str]]:
        counter = OpCounter()
        fileio.set_fault_injector(counter)
        prep.call(case)
        return [list(op) for op in counter.ops]

    _, ops = run_forked(run)
    return [(op, path, site) for op, path, site in ops]


def _crash_point(prep: scenarios.Prepared, case: str, n: int, report: CrashReport) -> list[Violation]:
    def call() -> dict[str, Any]:
        fileio.set_fault_injector(kill_at_nth_op(n))
        return prep.call(case)

    history = hist.History(ops=list(prep.history.ops), reads=list(prep.history.reads))
    t0 = time.monotonic_ns()
    killed, result = run_forked(call)
    t1 = time.monotonic_ns()
    op = prep.record(1, 0, t0, None if killed else t1, result)
    if op is not None:
        history.ops.append(op)
    if killed:
        history.deaths[1] = t1
        report.killed += 1
    found: list[Violation] = []
    if report.property6:
        found = recover_and_fsck(case)
        report.recovered += 1
    found += prep.followup(case, history)
    return found + check_store(case, history)
