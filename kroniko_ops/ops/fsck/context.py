"""The state of one check run: the report being filled, capped findings, ``--max-errors``, and
what ``--repair`` may do about each finding (the checks decide that, where they see the damage)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from ...layout import Layout
from ...report import Finding, Report

MAX_FINDINGS_PER_CODE = 10_000  # a badly damaged store must not make the report grow with it

# Repair actions a check can attach to a finding (see :mod:`.repair`).
RECOVER = "recover"  # the engine's tail recovery, under the append lock
REINDEX = "reindex"  # a new index generation built from the log
RESEAL = "reseal"  # rebuild the last sealed segment's offset index from its records
SET_ASIDE = "set-aside"  # move the file into lost-found/
MAKE_DIR = "make-dir"  # create a missing layout folder
ACTIONS = {
    RECOVER: "run recovery (cut the tail into lost-found/, finish the seal, reset the synced position)",
    REINDEX: "rebuild the index (reindex)",
    RESEAL: "rebuild the offset index from the segment's records",
    SET_ASIDE: "move it into lost-found/",
    MAKE_DIR: "create the folder",
}


class StopChecking(Exception):
    """Raised when ``max_errors`` problems were found: the check stops where it is."""


@dataclass
class Context:
    """One check run over the store at ``root``."""

    root: str
    report: Report
    full: bool = True
    max_errors: int | None = None
    problems: int = 0
    per_code: Counter[str] = field(default_factory=Counter)
    not_listed: Counter[str] = field(default_factory=Counter)
    actions: list[tuple[Finding, str]] = field(default_factory=list)
    tail: object | None = None  # the tail check's TailState, once it ran (what --accept-loss needs)

    @property
    def layout(self) -> Layout:
        """The store's paths."""
        return Layout(self.root)

    def rel(self, path: str) -> str:
        """``path`` relative to the store root (how findings name files)."""
        return os.path.relpath(path, self.root)

    def add(self, code: str, severity: str, path: str, message: str, position: int | None = None,
            action: str | None = None) -> Finding | None:
        """Record a finding (``path`` relative to the root) with the repair that fixes it, if any;
        raise :class:`StopChecking` once ``max_errors`` problems were recorded."""
        finding = None
        if self.per_code[code] >= MAX_FINDINGS_PER_CODE:
            self.not_listed[code] += 1
            self.report.figures["findings_not_listed"] = dict(self.not_listed)
        else:
            self.per_code[code] += 1
            finding = self.report.add(code, severity, path, message, position)
            if action is not None:
                self.actions.append((finding, action))
        if severity != "info":
            self.problems += 1
            if self.max_errors is not None and self.problems >= self.max_errors:
                raise StopChecking
        return finding

    def trial(self) -> Context:
        """A scratch context for a step that may have to start over (a listing whose files
        moved): its findings count only once :meth:`absorb` takes them."""
        return Context(self.root, Report(self.report.operation, self.root), self.full)

    def absorb(self, trial: Context) -> None:
        """Take the findings (and their repairs) of a finished :meth:`trial`."""
        actions = {id(f): a for f, a in trial.actions}
        for f in trial.report.findings:
            self.add(f.code, f.severity, f.path, f.message, f.position, action=actions.get(id(f)))

    def has(self, *codes: str) -> bool:
        """Whether a problem (not info) with one of ``codes`` was found."""
        return any(f.code in codes and f.severity != "info" for f in self.report.findings)
