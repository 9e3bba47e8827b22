"""Maintenance operations as sweep actions: compaction, backup and recovery under kills and faults.

The store they meet (:func:`setup`) has loose and packed events, a young dangling event and, by
the shape's setup, a dead writer's torn tail: every branch of the operation has work to do.
After a kill or a fault, and recovery, the operation is run again and must succeed; a backup
that was published must verify. The checker then proves no event changed.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable
from typing import Any

from .. import fileio
from ..codec import encode_event
from ..model import Event
from ..store import EventStore
from .checker import Violation

_ENTRY = {"compact": ("kroniko_ops.ops.compact", "compact"), "backup": ("kroniko_ops.ops.backup", "backup"),
          "recover": ("kroniko_ops.ops.recover", "recover"),
          "verify_backup": ("kroniko_ops.ops.backup", "verify_backup")}


def entry(name: str) -> Callable[..., Any] | None:
    """The maintenance function ``name``, or None when it is not installed (yet)."""
    module, attr = _ENTRY[name]
    try:
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        return None


def available(action: str) -> bool:
    """Whether the operation an action needs is installed."""
    needs = [action] + (["verify_backup"] if action == "backup" else [])
    return action == "append" or all(entry(name) is not None for name in needs)


def setup(s: EventStore, add: Callable[[int, int], int]) -> None:
    """Give the store two packs, loose events after them and a young dangling event.
    ``add(index, n)`` appends a recorded batch of ``n`` events."""
    compact = entry("compact")
    add(10, 10)
    if compact is not None:
        compact(s.path, max_packs=64)
    add(11, 10)
    if compact is not None:
        compact(s.path, max_packs=64)
    add(12, 5)
    # An event file no log line names, as a writer that died before its commit leaves: young,
    # so fsck only notes it; compaction with prune_after=0 sets it aside.
    eid, raw = encode_event(Event("C", {"op": "dangle.0"}, ("s:1",), id="dangle.0"))
    fd = fileio.open_write(s.layout.event_file(eid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        fileio.write_all(fd, raw)
    finally:
        os.close(fd)


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
    assert fn is not None, f"{action} is not installed"
    if action == "compact":
        return fn(case, prune_after=0, max_packs=1)
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
        assert verify is not None
        first = backup_dest(case)
        if os.path.exists(first):  # published by the faulted run: it must be whole
            rep = verify(first)
            if rep.exit_code != 0:
                out.append(Violation(6, "published-backup-bad", f"a backup published despite the fault does not "
                                     f"verify (exit {rep.exit_code})"))
        again = entry("backup")
        assert again is not None
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
