"""What every command promises cron jobs and CI (``docs/output.schema.json``): ``--json`` (JSON
lines, each with a ``kind``, the last one ``{"kind": "summary", "operation", "path", "exit_code",
...}``, even when the command fails), ``--quiet``, ``--metrics-file`` on maintenance commands,
and two or three examples at the end of ``--help``.

A command is declared with :func:`command`; its callback receives a :class:`Run` first and ends
with :meth:`Run.finish` (a report) or :meth:`Run.done` (its own summary fields). A failure on the
way is closed by :func:`close`, called from the one place exceptions become exit codes
(``cli/__init__.py``): it prints the summary line the run owes and records the failure in the
metrics file.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from ..errors import EXIT_OPERATIONAL, KronikoError
from ..postgres.url import display
from ..report import safe_text
from .output import emit_json, print_report

RUN_KEY = "kroniko_ops.run"


@dataclass
class Run:
    """One command run: what it is about and how its output is asked for."""

    operation: str
    path: str | None
    as_json: bool = False
    quiet: bool = False
    metrics_file: str | None = None
    subject: str | None = None  # the metrics' path label: the command's stable first argument
    started: float = field(default_factory=time.monotonic)
    ended: bool = False

    @property
    def progress(self) -> bool:
        """Whether to draw progress bars: on a terminal, unless ``--quiet``."""
        return not self.quiet and sys.stderr.isatty()

    def finish(self, report: Any) -> None:
        """End with a :class:`~kroniko_ops.report.Report`: metrics, the report, its exit code. A
        metrics file that cannot be written still leaves the report printed, then exit 8."""
        self.path = report.path
        failed = None
        try:
            self._metrics(report.exit_code, report)
        except KronikoError as exc:
            failed = str(exc)
        self.ended = True
        print_report(report, self.as_json, self.quiet, error=failed)
        if failed is not None and not self.as_json:
            click.echo(f"error: {failed}", err=True)
        code = EXIT_OPERATIONAL if failed is not None else report.exit_code
        if code:
            click.get_current_context().exit(code)

    def done(self, exit_code: int = 0, **fields: Any) -> None:
        """End a command that has no report: the summary line (``--json``) with ``fields``."""
        self._metrics(exit_code, None)
        self.ended = True
        if self.as_json:
            emit_json(self.summary(exit_code, **fields))
        if exit_code:
            click.get_current_context().exit(exit_code)

    def summary(self, exit_code: int, **fields: Any) -> dict[str, Any]:
        """The closing JSON object of this run."""
        return {"kind": "summary", "operation": self.operation,
                "path": safe_text(self.path) if self.path is not None else None, "exit_code": exit_code,
                "seconds": round(time.monotonic() - self.started, 3), **fields}

    def fail(self, exit_code: int, message: str, **fields: Any) -> None:
        """Close a run that ended with an error (exit 2, 3, 8, 130...): metrics and the summary
        line it owes. Never raises: the error on its way out is what the user must see."""
        if self.ended:
            return
        self.ended = True
        try:
            if self.as_json:
                emit_json(self.summary(exit_code, error=safe_text(message), **fields))
        except OSError:  # stdout closed: the exit code still tells
            pass
        try:
            self._metrics(exit_code, None)
        except Exception as exc:  # the run's own error matters more; say both
            click.echo(f"error: {exc}", err=True)

    def _metrics(self, exit_code: int, report: Any) -> None:
        if self.metrics_file:
            from .. import metrics  # prometheus_client costs ~30 ms to import: only when asked for

            seconds = report.seconds if report is not None and report.seconds else time.monotonic() - self.started
            metrics.write_run(self.metrics_file, self.operation, self.subject or self.path or "",
                              exit_code=exit_code, seconds=seconds, report=report)


def current() -> Run | None:
    """The run of the command being executed, if it got as far as its callback."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(RUN_KEY) if ctx is not None else None


def close(ctx: click.Context, raw_args: Sequence[str], exit_code: int, message: str, **fields: Any) -> None:
    """Called where an error becomes an exit code: give the run its summary line and metrics.
    A command that failed while its arguments were parsed has no run yet; ``--json`` among
    ``raw_args`` still gets the summary line, with the path when the arguments name one."""
    run = ctx.meta.get(RUN_KEY)
    if run is None:
        at = next((i for i, a in enumerate(raw_args) if a in COMMANDS), None)
        if at is None:
            return
        name, rest = raw_args[at], list(raw_args[at + 1:])
        run = Run(name, _lenient_path(ctx, name, rest), as_json="--json" in rest)
    run.fail(exit_code, message, **fields)


def _lenient_path(ctx: click.Context, name: str, args: list[str]) -> str | None:
    """The path argument of arguments that did not parse, read the way click reads them when it
    completes a command line (no validation); None when even that fails."""
    command = ctx.command.get_command(ctx, name) if isinstance(ctx.command, click.Group) else None
    param = COMMANDS.get(name)
    if command is None or param is None:
        return None
    try:
        with command.make_context(name, list(args), parent=ctx, resilient_parsing=True) as sub:
            return _text(sub.params.get(param))
    except Exception:  # nothing more to learn from arguments this broken
        return None


COMMANDS: dict[str, str | None] = {}  # command name -> the parameter its summary's path comes from


def examples(*lines: str) -> str:
    """A ``--help`` epilog listing command lines, kept as written (click's ``\\b``)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def command(group: click.Group, name: str, *, path: str | None, examples_: Sequence[str], subject: str | None = None,
            metrics_file: bool = False, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:
    """Declare the command ``name`` on ``group`` with ``--json`` and ``--quiet`` (and
    ``--metrics-file`` when ``metrics_file``). ``path`` names the parameter the summary's
    ``path`` comes from; ``subject`` the one labelling its metrics (default: ``path``). The
    callback is called with a :class:`Run` first; when it returns without ending the run, the
    run is ended with exit 0."""

    def wrap(f: Callable[..., Any]) -> click.Command:
        @functools.wraps(f)
        def callback(as_json: bool, quiet: bool, metrics_path: str | None = None, **kw: Any) -> None:
            run = Run(name, _text(kw.get(path)) if path else None, as_json, quiet, metrics_path,
                      subject=_text(kw.get(subject or path or "")))
            click.get_current_context().meta[RUN_KEY] = run
            f(run, **kw)
            if not run.ended:
                run.done(0)

        shared = []  # click lists the options in reverse: these come last in --help
        if metrics_file:
            shared.append(click.Option(["--metrics-file", "metrics_path"], type=click.Path(dir_okay=False),
                                       default=None, help="Also record this run in Prometheus text format in this "
                                       "file (for node_exporter's textfile collector; other runs' lines in it are "
                                       "kept)."))
        shared.append(click.Option(["--quiet", "-q"], is_flag=True,
                                   help="No progress bars, no info-only findings, no narration: results and verdict "
                                   "only."))
        shared.append(click.Option(["--json", "as_json"], is_flag=True,
                                   help="Print JSON lines, each with a 'kind'; the last is the run's summary."))
        callback.__click_params__ = shared + list(getattr(f, "__click_params__", []))  # type: ignore[attr-defined]
        COMMANDS[name] = path
        return group.command(name, epilog=examples(*examples_), **kwargs)(callback)

    return wrap


def _text(value: Any) -> str | None:
    """A path or URL as output may show it (a URL's password never)."""
    return None if value is None else display(str(value))
