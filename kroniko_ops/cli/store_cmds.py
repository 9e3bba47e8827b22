"""Commands over the engine: init, append, read, head, stats, demo."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

import click
import orjson

from ..errors import InvalidEvent
from ..model import AppendCondition, Event, Query, QueryItem
from ..ops.demo import run_demo
from ..postgres import open_store
from ..postgres.tools import stats_target
from . import cli
from .output import emit_json, json_option

# A folder, or a postgresql:// URL (docs/POSTGRES.md): the library tells them apart.
STORE = click.argument("store", type=click.Path(file_okay=True, dir_okay=True))


def _query(types: tuple[str, ...], tags: tuple[str, ...]) -> Query:
    """One item from ``--type``/``--tag`` options (types any-of, tags all-of); none: all."""
    return Query([QueryItem(types=types, tags=tags)]) if types or tags else Query.all()


def _event_json(e: Any) -> dict[str, Any]:
    return {"kind": "event", "position": e.position, "id": e.id, "type": e.type, "tags": list(e.tags),
            "data": e.data, "metadata": e.metadata}


@cli.command()
@STORE
@click.option("--max-event-bytes", type=click.IntRange(min=64, max=64 * 1024 * 1024), default=None,
              help="Largest event accepted, fixed in FORMAT (default 1 MiB).")
@click.option("--segment-bytes", type=click.IntRange(min=4096, max=1 << 30), default=None,
              help="Size at which the log rolls to a new segment, fixed in FORMAT (default 16 MiB).")
def init(store: str, max_event_bytes: int | None, segment_bytes: int | None) -> None:
    """Create an empty store in STORE (a new or empty folder, or a postgresql:// URL)."""
    with open_store(store, max_event_bytes=max_event_bytes, segment_bytes=segment_bytes) as s:
        click.echo(f"initialised {s.path} (head {s.head()})")



def _int64(text: str) -> int:
    # orjson would turn an integer past 64 bits into a float without a word: refuse it instead.
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise ValueError(f"integer {text} is outside the 64-bit range")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse_events(stream: IO[bytes]) -> list[Event]:
    """JSON lines ``{"type", "data", "tags", "metadata", "id"}`` into events (all or nothing)."""
    events = []
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line, parse_int=_int64, parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidEvent(f"line {n}: {exc}") from None
        except RecursionError:
            raise InvalidEvent(f"line {n}: JSON nested too deeply to be an event") from None
        if type(doc) is not dict:
            raise InvalidEvent(f"line {n}: expected a JSON object with a 'type'")
        unknown = set(doc) - {"type", "data", "tags", "metadata", "id"}
        if unknown or "type" not in doc:
            raise InvalidEvent(f"line {n}: needs 'type'; unknown fields {sorted(unknown)}")
        tags = doc.get("tags", [])
        if type(tags) is not list:
            raise InvalidEvent(f"line {n}: 'tags' must be a list of strings")
        events.append(Event(doc["type"], doc.get("data"), tuple(tags), doc.get("metadata"), doc.get("id")))
    return events


@cli.command()
@STORE
@click.option("--file", "-f", "source", type=click.File("rb"), default="-",
              help="JSON lines to append (default: stdin), one event per line, appended as one batch.")
@click.option("--fail-if-type", multiple=True, help="Condition: fail if an event of this type (any of) ...")
@click.option("--fail-if-tag", multiple=True, help="... carrying all these tags ...")
@click.option("--after", type=click.IntRange(min=0), default=None,
              help="... exists after this position (default: anywhere).")
@click.option("--no-fsync", is_flag=True, help="Skip fsync (bulk loads you can redo; never for real data).")
def append(store: str, source: IO[bytes], fail_if_type: tuple[str, ...], fail_if_tag: tuple[str, ...],
           after: int | None, no_fsync: bool) -> None:
    """Append JSON-lines events to STORE as one atomic batch; print the last position.

    Exit 3 when the condition matched an event committed after --after.
    """
    events = _parse_events(source)
    condition = None
    if fail_if_type or fail_if_tag:
        condition = AppendCondition(_query(fail_if_type, fail_if_tag), after)
    elif after is not None:
        raise click.UsageError("--after needs --fail-if-type or --fail-if-tag")
    with open_store(store, create=False, durable=not no_fsync) as s:
        click.echo(s.append(events, condition))



@cli.command()
@STORE
@click.option("--type", "types", multiple=True, help="Only events of this type (repeat: any of).")
@click.option("--tag", "tags", multiple=True, help="Only events carrying this tag (repeat: all of).")
@click.option("--start", type=click.IntRange(min=0), default=None, help="First position (inclusive).")
@click.option("--backwards", is_flag=True, help="Newest first.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many events.")
@json_option
def read(store: str, types: tuple[str, ...], tags: tuple[str, ...], start: int | None, backwards: bool,
         limit: int | None, as_json: bool) -> None:
    """Print the events of STORE that match (all by default)."""
    with open_store(store, create=False) as s:
        result = s.read(_query(types, tags), start=start, backwards=backwards, limit=limit)
        count = 0
        for e in result:
            count += 1
            if as_json:
                emit_json(_event_json(e))
            else:
                data = orjson.dumps(e.data).decode()
                click.echo(f"{e.position}\t{e.type}\t{','.join(e.tags)}\t{data}")
        if as_json:
            emit_json({"kind": "summary", "exit_code": 0, "head": result.head, "events": count})



@cli.command()
@STORE
def head(store: str) -> None:
    """Print the last committed position of STORE (0 when empty)."""
    with open_store(store, create=False) as s:
        click.echo(s.head())



@cli.command()
@STORE
@json_option
def stats(store: str, as_json: bool) -> None:
    """Counts and sizes: events in segments and packs, index, lost-found (like git count-objects -v);
    for a postgresql:// URL: events, batches, types, tag rows, table sizes."""
    report = stats_target(store)
    if as_json:
        emit_json({"kind": "stats", **report.as_dict()})
    else:
        for key, value in report.as_dict().items():
            if isinstance(value, list):  # one line each (the packs of a store)
                for item in getattr(report, key):
                    click.echo(f"{key[:-6] if key.endswith('_files') else key}: {item.text()}")
            else:
                click.echo(f"{key}: {value}")



@cli.command()
@click.argument("folder", type=click.Path(file_okay=False), default="kroniko-demo-store")
def demo(folder: str) -> None:
    """Build a sample shop store in FOLDER, run conditional appends and reads, say what happened."""
    for line in run_demo(folder):
        click.echo(line)
    sys.stdout.flush()

