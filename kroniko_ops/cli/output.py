"""Output helpers shared by the commands: JSON lines on stdout, humans' text otherwise."""

from __future__ import annotations

from typing import Any

import click
import orjson


def emit_json(obj: dict[str, Any]) -> None:
    """Print one JSON object as a line on stdout."""
    click.echo(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode())


def json_option(f: Any) -> Any:
    """The ``--json`` flag: results as JSON lines, each with a ``kind``."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON lines (each with a 'kind').")(f)


def print_report(report: Any, as_json: bool, quiet: bool = False) -> None:
    """Print a :class:`~kroniko_ops.report.Report`: one JSON line per finding and a summary with
    ``--json``; otherwise findings grouped by code and a one-line verdict."""
    if as_json:
        for f in report.findings:
            emit_json(f.as_json())
        emit_json(report.summary())
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
            click.echo(f"  {f.path}{where}: {f.message}{mark}")
        if len(group) > 50:
            click.echo(f"  ... and {len(group) - 50} more (use --json for all)")
    code = report.exit_code
    verdict = {0: "clean", 1: "all problems repaired"}.get(code, f"{len(report.problems)} problem(s) remain")
    figures = " ".join(f"{k}={v}" for k, v in report.figures.items() if isinstance(v, (int, float, str)))
    click.echo(f"{report.operation} {report.path}: {verdict} (head {report.head}; {figures}; "
               f"{report.seconds:.2f}s; exit {code})")
