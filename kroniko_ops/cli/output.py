"""Output helpers shared by the commands: JSON lines on stdout, humans' text otherwise."""

from __future__ import annotations

from typing import Any

import click
import orjson

from ..report import safe_text


def _safe(value: Any) -> Any:
    """``value`` with every string made valid UTF-8 (keys included)."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {_safe(k): _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    return value


def emit_json(obj: dict[str, Any]) -> None:
    """Print one JSON object as a line on stdout. A string that is not valid UTF-8 (a file name
    read from a directory listing) is printed with its bytes escaped as ``\\xNN``: a line of
    output is never lost to a traceback."""
    try:
        line = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # orjson.JSONEncodeError: "str is not valid UTF-8: surrogates not allowed"
        line = orjson.dumps(_safe(obj), option=orjson.OPT_NON_STR_KEYS)
    click.echo(line.decode())


def print_report(report: Any, as_json: bool, quiet: bool = False, error: str | None = None) -> None:
    """Print a :class:`~kroniko_ops.report.Report`: one JSON line per finding and a summary with
    ``--json``; otherwise findings grouped by code and a one-line verdict. ``error``: the run
    then failed after its report (its metrics file): the summary says exit 8 and why, and keeps
    the report's own code as ``verdict_exit_code``."""
    # Kept before printing: the verdict outlives a reader that closes stdout early.
    click.get_current_context().meta["kroniko_verdict"] = report.exit_code if error is None else 8
    if as_json:
        for f in report.findings:
            emit_json(f.as_json())
        summary = report.summary()
        if error is not None:
            summary.update(exit_code=8, verdict_exit_code=report.exit_code, error=safe_text(error))
        emit_json(summary)
        return
    by_code: dict[str, list[Any]] = {}
    for f in report.findings:
        by_code.setdefault(f.code, []).append(f)
    for code, group in by_code.items():
        if quiet and all(f.severity == "info" for f in group):
            continue
        click.echo(f"{code} ({group[0].severity}, {len(group)}):")
        for f in group[:50]:
            where = f" @{f.position}" if f.position is not None else ""
            mark = " [repaired]" if f.repaired else ""
            click.echo(f"  {safe_text(f.path)}{where}: {safe_text(f.message)}{mark}")
        if len(group) > 50:
            click.echo(f"  ... and {len(group) - 50} more (use --json for all)")
    code = report.exit_code
    verdict = {0: "clean", 1: "all problems repaired"}.get(code, f"{len(report.problems)} problem(s) remain")
    figures = safe_text(" ".join(f"{k}={v}" for k, v in report.figures.items() if isinstance(v, (int, float, str))))
    click.echo(f"{report.operation} {safe_text(report.path)}: {verdict} (head {report.head}; {figures}; "
               f"{report.seconds:.2f}s; exit {code})")
