"""The ``kroniko-ops`` command line: parse, call one library function, print its report.

Exceptions become exit codes here and only here (:class:`_Group`): every :class:`KronikoError`
carries its own ``exit_code``; an unexpected ``OSError`` is operational (8). Commands that end
with a non-zero code of their own (fsck's bits) call ``ctx.exit(code)``.
"""

from __future__ import annotations

from typing import Any

import click

from ..errors import EXIT_OPERATIONAL, KronikoError
from . import contract

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells expect of a command stopped by Ctrl-C


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
        try:
            return super().invoke(ctx)
        except KronikoError as exc:
            contract.close(ctx, raw, exc.exit_code, str(exc), **_details(exc))
            raise _Failed(str(exc), exc.exit_code) from exc
        except click.ClickException as exc:  # a usage error: click prints it, exit 2
            contract.close(ctx, raw, exc.exit_code, exc.format_message())
            raise
        except BrokenPipeError:
            ctx.exit(0)
        except KeyboardInterrupt:
            # Never 1 (fsck's "all repaired") for a run cut short: say so and exit 130.
            contract.close(ctx, raw, EXIT_INTERRUPTED, "interrupted")
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except OSError as exc:
            contract.close(ctx, raw, EXIT_OPERATIONAL, str(exc))
            raise _Failed(str(exc), EXIT_OPERATIONAL) from exc


def _details(exc: KronikoError) -> dict[str, Any]:
    """Fields of an error that a script may want in the summary line (a failed condition's position)."""
    position = getattr(exc, "position", None)
    return {"position": position} if isinstance(position, int) else {}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kroniko-ops")
def cli() -> None:
    """kroniko-ops: a file-based DCB event store and the tools that keep it healthy.

    Exit codes: 0 success (fsck: clean), 1 fsck repaired everything, 2 usage error (nothing
    written), 3 append condition failed, 4 problems remain, 8 operational error, 130 interrupted (Ctrl-C).
    """


def main() -> None:
    """Console entry point."""
    cli(prog_name="kroniko-ops")


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
