"""I/O faults: fail the Nth write, fsync, link, rename, open, unlink, truncate or mkdir of an
operation with EIO or ENOSPC, once or from then on, swept over every call the operation makes.

For each case the sweep checks what a user relies on: the failing call raises a clear error
(:class:`~kroniko_ops.errors.KronikoError`, or an ``OSError`` carrying the injected errno and
the path); after a failed fsync the store handle refuses further appends
(:class:`~kroniko_ops.errors.DurabilityError`; after a write the engine took back it may go
on), and after a failed fsync of the log a new handle refuses them too (the store is poisoned);
afterwards ``recover`` + ``fsck`` find the store clean, every acknowledged event is present, a
batch whose outcome is unknown is all or nothing, and the same call retried on a new handle
works. Cases run in-process: an injected ``OSError`` unwinds normally, unlike a kill.
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

from .. import committing, fileio, layout, store, synced, writer
from ..errors import AppendConditionFailed, DurabilityError, KronikoError, NothingWritten
from ..model import Event
from ..store import EventStore
from . import history as hist
from . import maint, scenarios
from .checker import Violation
from .crash import call_site, count_ops
from .verify import check_store, recover_and_fsck
from .workload import EventPlan, condition_for

ERRNOS = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC}
OPS = ("open", "write", "fsync", "link", "rename", "unlink", "truncate", "mkdir")


class FailNth:
    """An injector failing the ``n``-th call of kind ``op`` (and, ``sticky``, every later one;
    once it has failed, every later call of a kind in ``also`` as well: a write fails, then so
    does the truncate that would take it back)."""

    def __init__(self, op: str, n: int, err: int, sticky: bool, also: tuple[str, ...] = ()) -> None:
        self.op, self.n, self.err, self.sticky, self.also = op, n, err, sticky, also
        self.seen = 0
        self.failed: list[str] = []  # the call sites failed
        self._lock = threading.Lock()

    def __call__(self, op: str, path: str) -> None:
        if op != self.op:
            if self.failed and op in self.also:
                self.failed.append(call_site())
                raise OSError(self.err, f"{os.strerror(self.err)} (injected by the harness)", path)
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
    violations: list[tuple[str, Violation]] = field(default_factory=list)

    def summary(self) -> str:
        """One line of figures."""
        raised = ", ".join(f"{k} {v}" for k, v in sorted(self.raised.items()))
        return (f"{self.cases} fault cases over {len(self.sites)} call sites ({raised}), "
                f"{len(self.violations)} violation(s)")


def fault_sweep(shapes: list[scenarios.Shape], workdir: str, errnos: tuple[str, ...] = ("EIO", "ENOSPC"),
                modes: tuple[bool, ...] = (False, True), cycle: bool = False, per_site: bool = False,
                on_case: Callable[[], None] | None = None) -> FaultReport:
    """Fail each shape's call at every call of every operation kind it makes, with each errno in
    ``errnos`` and each mode in ``modes`` (False: once; True: that call and every later one of
    its kind). ``cycle`` gives each call one (errno, mode) in turn instead of all of them;
    ``per_site`` fails only the first call made from each call site. A write to the log also
    fails once together with the truncate that takes it back. After each case ``recover`` and
    ``fsck`` must find the store clean (property 6): an fsync failure poisons the store until
    ``recover`` runs, so the cases cannot go on without it."""
    report = FaultReport()
    combos = [(name, sticky) for name in errnos for sticky in modes]
    for shape in shapes:
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
            cases = [(name, sticky, ()) for name, sticky in ([combos[k % len(combos)]] if cycle else combos)]
            if kind == "write" and site.startswith("store.py"):
                cases.append((errnos[0], False, ("truncate",)))  # the log write, and taking it back
            for name, sticky, also in cases:
                prep.reset(case)
                label = (f"{shape.name}: {name} on {kind} #{n} at {site}"
                         f"{' and every later ' + kind if sticky else ''}"
                         f"{''.join(' and every ' + a for a in also)}")
                injector = FailNth(kind, n, ERRNOS[name], sticky, also)
                found = _fault_case(prep, case, injector, report)
                report.violations.extend((label, v) for v in found)
                report.cases += 1
                for where in {site, *injector.failed}:
                    report.sites[where] = report.sites.get(where, 0) + 1
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
    """One case: the call under ``injector`` (the store handle is opened inside it too, so the
    Nth operation counts as :func:`~.crash.count_ops` listed it), then the checks."""
    found: list[Violation] = []
    history = hist.History(ops=list(prep.history.ops), reads=list(prep.history.reads))
    condition = condition_for(prep.query, prep.after) if prep.query is not None else None
    result: dict[str, Any]
    exc: BaseException | None = None
    s: EventStore | None = None
    t0 = time.monotonic_ns()
    previous = fileio.set_fault_injector(injector)
    try:
        if prep.shape.action == "append":
            s = EventStore(case, durable=prep.shape.durable, create=False)
            result = {"outcome": hist.COMMITTED, "pos": s.append(prep.events(), condition)}
        else:
            result = {"outcome": "done", "exit": maint.run(prep.shape.action, case).exit_code}
    except AppendConditionFailed as e:
        result = {"outcome": hist.REJECTED, "conflict": e.position}
    except Exception as e:  # the faults under test: anything else is judged below
        exc = e
        unknown = isinstance(e, (DurabilityError, OSError)) or prep.shape.action != "append"
        outcome = hist.NOT_WRITTEN if isinstance(e, NothingWritten) else hist.UNKNOWN if unknown else hist.ERROR
        result = {"outcome": outcome, "error": f"{type(e).__name__}: {e}"}
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
        if isinstance(exc, DurabilityError) and op is not None and s is not None:
            log_fsync = injector.op == "fsync" and not any(f.startswith("layout.py") for f in injector.failed)
            found += _next_append(s, op, history, must_refuse=injector.op == "fsync")
            if log_fsync:  # a lost-found copy's fsync (layout.py) is not the log's: no poison owed
                found += _other_append(case, prep.shape.durable, op, history)
    else:
        report.raised["none"] = report.raised.get("none", 0) + 1
    if s is not None:
        try:
            s.close()
        except Exception as e:  # closing a handle that saw a fault must still work
            found.append(Violation(2, "close-failed", f"closing the handle after the failed {prep.shape.action} "
                                   f"raised {type(e).__name__}: {e}", [op] if op else []))
    found += recover_and_fsck(case)
    found += prep.followup(case, history)
    return found + check_store(case, history)


def _probe(rec: hist.OpRecord, history: hist.History, append: Callable[[], int]) -> Exception | None:
    """Run one probing append recorded as ``rec`` in ``history``: None when it committed, else
    what it raised (a :class:`DurabilityError` is a refusal; anything else is a wrong answer)."""
    history.ops.append(rec)
    try:
        rec.position = append()
        rec.outcome = hist.COMMITTED
        return None
    except DurabilityError as exc:
        rec.outcome, rec.error = hist.UNKNOWN, str(exc)
        return exc
    except Exception as exc:
        rec.outcome, rec.error = hist.ERROR, f"{type(exc).__name__}: {exc}"
        return exc
    finally:
        rec.complete = time.monotonic_ns()


def _next_append(s: EventStore, op: hist.OpRecord, history: hist.History, must_refuse: bool) -> list[Violation]:
    """The same handle's next append (the fault no longer injected), recorded in ``history``.

    After a failed fsync the handle must refuse it: what the page cache holds may not be on
    disk, and only ``recover`` may re-read it. After another failure (a write the engine took
    back, an open) it may refuse or succeed, and the checker accounts for it either way.
    """
    nxt = hist.OpRecord(op.worker, op.index + 1, "append", ("next.0",), (EventPlan("Z", ()),),
                        invoke=time.monotonic_ns())
    exc = _probe(nxt, history, lambda: s.append(Event("Z", {"op": "next.0"}, id="next.0")))
    if isinstance(exc, DurabilityError):
        return []
    if exc is not None:
        return [Violation(2, "broken-handle", f"after a DurabilityError the next append raised "
                          f"{type(exc).__name__} instead of DurabilityError: {exc}", [op, nxt])]
    if must_refuse:
        return [Violation(2, "broken-handle", "after a failed fsync the same handle accepted another append "
                          "(a failed fsync must close the handle for writing until recover)", [op, nxt])]
    return []


def _other_append(case: str, durable: bool, op: hist.OpRecord, history: hist.History) -> list[Violation]:
    """After a failed fsync of the log (a commit, a seal, a folder, preallocation), another
    handle's append must be refused until ``recover``: the kernel may have marked the lost pages
    clean, so that handle's own fsync would succeed over them."""
    other = hist.OpRecord(op.worker, op.index + 2, "append", ("other.0",), (EventPlan("Y", ()),),
                          invoke=time.monotonic_ns())

    def append() -> int:
        with EventStore(case, durable=durable, create=False) as s:
            return s.append(Event("Y", {"op": "other.0"}, id="other.0"))

    exc = _probe(other, history, append)
    if isinstance(exc, DurabilityError):
        return []
    if exc is not None:
        return [Violation(2, "unpoisoned", f"after a failed fsync of the log another handle's append raised "
                          f"{type(exc).__name__} instead of DurabilityError: {exc}", [op, other])]
    return [Violation(2, "unpoisoned", "after a failed fsync of the log another handle appended before recover "
                      "(a failed fsync must poison the store for every process)", [op, other])]


