"""Findings and reports: what every maintenance operation returns and the CLI prints.

A finding's ``code`` is an interface (CI jobs grep for it): add codes, never rename one.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .errors import EXIT_OK, EXIT_PROBLEMS, EXIT_REPAIRED

SEVERITIES = ("error", "warning", "info")


def safe_text(text: str) -> str:
    """``text`` as valid UTF-8, so JSON and a terminal can carry it: a file name that is not
    UTF-8 (Python hands it out with ``surrogateescape``) shows its bytes as ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name produced: escape it as such
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class Finding:
    """One broken invariant (or a note): code, severity, where, and whether it was repaired."""

    code: str
    severity: str
    path: str
    message: str
    position: int | None = None
    repaired: bool = False

    def as_json(self) -> dict[str, Any]:
        """The JSON finding object (docs/FSCK.md): code, severity, path, position, message, repaired."""
        # A Finding built directly (not through Report.add) may still hold an undecodable name.
        return {"kind": "finding", "code": self.code, "severity": self.severity, "path": safe_text(self.path),
                "position": self.position, "message": safe_text(self.message), "repaired": self.repaired}


@dataclass
class Report:
    """Findings plus figures. ``exit_code`` adds bits like e2fsck: 1 repaired, 4 problems remain.

    Info findings never change the exit code.
    """

    operation: str
    path: str
    head: int = 0
    findings: list[Finding] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def add(self, code: str, severity: str, path: str, message: str, position: int | None = None,
            repaired: bool = False) -> Finding:
        """Record a finding and return it (so a repair can set ``repaired`` later)."""
        assert severity in SEVERITIES, severity
        # Paths come from directory listings: a name that is not UTF-8 is reported escaped.
        finding = Finding(code, severity, safe_text(path), safe_text(message), position, repaired)
        self.findings.append(finding)
        return finding

    def finish(self) -> Report:
        """Stop the clock."""
        self.seconds = time.monotonic() - self.started
        return self

    @property
    def problems(self) -> list[Finding]:
        """Errors and warnings that were not repaired."""
        return [f for f in self.findings if f.severity != "info" and not f.repaired]

    @property
    def exit_code(self) -> int:
        """0 clean, 1 everything found was repaired, 4 (or 5) problems remain."""
        code = EXIT_OK
        if any(f.repaired for f in self.findings):
            code |= EXIT_REPAIRED
        if self.problems:
            code |= EXIT_PROBLEMS
        return code

    def counts(self) -> dict[str, int]:
        """Number of findings per code."""
        return dict(Counter(f.code for f in self.findings))

    def summary(self) -> dict[str, Any]:
        """The closing JSON object: exit code, head, counts per code, figures, seconds."""
        figures = {k: safe_text(v) if isinstance(v, str) else v for k, v in self.figures.items()}
        return {"kind": "summary", "operation": self.operation, "path": safe_text(self.path),
                "exit_code": self.exit_code, "head": self.head, "counts": self.counts(),
                "problems": len(self.problems), "repaired": sum(f.repaired for f in self.findings),
                "seconds": round(self.seconds, 3), **figures}
