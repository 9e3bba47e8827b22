"""Prometheus metrics of maintenance runs, for node_exporter's textfile collector.

Every maintenance command takes ``--metrics-file F`` and leaves in F, for its operation and the
path it worked on (labels ``operation`` and ``path``), whether it ran well, when, how long, and
what it found: every finding code it can report as a ``code`` label, 0 when absent, so that a
series never vanishes when a problem goes away. A failed run writes too, and carries the previous
success time forward (read back from F), so an alert on the age of the last success keeps firing
while the job fails. Runs of other operations or paths already in F are kept: one file may serve
several jobs. F is written through ``prometheus_client``'s registry and ``write_to_textfile``
(a temp file renamed over F), under a lock beside it so that two runs never lose each other's lines.
``docs/RUNBOOK.md`` shows the alert rules.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from . import codes, fileio, locking
from .errors import KronikoError

PREFIX = "kroniko"
LABELS = ("operation", "path")
LOCK_TIMEOUT = 30.0
MAX_READ = 16 << 20  # an existing metrics file bigger than this is not ours: start afresh

# name: help. Every gauge carries the labels operation and path; "findings" adds code.
GAUGES: dict[str, str] = {
    "last_run_timestamp_seconds": "Unix time at which the last run of this operation on this path ended.",
    "last_success_timestamp_seconds": "Unix time of the last run that succeeded (exit 0 or 1); carried "
                                      "forward by failed runs, 0 when none succeeded yet.",
    "last_run_duration_seconds": "Seconds the last run took.",
    "last_run_exit_code": "Exit code of the last run (0 ok, 1 all repaired, 2 usage, 4 problems remain, "
                          "8 operational error, 130 interrupted).",
    "last_run_success": "1 when the last run succeeded (exit 0 or 1), else 0.",
    "head_position": "The head (last position) the last run worked up to; 0 when it did not get that far.",
    "problems": "Problems (errors and warnings) the last run left unrepaired.",
    "repaired": "Findings the last run repaired.",
    "events_processed": "Events the last run checked, copied, indexed or restored.",
    "bytes_processed": "Bytes the last run read or wrote (backup, verify-backup).",
    "backups": "Backups in the backup set after the last run (backup --into, prune).",
    "replica_lag_positions": "Positions the replica is behind the store's synced head (replicate, after each round).",
    "replica_lag_seconds": "Seconds the oldest batch not yet in the replica has been committed; 0 when the replica "
                           "holds the synced head (replicate, after each round).",
}
# What every run sets; a run that failed before its report (exit 2, 8, 130) leaves the other
# gauges (head, problems, findings) as the last run that got that far left them, so an alert on
# fsck's problems does not clear because the next check could not take its lock.
RUN_GAUGES = ("last_run_timestamp_seconds", "last_success_timestamp_seconds", "last_run_duration_seconds",
              "last_run_exit_code", "last_run_success")
FINDINGS = "findings"
FINDINGS_HELP = "Findings of the last run by code; every code the operation can report is present, 0 when absent."
# Figures of a report that measure the same thing under different names, by operation.
_EVENTS = ("events_checked", "events_indexed", "events", "copied_events")


@dataclass
class _Family:
    """One metric family: help text, label names, and a value per label values."""

    help: str
    labels: tuple[str, ...]
    samples: dict[tuple[str, ...], float] = field(default_factory=dict)


def write_run(path: str | os.PathLike[str], operation: str, subject: str, *, exit_code: int, seconds: float,
              report: Any = None, extra: Mapping[str, tuple[str, float]] | None = None,
              now: float | None = None) -> None:
    """Record one run of ``operation`` on ``subject`` (its exit code, duration and, when it got
    that far, its :class:`~kroniko_ops.report.Report`) in the metrics file at ``path``.

    ``extra`` adds gauges of this operation as ``{name: (help, value)}`` (e.g. a replica's lag),
    named ``kroniko_<name>``. Raises :class:`~kroniko_ops.errors.KronikoError` (exit 8) when the
    file cannot be written.
    """
    target = os.path.abspath(os.fspath(path))
    subject = os.path.abspath(subject) if "://" not in subject else subject
    key = (operation, subject)
    ended = time.time() if now is None else now
    ok = exit_code in (0, 1)
    try:
        fileio.makedirs(os.path.dirname(target))
        with locking.held(target + ".lock", LOCK_TIMEOUT, "metrics file"):
            families = _read(target)
            previous = families.get("last_success_timestamp_seconds")
            last_ok = previous.samples.get(key, 0.0) if previous is not None else 0.0
            values = _values(report, exit_code, seconds, ended, ended if ok else last_ok)
            found = report.counts() if report is not None else {}
            for name, fam in families.items():
                if report is None and name not in RUN_GAUGES:
                    continue  # a run that failed before it found anything: what is known stays
                for labels in [lv for lv in fam.samples if lv[:2] == key]:
                    del fam.samples[labels]
            for name, value in values.items():
                if report is not None or name in RUN_GAUGES or key not in families.get(name, _EMPTY).samples:
                    families.setdefault(name, _Family(GAUGES[name], LABELS)).samples[key] = value
            for name, (text, value) in (extra or {}).items():
                families.setdefault(name, _Family(text, LABELS)).samples[key] = float(value)
            findings = families.setdefault(FINDINGS, _Family(FINDINGS_HELP, (*LABELS, "code")))
            for code in sorted(set(codes.for_operation(operation)) | set(found)):
                findings.samples.setdefault((*key, code), 0.0)
                if report is not None:
                    findings.samples[(*key, code)] = float(found.get(code, 0))
            write_to_textfile(target, _registry(families))
    except (OSError, KronikoError) as exc:
        raise KronikoError(f"could not write the metrics file {target} ({exc}); the {operation} run itself "
                           f"ended with exit {exit_code}") from exc


_EMPTY = _Family("", LABELS)


def _values(report: Any, exit_code: int, seconds: float, ended: float, last_ok: float) -> dict[str, float]:
    values = {
        "last_run_timestamp_seconds": ended, "last_success_timestamp_seconds": last_ok,
        "last_run_duration_seconds": seconds, "last_run_exit_code": exit_code,
        "last_run_success": 1.0 if exit_code in (0, 1) else 0.0,
        "head_position": 0.0, "problems": 0.0, "repaired": 0.0, "events_processed": 0.0, "bytes_processed": 0.0,
    }
    if report is not None:
        figures = report.figures
        if _number(figures.get("backups")):
            values["backups"] = figures["backups"]
        values.update(head_position=report.head, problems=len(report.problems),
                      repaired=sum(f.repaired for f in report.findings),
                      events_processed=next((figures[k] for k in _EVENTS if _number(figures.get(k))), 0),
                      bytes_processed=figures.get("bytes", 0) if _number(figures.get("bytes")) else 0)
    return {k: float(v) for k, v in values.items()}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read(target: str) -> dict[str, _Family]:
    """The families of our prefix already in the file (other runs' lines are kept); nothing when
    the file is absent or not a metrics file we can parse."""
    try:
        fd = fileio.open_read(target)
    except FileNotFoundError:
        return {}
    try:
        raw = os.read(fd, MAX_READ + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_READ:
        return {}
    families: dict[str, _Family] = {}
    try:
        for fam in text_string_to_metric_families(raw.decode("utf-8")):
            name = fam.name.removeprefix(PREFIX + "_")
            if name == fam.name or (name not in GAUGES and name != FINDINGS and fam.type != "gauge"):
                continue  # someone else's metric, or a counter we never write
            labels = (*LABELS, "code") if name == FINDINGS else LABELS
            out = families.setdefault(name, _Family(fam.documentation, labels))
            for sample in fam.samples:
                if set(sample.labels) == set(labels):
                    out.samples[tuple(sample.labels[k] for k in labels)] = float(sample.value)
    except (ValueError, UnicodeDecodeError, TypeError):
        return {}  # not a textfile we wrote: it is replaced
    return families


def _registry(families: dict[str, _Family]) -> CollectorRegistry:
    registry = CollectorRegistry()
    for name in sorted(families):
        fam = families[name]
        if not fam.samples:
            continue
        gauge = Gauge(f"{PREFIX}_{name}", fam.help, fam.labels, registry=registry)
        for labels, value in sorted(fam.samples.items()):
            gauge.labels(*labels).set(value)
    return registry


__all__ = ["GAUGES", "write_run"]