def engine_write_sites() -> set[str]:
    """``file.py:line`` of every ``fileio`` call (and ``syncer`` fsync) the append path can
    make: all of ``store.py``, ``committing.py``, ``writer.py`` and ``synced.py`` but the functions of
    :data:`OFF_PATH`, and ``layout.set_aside`` with its ``_put_aside`` (cutting a dead writer's tail; the append passes
    it bytes, never files to move, so its rename is not on the path). An index rebuild
    (``rebuild.py``) is not on the append path: only an index describing another history leads
    there."""
    sites: set[str] = set()
    for module, only in ((store, None), (committing, None), (writer, None), (synced, None),
                         (layout, ("set_aside", "_put_aside"))):
        path = module.__file__
        assert path is not None
        name = os.path.basename(path)
        tree = ast.parse(open(path).read())
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        scopes: list[ast.AST] = [tree] if only is None else [n for n in functions if n.name in only]
        skip = {line for n in functions if (name, n.name) in OFF_PATH
                for line in range(n.lineno, (n.end_lineno or n.lineno) + 1)}
        for scope in scopes:
            for node in ast.walk(scope):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and _writes(node.func) and not (only and node.func.attr == "rename")
                        and node.lineno not in skip):
                    sites.add(f"{name}:{node.lineno}")
    return sites


# Functions no append reaches: ``recover``'s re-verification of the log, and rebuilding an
# offset index that a power cut lost (a process kill cannot lose it: the crash sweep's kills
# leave the interrupted-seal case instead, which appends do finish).
OFF_PATH = {("store.py", "recover_log")}


def _writes(func: ast.Attribute) -> bool:
    """Whether a call is a mutating file operation: ``fileio.<op>`` (reads excluded) or an
    fsync through a ``Syncer`` (``...syncer.file(...)`` / ``.dir(...)``)."""
    value = func.value
    if isinstance(value, ast.Name) and value.id == "fileio":
        return func.attr not in ("read_file", "read_small", "open_read", "Syncer", "check_regular")
    name = value.attr if isinstance(value, ast.Attribute) else value.id if isinstance(value, ast.Name) else ""
    return name == "syncer" and func.attr in ("file", "dir", "fs")


def faulted_lines(report: FaultReport) -> set[str]:
    """The ``file.py:line`` part of every site a sweep faulted."""
    return {site.split(" ", 1)[0] for site in report.sites}
