"""Shared machinery of the store checks: the check context, capped findings, multiset digests,
temp-file names and fast whole-file reads.

Memory must not grow with the number of events, so no check keeps a set of ids or positions.
Instead each side of a comparison (the log against ``events/``, the log against the index) is
summarised by a :class:`Digest`, an order-independent sum of 64-bit hashes. Equal digests mean
equal multisets (a false match has a probability of about 2**-64 per run); only when they differ
does a check spill both sides to disk, partitioned by hash, to name the exact differences
(:mod:`kroniko_ops.ops.checks_spill`).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field

from .. import fileio
from ..layout import Layout, pid_alive, stale_temp  # noqa: F401  (re-exported for the checks)
from ..report import Finding, Report

MAX_FINDINGS_PER_CODE = 10_000
DANGLING_PRUNE_AGE = 3600.0  # seconds; younger dangling events may belong to an append in progress
MASK64 = (1 << 64) - 1
LOG_PATH = "log/append.log"


class StopChecking(Exception):
    """Raised when ``max_errors`` problems were found: the check stops where it is."""


@dataclass
class Context:
    """One check run: where, how deep, and the report being filled.

    :meth:`add` keeps at most :data:`MAX_FINDINGS_PER_CODE` findings per code (the rest are only
    counted, in ``figures["findings_not_listed"]``) so that a badly damaged store cannot make
    the report itself grow with the store.
    """

    root: str
    report: Report
    full: bool = True
    quiet: bool = True
    max_errors: int | None = None
    problems: int = 0
    per_code: Counter[str] = field(default_factory=Counter)
    not_listed: Counter[str] = field(default_factory=Counter)

    @property
    def layout(self) -> Layout:
        """The store's paths."""
        return Layout(self.root)

    def rel(self, path: str) -> str:
        """``path`` relative to the store root (how findings name files)."""
        return os.path.relpath(path, self.root)

    def add(self, code: str, severity: str, path: str, message: str, position: int | None = None,
            repaired: bool = False) -> Finding | None:
        """Record a finding (``path`` relative to the root); raise :class:`StopChecking` once
        ``max_errors`` problems were recorded."""
        counts = severity != "info" and not repaired
        if self.per_code[code] >= MAX_FINDINGS_PER_CODE:
            self.not_listed[code] += 1
            self.report.figures["findings_not_listed"] = dict(self.not_listed)
            finding = None
        else:
            self.per_code[code] += 1
            finding = self.report.add(code, severity, path, message, position, repaired)
        if counts:
            self.problems += 1
            if self.max_errors is not None and self.problems >= self.max_errors:
                raise StopChecking
        return finding


class Digest:
    """An order-independent summary of a multiset: its size and the sum of its keys' hashes.

    Python's ``hash`` of a str is SipHash with a per-process key, so two digests are comparable
    only within one process, which is all a check needs.
    """

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def add(self, key: Hashable) -> None:
        """Add one element."""
        self.count += 1
        self.total = (self.total + hash(key)) & MASK64

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Digest) and (self.count, self.total) == (other.count, other.total)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Digest(count={self.count}, total={self.total:#x})"


# One reader of whole files for the engine and the checks. A short read means end of file for a
# regular file, so ``read_exact`` (used to confirm a mismatch) is the same function.
read_whole = read_exact = fileio.read_file


def age_of(path: str, now: float | None = None) -> float | None:
    """Seconds since ``path`` was last modified, None when it is gone."""
    try:
        return (now or time.time()) - os.lstat(path).st_mtime
    except FileNotFoundError:
        return None


def describe_age(seconds: float) -> str:
    """A short human age: ``42s``, ``17m``, ``5h``, ``3d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
