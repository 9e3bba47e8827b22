"""Argument types shared by the commands."""

from __future__ import annotations

from typing import Any

import click

from ..postgres.url import display, is_url


class FileStore(click.Path):
    """A store folder, for the commands that work on file stores only: a PostgreSQL connection
    string is refused up front (exit 2, nothing written), naming it without its password."""

    name = "store folder"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(file_okay=kwargs.pop("file_okay", True), dir_okay=True, **kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Refuse a PostgreSQL store; take anything else as a path."""
        if isinstance(value, str) and is_url(value):
            name = ctx.command.name if ctx is not None and ctx.command is not None else "this command"
            self.fail(f"{display(value)} is a PostgreSQL store; {name} works on store folders only (read, append, "
                      "head, stats, fsck and torture also take PostgreSQL stores); nothing was written", param, ctx)
        return super().convert(value, param, ctx)
