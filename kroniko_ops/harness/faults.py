"""I/O faults: fail the Nth write, fsync, link, rename, open, unlink, truncate or mkdir of an
operation with EIO or ENOSPC, once or from then on, swept over every call the operation makes.

For each case the sweep checks what a user relies on: the failing call raises a clear error
(:class:`~kroniko_ops.errors.KronikoError`, or an ``OSError`` carrying the injected errno and
the path); after a failed write or fsync the store handle refuses further appends
(:class:`~kroniko_ops.errors.DurabilityError`); afterwards ``recover`` + ``fsck`` find the
store clean, every acknowledged event is present, a batch whose outcome is unknown is all or
nothing, and the same call retried on a new handle works. Cases run in-process: an injected
``OSError`` unwinds normally, unlike a kill.
"""

from __future__ import annotations

import ast
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import fileio, index, layout, store
from ..errors import AppendConditionFailed, DurabilityError, KronikoError
from ..model import Event
from ..store import EventStore
from . import history as hist
from . import maint, scenarios
from .checker import Violation
from .crash import call_site, count_ops
from .verify import check_store, recover_and_fsck
from .workload import condition_for

ERRNOS = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC}
OPS = ("open", "write", "fsync", "link", "rename", "unlink", "truncate", "mkdir")


class FailNth:
    """An injector failing the ``n``-th call of kind ``op`` (and, ``sticky``, every later one)."""

    def __init__(self, op: str, n: int, err: int, sticky: bool) -> None:
        self.op, self.n, self.err, self.sticky = op, n, err, sticky
        self.seen = 0
        self.failed: list[str] = []  # the call sites failed
        self._lock = threading.Lock()

    def __call__(self, op: str, path: str) -> None:
        if op != self.op:
            return
        with self._lock:
            self.seen += 1
            fail = self.seen == self.n or (self.sticky and self.seen > self.n)
        if fail:
            self.failed.append(call_site())
            raise OSError(self.err, f"{os.strerror(self.err)} (injected by the harness)", path)


@dataclass
class FaultReport:
    """What a sweep did: cases per shape, the sites faulted, errors raised, violations."""

    cases: int = 0
    raised: dict[str, int] = field(default_factory=dict)
    sites: dict[str, int] = field(default_factory=dict)
    bare_oserror_sites: set[str] = field(default_factory=set)
    property6: bool = True
    violations: list[tuple[str, Violation]] = field(default_factory=list)

    def summary(self) -> str:
        """One line of figures."""
        raised = ", ".join(f"{k} {v}" for k, v in sorted(self.raised.items()))
        return (f"{self.cases} fault cases over {len(self.sites)} call sites ({raised}), "
                f"{len(self.violations)} violation(s)"
                + ("" if self.property6 else " (recover/fsck not installed: property 6 not checked)"))


def fault_sweep(shapes: list[scenarios.Shape], workdir: str, errnos: tuple[str, ...] = ("EIO", "ENOSPC"),
                modes: tuple[bool, ...] = (False, True), cycle: bool = False, per_site: bool = False,
                on_case: Callable[[], None] | None = None) -> FaultReport:
    """Fail each shape's call at every call of every operation kind it makes, with each errno in
    ``errnos`` and each mode in ``modes`` (False: once; True: that call and every later one of
    its kind). ``cycle`` gives each call one (errno, mode) in turn instead of all of them;
    ``per_site`` fails only the first call made from each call site."""
    report = FaultReport()
    combos = [(name, sticky) for name in errnos for sticky in modes]
    for shape in shapes:
        with scenarios.engine_tuned(shape):
            prep = scenarios.prepare(shape, os.path.join(workdir, f"template-{shape.name}"))
            case = os.path.join(workdir, f"case-{shape.name}")
            prep.reset(case)
            ops = count_ops(prep, case)
            per_kind: dict[str, int] = {}
            seen: set[tuple[str, str]] = set()
            for k, (kind, _path, site) in enumerate(ops):
                per_kind[kind] = n = per_kind.get(kind, 0) + 1
                if per_site and (kind, site) in seen:
                    continue
                seen.add((kind, site))
                for name, sticky in [combos[k % len(combos)]] if cycle else combos:
                    prep.reset(case)
                    label = (f"{shape.name}: {name} on {kind} #{n} at {site}"
                             f"{' and every later ' + kind if sticky else ''}")
                    found = _fault_case(prep, case, FailNth(kind, n, ERRNOS[name], sticky), report)
                    report.violations.extend((label, v) for v in found)
                    report.cases += 1
                    report.sites[site] = report.sites.get(site, 0) + 1
                    if on_case is not None:
                        on_case()
            shutil.rmtree(case, ignore_errors=True)
            shutil.rmtree(prep.template, ignore_errors=True)
    return report


