"""The recorded history: what each worker did, when (one monotonic clock), and what came of it.

Workers append one JSON line per step to their own history file with a single ``write`` (which a
SIGKILL cannot tear), so a killed worker's history survives it: an operation whose ``invoke``
line has no ``done`` line has an unknown outcome. :func:`load` joins these lines with the
workload (the arguments) into :class:`OpRecord` and :class:`ReadRecord` values for the checker.

A read is recorded with what it returned: how many events, a digest of their positions and
body hashes (:func:`read_digest`, a sum, so the checker can recompute it for any position range
from prefix sums), whether they came in order, and the positions themselves for small results.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..codec import encode_event
from ..model import Event
from .workload import EventPlan, QuerySpec, Workload

COMMITTED = "committed"
REJECTED = "rejected"
UNKNOWN = "unknown"
ERROR = "error"
# Failed before anything was written (NothingWritten): its events must be absent, like a rejection's.
NOT_WRITTEN = "not-written"
SKIPPED = "skipped"


@dataclass
class OpRecord:
    """One append call: its arguments, its interval, its outcome.

    ``position`` is the last position the call returned (committed); ``conflict`` the position
    :class:`~kroniko_ops.AppendConditionFailed` named (rejected). ``complete`` is None when the
    worker died during the call. ``conditional`` tells an append with a condition from one
    without; ``after`` None with a condition means "fail if any matching event exists".
    """

    worker: int
    index: int
    kind: str
    ids: tuple[str, ...]
    events: tuple[EventPlan, ...]
    conditional: bool = False
    query: QuerySpec | None = None
    after: int | None = None
    invoke: int = 0
    complete: int | None = None
    outcome: str = UNKNOWN
    position: int | None = None
    conflict: int | None = None
    error: str | None = None
    retry_of: int | None = None

    @property
    def name(self) -> str:
        """Short name: worker and index, e.g. ``w2#5``."""
        return f"w{self.worker}#{self.index}"

    def describe(self, t0: int = 0) -> str:
        """One readable line: what was asked, when, and what came of it."""
        ids = self.ids[0] if len(self.ids) == 1 else f"{self.ids[0]}..{self.ids[-1].rsplit('.', 1)[-1]}"
        events = ", ".join(_event_text(e) for e in self.events[:3]) + (", ..." if len(self.events) > 3 else "")
        cond = ""
        if self.conditional:
            cond = f" if no {query_text(self.query or ())} after {self.after if self.after is not None else '0 (any)'}"
        what = f"{self.kind}{'' if self.retry_of is None else f' of #{self.retry_of}'}"
        end = "?" if self.complete is None else f"{(self.complete - t0) / 1e6:.3f}"
        result = self.outcome
        if self.outcome == COMMITTED and self.position is not None:
            result += f" @{self.position - len(self.ids) + 1}..{self.position}"
        elif self.outcome == REJECTED:
            result += f" (conflict @{self.conflict})"
        elif self.outcome in (ERROR, NOT_WRITTEN):
            result += f" ({self.error})"
        return (f"{self.name} {what} [{ids}: {len(self.ids)} event(s) {events}]{cond}"
                f" t={(self.invoke - t0) / 1e6:.3f}..{end}ms -> {result}")


MASK = (1 << 64) - 1
POSITIONS_KEPT = 256  # a read's positions are recorded when it returned at most this many


def mix(position: int, event_hash: bytes) -> int:
    """One returned event's share of a read digest: 64 bits of SHA-256 over its position and
    the SHA-256 of its stored JSON body (the record's event hash)."""
    return int.from_bytes(hashlib.sha256(position.to_bytes(8, "big") + event_hash).digest()[:8], "big")


def body_hash(event: Event) -> bytes:
    """The SHA-256 of an event's canonical JSON: the event hash its record carries (the codec
    encodes an event read back to the very bytes that were stored)."""
    return hashlib.sha256(encode_event(event, 1 << 30)[1]).digest()


def read_digest(pairs: Iterable[tuple[int, bytes]]) -> str:
    """The digest of a read's ``(position, body hash)`` pairs: the sum of their :func:`mix`
    modulo 2**64, as 16 hex digits. A sum, so the digest of any range of a position-ordered log
    is a difference of prefix sums (the checker's recomputation is one bisect per class)."""
    return f"{sum(mix(p, h) for p, h in pairs) & MASK:016x}"


