"""Property 6 and the store side of the checks: recover, fsck, and read the log for the checker."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import KronikoError
from ..store import EventStore
from .checker import LogEntry, Prior, Violation, check
from .history import History


def logical_id(event_id: str, data: Any) -> str:
    """The id the harness gave an event: its ``data["op"]`` marker (set for generated ids too)."""
    if isinstance(data, dict) and isinstance(data.get("op"), str):
        return str(data["op"])
    return event_id


def read_log(path: str, base: int = 0) -> list[LogEntry]:
    """Every committed entry after ``base``, read through the public API (hashes verified)."""
    with EventStore(path, create=False, durable=False) as s:
        return [LogEntry(e.position, logical_id(e.id, e.data), e.type, tuple(e.tags))
                for e in s.read(start=base + 1)]


def entry_reader(path: str) -> Callable[[int], LogEntry | None]:
    """A function fetching the entry at one position (for positions before a run's base)."""

    def entry_at(position: int) -> LogEntry | None:
        with EventStore(path, create=False, durable=False) as s:
            for e in s.read(start=position, limit=1):
                if e.position == position:
                    return LogEntry(e.position, logical_id(e.id, e.data), e.type, tuple(e.tags))
        return None

    return entry_at


def maintenance() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """``(recover, fsck)`` when the maintenance operations are installed, else None."""
    try:
        recover = importlib.import_module("kroniko_ops.ops.recover").recover
        fsck = importlib.import_module("kroniko_ops.ops.fsck").fsck
    except (ImportError, AttributeError):
        return None
    return recover, fsck


def _findings(report: Any) -> str:
    return "; ".join(f"{f.code}@{f.position}: {f.message}" for f in report.problems[:5]) or "no details"


def recover_and_fsck(path: str, full: bool = True) -> list[Violation] | None:
    """Property 6: ``recover`` then ``fsck`` report a clean store. None when they are missing.

    Recovery may repair (exit 1) but must leave nothing behind; fsck must then find nothing
    (info findings aside).
    """
    ops = maintenance()
    if ops is None:
        return None
    recover, fsck = ops
    out = []
    rec = recover(path)
    if rec.exit_code & 4:
        out.append(Violation(6, "recover-failed", f"recover left problems (exit {rec.exit_code}): {_findings(rec)}"))
    report = fsck(path, level="full" if full else "quick")
    if report.exit_code != 0:
        out.append(Violation(6, "fsck-not-clean", f"fsck after recover exits {report.exit_code}: {_findings(report)}"))
    return out


def check_store(path: str, history: History, base: int = 0, prior: Prior | None = None) -> list[Violation]:
    """Properties 1-5 for ``history`` against the store at ``path`` as it is now.

    A store that cannot even be read back (an acknowledged event's file is gone, a hash does not
    match) is itself a violation of property 2, reported with every operation of the history.
    """
    try:
        log = read_log(path, base)
    except KronikoError as exc:
        return [Violation(2, "unreadable-store", f"reading the store back failed: {exc}", list(history.ops))]
    return check(history, log, base, prior)
