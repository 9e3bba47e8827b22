"""The I/O-error sweep of the maintenance operations: each operation of :data:`~.run.ACTIONS`
is run on a fresh copy of its prepared store once per file operation it makes, with that
operation failing (EIO or ENOSPC, once or from then on). Afterwards the store must hold every
event it held, what the operation made under its final name must be sound, and running the
operation again without faults must succeed. The append path has its own sweep
(:mod:`kroniko_ops.harness.faults`)."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace

from ... import fileio
from ...store import EventStore
from .procs import prefill
from .run import ACTIONS, STORE, Scenario

ERRNOS = (errno.EIO, errno.ENOSPC)


@dataclass
class SweepFigures:
    """Per operation: cases run, distinct call sites failed, stores found damaged afterwards."""

    cases: int = 0
    sites: set[str] = field(default_factory=set)
    corrupted: int = 0
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        """The counts (for JSON)."""
        return {"cases": self.cases, "call_sites": len(self.sites), "corrupted_stores": self.corrupted}


class _Fail:
    """Fails the ``n``-th mutating file operation (and every later one when ``sticky``)."""

    def __init__(self, n: int, code: int, sticky: bool) -> None:
        self.n, self.code, self.sticky, self.calls = n, code, sticky, 0
        self.site: str | None = None

    def __call__(self, op: str, path: str) -> None:
        self.calls += 1
        if self.calls == self.n or (self.sticky and self.calls > self.n):
            if self.site is None:
                frame = sys._getframe(2)  # the caller of the fileio function
                self.site = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} ({frame.f_code.co_name})"
            raise OSError(self.code, f"injected {errno.errorcode[self.code]} on {op}", path)


def _ids(store: str) -> list[str]:
    with EventStore(store, create=False) as s:
        return [e.id for e in s.read()]


def _prepare(name: str, sc: Scenario, base: str) -> str:
    root = os.path.join(base, "run")
    EventStore(os.path.join(root, STORE), segment_bytes=sc.segment_bytes).close()
    prefill(replace(sc, prefill=max(sc.prefill, 20)), base)
    ACTIONS[name].prepare(root)
    return root


def io_sweep(operations: dict[str, Scenario], *, stride: int = 1,
             scratch: str | None = None) -> dict[str, SweepFigures]:
    """Run the sweep for every operation of ``operations`` that is a maintenance action."""
    out: dict[str, SweepFigures] = {}
    for name, sc in operations.items():
        if sc.action is None:
            continue
        figures = out[name] = SweepFigures()
        base = tempfile.mkdtemp(prefix=f"kroniko-iofaults-{name}-", dir=scratch)
        os.makedirs(os.path.join(base, "hist"))
        try:
            root = _prepare(sc.action, sc, base)
            before = _ids(os.path.join(root, STORE))
            counter = _Fail(0, errno.EIO, False)
            case = os.path.join(base, "count")
            shutil.copytree(root, case, symlinks=True)
            fileio.set_fault_injector(counter)
            try:
                ACTIONS[sc.action].run(case)
            finally:
                fileio.set_fault_injector(None)
            for n in range(1, counter.calls + 1, stride):
                for code in ERRNOS:
                    for sticky in (False, True):
                        figures.cases += 1
                        problems = _case(sc.action, root, os.path.join(base, "case"), n, code, sticky, before, figures)
                        if problems:
                            figures.corrupted += 1
                            figures.failures.append(f"{name}: call {n} {errno.errorcode[code]} "
                                                    f"{'sticky' if sticky else 'once'}: {'; '.join(problems)}")
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return out


def _case(action: str, root: str, case: str, n: int, code: int, sticky: bool, before: list[str],
          figures: SweepFigures) -> list[str]:
    shutil.rmtree(case, ignore_errors=True)
    shutil.copytree(root, case, symlinks=True)
    fail = _Fail(n, code, sticky)
    fileio.set_fault_injector(fail)
    try:
        ACTIONS[action].run(case)
    except Exception:  # the injected error, surfaced one way or another: judged by what is left
        pass
    finally:
        fileio.set_fault_injector(None)
    if fail.site is not None:
        figures.sites.add(fail.site)
    problems: list[str] = []
    try:
        if _ids(os.path.join(case, STORE))[: len(before)] != before:
            problems.append("the store lost or changed events")
        problems.extend(ACTIONS[action].verify(case))
        output = ACTIONS[action].output
        if output is None or not os.path.exists(os.path.join(case, output)):
            report = ACTIONS[action].run(case)  # again, without faults: it must finish (unless it already had)
            if report is not None and report.exit_code not in (0, 1):
                problems.append(f"run again without faults, it exits {report.exit_code}: "
                                f"{sorted({f.code for f in report.problems})}")
            problems.extend(ACTIONS[action].verify(case))
    except Exception as exc:  # a store or a result the operation cannot get past
        problems.append(f"{type(exc).__name__}: {exc}")
    return problems
