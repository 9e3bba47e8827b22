"""Commands over the engine: init, append, read, head, stats, demo."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

import click
import orjson

from ..errors import InvalidArgument, InvalidEvent
from ..layout import init_refs
from ..model import AppendCondition, Event, Query, QueryItem
from ..ops.demo import run_demo
from ..ops.postgres.tools import stats_target
from ..postgres import is_url, open_store
from . import cli
from .contract import Run, command
from .output import emit_json

# A folder, or a postgresql:// URL (docs/POSTGRES.md): the library tells them apart.
STORE = click.argument("store", type=click.Path(file_okay=True, dir_okay=True))


def _query(types: tuple[str, ...], tags: tuple[str, ...]) -> Query:
    """One item from ``--type``/``--tag`` options (types any-of, tags all-of); none: all."""
    return Query([QueryItem(types=types, tags=tags)]) if types or tags else Query.all()


def _event_json(e: Any) -> dict[str, Any]:
    """An event as ``read --json`` prints it: with its batch's commit time (``committed_at``, UTC
    ISO 8601 with microseconds, null for records written before commit times were kept) and
    whether it ends its batch (a position ``restore --to-position`` accepts)."""
    at = e.committed_at
    return {"kind": "event", "position": e.position, "id": e.id, "type": e.type, "tags": list(e.tags),
            "data": e.data, "metadata": e.metadata, "batch_end": e.batch_end, "commit_us": e.commit_us or None,
            "committed_at": at.isoformat(timespec="microseconds").replace("+00:00", "Z") if at else None}


@command(cli, "init", path="store", examples_=(
    "kroniko-ops init /srv/events",
    "kroniko-ops init /srv/events --segment-bytes 67108864 --max-event-bytes 4194304",
    "kroniko-ops init 'postgresql://app@db.internal/shop'"))
@STORE
@click.option("--max-event-bytes", type=click.IntRange(min=64, max=64 * 1024 * 1024), default=None,
              help="Largest event accepted, fixed in FORMAT (default 1 MiB).")
@click.option("--segment-bytes", type=click.IntRange(min=4096, max=1 << 30), default=None,
              help="Size at which the log rolls to a new segment, fixed in FORMAT (default 16 MiB).")
@click.option("--ref-field", "ref_fields", multiple=True, metavar="PATH",
              help="A field that names another event's id (e.g. metadata.correlation_id, data.order_event_id), "
              "recorded in FORMAT: a plain fsck of this store checks it; repeatable.")
def init(run: Run, store: str, max_event_bytes: int | None, segment_bytes: int | None,
         ref_fields: tuple[str, ...]) -> None:
    """Create an empty store in STORE (a new or empty folder, or a postgresql:// URL)."""
    if ref_fields and is_url(store):
        raise InvalidArgument("--ref-field is recorded in a file store's FORMAT; for a PostgreSQL store pass "
                              "--ref-field to fsck; nothing was written")
    if not is_url(store):  # creates it, or checks that the existing one records these options
        init_refs(store, ref_fields, max_event_bytes, segment_bytes)
    with open_store(store, max_event_bytes=max_event_bytes, segment_bytes=segment_bytes) as s:
        head = s.head()
        if not run.as_json:
            click.echo(f"initialised {s.path} (head {head})")
    run.done(0, head=head)



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
        if unknown:
            raise InvalidEvent(f"line {n}: unknown field(s) {', '.join(map(repr, sorted(unknown)))}; an event has "
                               "'type' and optionally 'data', 'tags', 'metadata', 'id'")
        if "type" not in doc:
            raise InvalidEvent(f"line {n}: the event has no 'type'")
        tags = doc.get("tags", [])
        if type(tags) is not list:
            raise InvalidEvent(f"line {n}: 'tags' must be a list of strings")
        events.append(Event(doc["type"], doc.get("data"), tuple(tags), doc.get("metadata"), doc.get("id")))
    return events


@command(cli, "append", path="store", examples_=(
    "echo '{\"type\": \"CartCreated\", \"tags\": [\"cart:7\"]}' | kroniko-ops append /srv/events",
    "kroniko-ops append /srv/events -f batch.jsonl --fail-if-tag cart:7 --after 41 --json"))
@STORE
@click.option("--file", "-f", "source", type=click.File("rb"), default="-",
              help="JSON lines to append (default: stdin), one event per line, appended as one batch.")
@click.option("--fail-if-type", multiple=True, help="Condition: fail if an event of this type (any of) ...")
@click.option("--fail-if-tag", multiple=True, help="... carrying all these tags ...")
@click.option("--after", type=click.IntRange(min=0), default=None,
              help="... exists after this position (default: anywhere).")
@click.option("--no-fsync", is_flag=True, help="Skip fsync (bulk loads you can redo; never for real data).")
def append(run: Run, store: str, source: IO[bytes], fail_if_type: tuple[str, ...], fail_if_tag: tuple[str, ...],
           after: int | None, no_fsync: bool) -> None:
    """Append JSON-lines events to STORE as one atomic batch; print the last position.

    Exit 3 when the condition matched an event committed after --after (the summary's
    ``position`` is the first conflicting one).
    """
    events = _parse_events(source)
    condition = None
    if fail_if_type or fail_if_tag:
        condition = AppendCondition(_query(fail_if_type, fail_if_tag), after)
    elif after is not None:
        raise click.UsageError("--after needs --fail-if-type or --fail-if-tag")
    with open_store(store, create=False, durable=not no_fsync) as s:
        head = s.append(events, condition)
    if not run.as_json:
        click.echo(head)
    run.done(0, head=head, events=len(events))



@command(cli, "read", path="store", examples_=(
    "kroniko-ops read /srv/events --tag cart:7",
    "kroniko-ops read /srv/events --start 1000 --limit 5 --json",
    "kroniko-ops read /srv/events --backwards --limit 1 --json"))
@STORE
@click.option("--type", "types", multiple=True, help="Only events of this type (repeat: any of).")
@click.option("--tag", "tags", multiple=True, help="Only events carrying this tag (repeat: all of).")
@click.option("--start", type=click.IntRange(min=0), default=None, help="First position (inclusive).")
@click.option("--backwards", is_flag=True, help="Newest first.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many events.")
def read(run: Run, store: str, types: tuple[str, ...], tags: tuple[str, ...], start: int | None, backwards: bool,
         limit: int | None) -> None:
    """Print the events of STORE that match (all by default).

    With --json each event carries its batch's commit time (committed_at) and batch_end: true on
    the last event of its batch, the positions restore --to-position accepts.
    """
    as_json = run.as_json
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
    run.done(0, head=result.head, events=count)



@command(cli, "head", path="store", examples_=(
    "kroniko-ops head /srv/events",
    "kroniko-ops head /srv/events --json | jq .head"))
@STORE
def head(run: Run, store: str) -> None:
    """Print the last committed position of STORE (0 when empty)."""
    with open_store(store, create=False) as s:
        position = s.head()
    if not run.as_json:
        click.echo(position)
    run.done(0, head=position)



@command(cli, "stats", path="store", examples_=(
    "kroniko-ops stats /srv/events",
    "kroniko-ops stats /srv/events --json | jq -c 'select(.kind == \"stats\")'"))
@STORE
def stats(run: Run, store: str) -> None:
    """Counts and sizes: events in segments and packs, index, lost-found (like git count-objects -v);
    for a postgresql:// URL: events, batches, types, tag rows, table sizes."""
    report = stats_target(store)
    if run.as_json:
        emit_json({"kind": "stats", **report.as_dict()})
    else:
        for key, value in report.as_dict().items():
            if isinstance(value, list):  # one line each (the packs of a store)
                for item in getattr(report, key):
                    click.echo(f"{key[:-6] if key.endswith('_files') else key}: {item.text()}")
            else:
                click.echo(f"{key}: {value}")
    run.done(0, head=report.head)



@command(cli, "demo", path="folder", examples_=(
    "kroniko-ops demo",
    "kroniko-ops demo /tmp/shop --json"))
@click.argument("folder", type=click.Path(file_okay=False), default="kroniko-demo-store")
def demo(run: Run, folder: str) -> None:
    """Build a sample shop store in FOLDER, run conditional appends and reads, say what happened."""
    for line in run_demo(folder):
        if run.as_json:
            emit_json({"kind": "message", "text": line})
        elif not run.quiet:
            click.echo(line)
    sys.stdout.flush()
    run.done(0)