@dataclass
class ReadRecord:
    """A read a worker did (alone or before a conditional append): its arguments, the head it
    answered for and what it returned (``count`` events, ``digest`` of them, ``ordered`` when
    positions came strictly ascending, or descending for a backwards read; ``positions`` when
    at most :data:`POSITIONS_KEPT`). ``query`` None means the read's result was not recorded
    (fabricated or summary records): only its head is checked."""

    worker: int
    index: int
    invoke: int
    complete: int
    head: int
    found: int = 0
    query: QuerySpec | None = None
    start: int | None = None
    backwards: bool = False
    digest: str | None = None
    ordered: bool = True
    positions: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        """Short name: worker and index with an ``r``, e.g. ``w2#5r``."""
        return f"w{self.worker}#{self.index}r"

    def describe(self, t0: int = 0) -> str:
        """One readable line."""
        what = "read" if self.query is None else f"read {query_text(self.query)}"
        if self.start is not None:
            what += f" {'down' if self.backwards else 'up'} from {self.start}"
        elif self.backwards:
            what += " backwards"
        shown = ""
        if self.positions is not None:
            shown = " " + str(list(self.positions[:8]))[:-1] + (", ...]" if len(self.positions) > 8 else "]")
        return (f"{self.name} {what} t={(self.invoke - t0) / 1e6:.3f}..{(self.complete - t0) / 1e6:.3f}ms"
                f" -> head {self.head} ({self.found} match(es){shown})")


@dataclass
class History:
    """Every append call and read of a run, when each killed worker was seen dead, and any
    worker stopped by an unexpected exception."""

    ops: list[OpRecord] = field(default_factory=list)
    reads: list[ReadRecord] = field(default_factory=list)
    deaths: dict[int, int] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (worker, what stopped it)

    @property
    def t0(self) -> int:
        """The earliest time recorded (times are printed relative to it)."""
        times = [op.invoke for op in self.ops] + [r.invoke for r in self.reads]
        return min(times) if times else 0

    def count(self, outcome: str) -> int:
        """How many append calls ended with ``outcome``."""
        return sum(op.outcome == outcome for op in self.ops)

    def extend(self, other: History) -> None:
        """Add another history's records (e.g. a setup phase before the run)."""
        self.ops.extend(other.ops)
        self.reads.extend(other.reads)
        self.deaths.update(other.deaths)
        self.errors.extend(other.errors)


def _event_text(e: EventPlan) -> str:
    return e.type + (f"{{{','.join(e.tags)}}}" if e.tags else "")


def query_text(spec: QuerySpec) -> str:
    """A query as text: ``(A|B & s:1) or (C)``; ``*`` for everything."""
    if not spec:
        return "*"
    parts = []
    for types, tags in spec:
        bits = (["|".join(types)] if types else []) + list(tags)
        parts.append("(" + (" & ".join(bits) or "*") + ")")
    return " or ".join(parts)


# -- the files workers write -------------------------------------------------------------------


class Recorder:
    """A worker's history file, written one whole line per ``write`` (O_APPEND)."""

    def __init__(self, path: str) -> None:
        # Plain os.open, not fileio: the history is the harness's own file, not the store's, and
        # must not be subject to the faults or kills injected into the store's file operations.
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def record(self, **fields: Any) -> None:
        """Write one record."""
        os.write(self.fd, orjson.dumps(fields) + b"\n")

    def close(self) -> None:
        """Close the file."""
        os.close(self.fd)


def read_records(path: str) -> list[dict[str, Any]]:
    """The records of one history file (a torn last line, impossible in practice, is ignored)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in raw.split(b"\n"):
        if line:
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return out


def read_record(worker: int, rec: dict[str, Any]) -> ReadRecord:
    """A :class:`ReadRecord` from a ``read`` line of a history file."""
    query = rec.get("query")
    spec: QuerySpec | None = None
    if query is not None:
        spec = tuple((tuple(types), tuple(tags)) for types, tags in query)
    positions = rec.get("positions")
    return ReadRecord(worker, rec["i"], rec["t0"], rec["t1"], rec["head"], rec.get("found", 0), spec,
                      rec.get("start"), bool(rec.get("backwards", False)), rec.get("digest"),
                      bool(rec.get("ordered", True)), None if positions is None else tuple(positions))


def load(workload: Workload, files: Sequence[str], deaths: dict[int, int] | None = None) -> History:
    """Join each worker's history file (``files[w]``) with the workload's arguments."""
    history = History(deaths=dict(deaths or {}))
    for w, path in enumerate(files):
        history.extend(from_records(workload, w, read_records(path)))
    return history


def from_records(workload: Workload, worker: int, records: Iterable[dict[str, Any]]) -> History:
    """The history of one worker from its records."""
    out = History()
    open_ops: dict[int, OpRecord] = {}
    for rec in records:
        i = rec["i"]
        ev = rec["ev"]
        if ev == "error":
            out.errors.append((worker, rec["error"]))
        elif ev == "read":
            out.reads.append(read_record(worker, rec))
        elif ev == "invoke":
            op = workload.workers[worker][i]
            target = workload.workers[worker][op.retry_of] if op.kind == "retry" and op.retry_of is not None else op
            record = OpRecord(
                worker, i, op.kind, workload.event_ids(worker, i), workload.batch(worker, i),
                conditional=rec.get("conditional", False), query=target.query if rec.get("conditional") else None,
                after=rec.get("after"), invoke=rec["t"], retry_of=op.retry_of,
            )
            open_ops[i] = record
            out.ops.append(record)
        elif ev == "done":
            record = open_ops.pop(i)
            record.complete = rec["t"]
            record.outcome = rec["outcome"]
            record.position = rec.get("pos")
            record.conflict = rec.get("conflict")
            record.error = rec.get("error")
    return out
