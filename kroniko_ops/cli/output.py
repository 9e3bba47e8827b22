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
