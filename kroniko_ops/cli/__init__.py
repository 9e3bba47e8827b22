"""The ``kroniko-ops`` command line: parse, call one library function, print its report.

Exceptions become exit codes here and only here (:class:`_Group`): every :class:`KronikoError`
carries its own ``exit_code``; an unexpected ``OSError`` or SQLite error is operational (8), and
so is any other exception (a bug: its traceback is printed): a crash never exits 0 or 1 (fsck's
"all repaired"). Commands that end with a non-zero code of their own (fsck's bits) call
``ctx.exit(code)``. SIGTERM (systemd, ``timeout``) is handled like Ctrl-C: the command cleans up
and exits 143. A reader that closes stdout early never turns a verdict into 0: the command exits
with the verdict it printed (:data:`VERDICT`), else 141 (128 + SIGPIPE).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import traceback
from typing import Any

import click

from ..errors import EXIT_OPERATIONAL, KronikoError, access_denied, denied
from . import contract

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells expect of a command stopped by Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away
VERDICT = "kroniko_verdict"  # ctx.meta key: the exit code a report printed on stdout stands for


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwinds like Ctrl-C, so every cleanup written for Ctrl-C runs."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and Python's flush at exit would
    otherwise fail again and print a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class _Failed(click.ClickException):
    """A library error on its way out, with the library's exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        raw = [*getattr(ctx, "_protected_args", ()), *ctx.args]  # for a run that failed while parsing
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except KronikoError as exc:
            contract.close(ctx, raw, exc.exit_code, str(exc), **_details(exc))
            raise _Failed(str(exc), exc.exit_code) from exc
        except click.ClickException as exc:  # a usage error: click prints it, exit 2
            contract.close(ctx, raw, exc.exit_code, exc.format_message())
            raise
        except BrokenPipeError:
            # The reader went away: the verdict already decided stands (never 0 for damage).
            _quiet_stdout()
            verdict = ctx.meta.get(VERDICT)
            ctx.exit(EXIT_BROKEN_PIPE if verdict is None else verdict)
        except Terminated:
            contract.close(ctx, raw, EXIT_TERMINATED, "terminated")
            click.echo("terminated", err=True)
            ctx.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            # Never 1 (fsck's "all repaired") for a run cut short: say so and exit 130.
            contract.close(ctx, raw, EXIT_INTERRUPTED, "interrupted")
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except OSError as exc:
            message = str(access_denied(exc.filename, exc)) if denied(exc) and exc.filename else str(exc)
            contract.close(ctx, raw, EXIT_OPERATIONAL, message)
            raise _Failed(message, EXIT_OPERATIONAL) from exc
        except sqlite3.Error as exc:  # an index database that failed where no finding could say so
            contract.close(ctx, raw, EXIT_OPERATIONAL, f"SQLite: {exc}")
            raise _Failed(f"SQLite: {exc}", EXIT_OPERATIONAL) from exc
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            # A bug, not the user's doing: show where, and never exit 1 (fsck's "all repaired").
            traceback.print_exc()
            message = (f"internal error ({type(exc).__name__}: {exc}); nothing more is known about the outcome: "
                       "please report this with the traceback above")
            contract.close(ctx, raw, EXIT_OPERATIONAL, message)
            raise _Failed(message, EXIT_OPERATIONAL) from exc
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _details(exc: KronikoError) -> dict[str, Any]:
    """Fields of an error that a script may want in the summary line (a failed condition's position)."""
    position = getattr(exc, "position", None)
    return {"position": position} if isinstance(position, int) else {}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kroniko-ops")
def cli() -> None:
    """kroniko-ops: a file-based DCB event store and the tools that keep it healthy.

    Exit codes: 0 success (fsck: clean), 1 fsck repaired everything, 2 usage error (nothing
    written), 3 append condition failed, 4 problems remain, 8 operational error, 130 interrupted
    (Ctrl-C), 141 stdout closed by its reader, 143 terminated (SIGTERM).
    """


def main() -> None:
    """Console entry point. What escapes the group (an error while click parses, before any
    command runs) still never exits 1, fsck's "all repaired"."""
    try:
        cli(prog_name="kroniko-ops")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # SystemExit (click's normal way out) is not an Exception
        traceback.print_exc()
        click.echo(f"error: internal error ({type(exc).__name__}: {exc})", err=True)
        sys.exit(EXIT_OPERATIONAL)


# Commands register themselves on import; one module per group of commands.
from . import (  # noqa: E402,F401
    backup_cmds,
    compact_cmds,
    maintenance_cmds,
    migrate_cmds,
    replicate_cmds,
    store_cmds,
    torture_cmds,
)
