"""Property 6 and the store side of the checks: recover, fsck, and read the log for the checker.

The log is read through the engine (``EventStore.records``: parsed, chain-ordered records up to
the synced head, each with its commit mark and body hash; ``PostgresEventStore.records`` for a
``postgresql://`` URL), never by parsing store files here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import kroniko_ops

from ..codec import decode_event
from ..errors import KronikoError
from ..format.record import Record
from ..postgres import is_url, open_store
from .checker import LogEntry, Prior, Violation, check
from .history import History


def logical_id(event_id: str, data: Any) -> str:
    """The id the harness gave an event: its ``data["op"]`` marker (set for generated ids too)."""
    if isinstance(data, dict) and isinstance(data.get("op"), str):
        return str(data["op"])
    return event_id


def entry_of(rec: Record) -> LogEntry:
    """The checker's view of one record: position, logical id, type, tags, commit mark, hash."""
    event = decode_event(rec.body)
    return LogEntry(rec.position, logical_id(rec.event_id, event.data), event.type, tuple(event.tags),
                    rec.commit, rec.event_hash)


def iter_log(path: str, lo: int = 1, hi: int | None = None) -> Iterator[LogEntry]:
    """The committed entries ``lo..hi`` (to the synced head when ``hi`` is None), in order."""
    with open_store(path, create=False, durable=False) as s:
        top = s.head() if hi is None else hi
        for rec in s.records(lo, top):
            yield entry_of(rec)


def read_log(path: str, base: int = 0) -> list[LogEntry]:
    """Every committed entry after ``base``."""
    return list(iter_log(path, base + 1))


def entry_reader(path: str) -> Callable[[int], LogEntry | None]:
    """A function fetching the entry at one position (for positions before a run's base)."""

    def entry_at(position: int) -> LogEntry | None:
        return next(iter_log(path, position, position), None)

    return entry_at


def chain_at(path: str, position: int) -> bytes:
    """The chain hash of the record at ``position`` (empty for 0): it fixes the whole prefix."""
    if position == 0:
        return b""
    with open_store(path, create=False, durable=False) as s:
        return next(iter(s.records(position, position))).chain


def _findings(report: Any) -> str:
    return "; ".join(f"{f.code}@{f.position}: {f.message}" for f in report.problems[:5]) or "no details"


def recover_and_fsck(path: str, quick: bool = False) -> list[Violation]:
    """Property 6: ``kroniko_ops.recover`` then ``kroniko_ops.fsck`` report a clean store.

    Recovery may repair (exit 1) but must leave no problem behind; fsck (``quick``: its quick
    level) must then find nothing (info findings aside).
    """
    out = []
    if is_url(path):
        # A server rolls back a dead client's transaction itself: nothing to recover, only to check.
        from ..ops.postgres.fsck import fsck as pg_fsck  # psycopg is an optional extra

        report = pg_fsck(path, quick=quick)
        if report.exit_code != 0:
            out.append(Violation(6, "fsck-not-clean", f"fsck exits {report.exit_code}: {_findings(report)}"))
        return out
    try:
        rec = kroniko_ops.recover(path)  # type: ignore[attr-defined]
    except Exception as exc:  # with no fault injected, a failing recover is a finding, not a traceback
        return [Violation(6, "recover-failed", f"recover failed: {type(exc).__name__}: {exc}")]
    if rec.exit_code & 4:
        out.append(Violation(6, "recover-failed", f"recover left problems (exit {rec.exit_code}): {_findings(rec)}"))
    try:
        report = kroniko_ops.fsck(path, quick=quick)  # type: ignore[attr-defined]
    except Exception as exc:
        return [*out, Violation(6, "fsck-failed", f"fsck failed: {type(exc).__name__}: {exc}")]
    if report.exit_code != 0:
        out.append(Violation(6, "fsck-not-clean", f"fsck after recover exits {report.exit_code}: {_findings(report)}"))
    return out


def check_store(path: str, history: History, base: int = 0, prior: Prior | None = None) -> list[Violation]:
    """Properties 1-5 and 7 for ``history`` against the store at ``path`` as it is now.

    A store that cannot even be read back (a record fails its checks, a position is missing) is
    itself a violation of property 2, reported with every operation of the history.
    """
    try:
        log = read_log(path, base)
    except (KronikoError, ValueError, OSError) as exc:
        return [Violation(2, "unreadable-store", f"reading the store back failed: {type(exc).__name__}: {exc}",
                          list(history.ops))]
    return check(history, log, base, prior)