def _clear(exc: BaseException, err: int) -> bool:
    if isinstance(exc, KronikoError):
        return True
    return isinstance(exc, OSError) and exc.errno == err and bool(exc.filename)


def _fault_case(prep: scenarios.Prepared, case: str, injector: FailNth, report: FaultReport) -> list[Violation]:
    found: list[Violation] = []
    history = hist.History(ops=list(prep.history.ops))
    s = EventStore(case, durable=prep.shape.durable, create=False)
    condition = condition_for(prep.query, prep.after) if prep.query is not None else None
    result: dict[str, Any]
    exc: BaseException | None = None
    t0 = time.monotonic_ns()
    previous = fileio.set_fault_injector(injector)
    try:
        if prep.shape.action == "append":
            result = {"outcome": hist.COMMITTED, "pos": s.append(prep.events(), condition)}
        else:
            result = {"outcome": "done", "exit": maint.run(prep.shape.action, case).exit_code}
    except AppendConditionFailed as e:
        result = {"outcome": hist.REJECTED, "conflict": e.position}
    except Exception as e:  # the faults under test: anything else is judged below
        exc = e
        unknown = isinstance(e, (DurabilityError, OSError)) or prep.shape.action != "append"
        result = {"outcome": hist.UNKNOWN if unknown else hist.ERROR, "error": f"{type(e).__name__}: {e}"}
    finally:
        fileio.set_fault_injector(previous)
    op = prep.record(1, 0, t0, time.monotonic_ns(), result)
    if op is not None:
        history.ops.append(op)
    if exc is not None:
        kind = type(exc).__name__
        report.raised[kind] = report.raised.get(kind, 0) + 1
        if not _clear(exc, injector.err):
            found.append(Violation(2, "unclear-error", f"the failing {prep.shape.action} raised {kind}: {exc}",
                                   [op] if op else []))
        elif not isinstance(exc, KronikoError):
            report.bare_oserror_sites.update(injector.failed[:1])
        if isinstance(exc, DurabilityError) and op is not None:
            found += _refuses_more(s, op)
    else:
        report.raised["none"] = report.raised.get("none", 0) + 1
    s.close()
    p6 = recover_and_fsck(case)
    if p6 is None:
        report.property6 = False
    else:
        found += p6
    found += prep.followup(case, history)
    return found + check_store(case, history)


def _refuses_more(s: EventStore, op: hist.OpRecord) -> list[Violation]:
    """A handle that saw a failed write or fsync must refuse every later append."""
    try:
        s.append(Event("Z", {"op": "refused"}, id="refused"))
    except DurabilityError:
        return []
    except Exception as exc:
        return [Violation(2, "broken-handle", f"after a DurabilityError the next append raised "
                          f"{type(exc).__name__} instead of DurabilityError: {exc}", [op])]
    return [Violation(2, "broken-handle", "after a DurabilityError the same handle accepted another append "
                      "(a failed fsync must close the handle for writing)", [op])]


def engine_write_sites() -> set[str]:
    """``file.py:line`` of every ``fileio`` call the append path can make: all of ``store.py``
    and ``index.py``, and ``layout.set_aside`` (recovery of a dead writer's tail; the append
    passes it bytes, never files to move, so its rename is not on the path)."""
    sites: set[str] = set()
    for module, only in ((store, None), (index, None), (layout, "set_aside")):
        path = module.__file__
        assert path is not None
        tree = ast.parse(open(path).read())
        scopes: list[ast.AST] = [tree] if only is None else [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == only]
        for scope in scopes:
            for node in ast.walk(scope):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "fileio"
                        and node.func.attr != "read_file" and not (only and node.func.attr == "rename")):
                    sites.add(f"{os.path.basename(path)}:{node.lineno}")
    return sites


def faulted_lines(report: FaultReport) -> set[str]:
    """The ``file.py:line`` part of every site a sweep faulted."""
    return {site.split(" ", 1)[0] for site in report.sites}
