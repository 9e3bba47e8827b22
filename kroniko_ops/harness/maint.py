"""Maintenance operations as sweep actions: compaction, backup and recovery under kills and faults.

The store they meet (:func:`setup`) has sealed segments (the shapes create it with small
segments), a pack when compaction is there to make one, and, by the shape's setup, a dead
writer's torn tail and an index behind its log: every branch of the operation has work to do.
After a kill or a fault, and recovery, the operation is run again and must succeed; a backup
that was published must verify. The checker then proves no event changed.

The operations are called through the package (``kroniko_ops.compact`` and so on), resolved
when a case runs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import kroniko_ops

from ..store import EventStore
from .checker import Violation


def entry(name: str) -> Callable[..., Any]:
    """The maintenance function ``name`` of the package (``compact``, ``backup``...)."""
    return getattr(kroniko_ops, name)  # type: ignore[no-any-return]


def setup(s: EventStore, add: Callable[[int, int], None]) -> None:
    """Give the store sealed segments, a pack, and records after it.
    ``add(index, n)`` appends a recorded batch of ``n`` events."""
    for k in range(6):
        add(20 + k, 5)
    entry("compact")(s.path)
    for k in range(3):
        add(30 + k, 4)


def backup_dest(case: str, n: int = 1) -> str:
    """Where a case's ``n``-th backup goes (beside the store, never inside it)."""
    return f"{case}.backup{n}"


def clear_backups(case: str) -> None:
    """Remove the backups and backup temp copies of an earlier case at ``case``."""
    parent, name = os.path.split(case)
    if not os.path.isdir(parent):
        return
    for entry_name in os.listdir(parent):
        if entry_name.startswith(f"{name}.backup") or entry_name.startswith(f".tmp-backup-{name}.backup"):
            path = os.path.join(parent, entry_name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


def run(action: str, case: str) -> Any:
    """Run the operation once (exceptions propagate); its report."""
    fn = entry(action)
    if action == "backup":
        return fn(case, backup_dest(case))
    return fn(case)


def call(action: str, case: str) -> dict[str, Any]:
    """Run the operation once; its outcome as a JSON-able dict (errors included, not raised)."""
    try:
        report = run(action, case)
    except Exception as exc:  # judged by the caller: a kill or fault makes any error legitimate
        return {"outcome": "error", "error": f"{type(exc).__name__}: {exc}"}
    return {"outcome": "done", "exit": report.exit_code}


def followup(action: str, case: str) -> list[Violation]:
    """Run the operation again after the crash or fault and recovery: it must succeed."""
    out = []
    if action == "backup":
        verify = entry("verify_backup")
        first = backup_dest(case)
        if os.path.exists(first):  # published by the faulted run: it must be whole
            rep = verify(first)
            if rep.exit_code != 0:
                out.append(Violation(6, "published-backup-bad", f"a backup published despite the fault does not "
                                     f"verify (exit {rep.exit_code})"))
        again = entry("backup")
        report = again(case, backup_dest(case, 2))
        rep = verify(backup_dest(case, 2))
        if report.exit_code != 0 or rep.exit_code != 0:
            out.append(Violation(6, "maintenance-failed", f"backup after recovery exits {report.exit_code}, "
                                 f"its verify {rep.exit_code}"))
        return out
    report = run(action, case)
    if report.exit_code & 4:
        problems = "; ".join(f"{f.code}: {f.message}" for f in report.problems[:3])
        out.append(Violation(6, "maintenance-failed", f"{action} after recovery exits {report.exit_code}: {problems}"))
    return out
