"""Canonical JSON for events: validation, encoding, decoding and ids (format layer).

A record's body holds ``{"data", "id", "metadata", "tags", "type"}`` as orjson writes it with
sorted keys: UTF-8, no insignificant whitespace. Those exact bytes are what the log hashes.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

import orjson

from .errors import InvalidEvent, StoreCorrupted
from .model import Event, SequencedEvent

ID_RE = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
_SCALARS = (str, int, bool, type(None))
_VARIANT = "89ab"


_POOL_BYTES = 10 * 409  # random bytes drawn at once: one getrandom per 409 ids, not one per id
_pool = b""
_taken = 0
_pool_lock = threading.Lock()  # two threads must never take the same bytes


def _reset_pool() -> None:
    global _pool, _taken, _pool_lock
    _pool, _taken, _pool_lock = b"", 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    # A forked child must not hand out the random bytes its parent will also use.
    os.register_at_fork(after_in_child=_reset_pool)


def new_id() -> str:
    """A fresh id shaped like a UUID version 7: 36 characters, the first 48 bits the time in
    milliseconds and the other 74 random. Ids made one after the other sort together, so the
    index's id table grows at its end instead of touching a random page per event."""
    return new_ids(1)[0]


def new_ids(n: int) -> list[str]:
    """``n`` fresh ids (see :func:`new_id`), drawn together: one clock read, one slice of the
    random pool."""
    global _pool, _taken
    need = 10 * n
    with _pool_lock:
        if _taken + need > len(_pool):
            _pool, _taken = os.urandom(max(_POOL_BYTES, need)), 0
        rnd = _pool[_taken:_taken + need].hex()
        _taken += need
    ms = (time.time_ns() // 1_000_000).to_bytes(6, "big").hex()
    head = f"{ms[:8]}-{ms[8:12]}-7"
    out = []
    for k in range(0, 20 * n, 20):
        r = rnd[k:k + 20]
        out.append(f"{head}{r[1:4]}-{_VARIANT[int(r[4], 16) & 3]}{r[5:8]}-{r[8:20]}")
    return out


def check_id(event_id: object) -> str:
    """Return ``event_id`` if it is a valid id, else raise :class:`InvalidEvent`."""
    if not isinstance(event_id, str) or not ID_RE.match(event_id):
        raise InvalidEvent(
            f"invalid event id {event_id!r}: use 1-64 characters of A-Z a-z 0-9 . _ -"
        )
    return event_id


def _check_json(value: Any, where: str) -> None:
    """Refuse anything that would not come back from JSON as the same Python value."""
    stack = [(value, where)]
    while stack:
        v, w = stack.pop()
        t = type(v)
        if t is float:
            if v != v or v in (float("inf"), float("-inf")):
                raise InvalidEvent(f"{w} is {v!r}: JSON has no NaN or Infinity")
        elif t is int:
            if not -(2**63) <= v < 2**64:
                raise InvalidEvent(f"{w} is an integer outside the 64-bit range JSON readers accept")
        elif t in _SCALARS:
            continue
        elif t is dict:
            for k, item in v.items():
                if type(k) is not str:
                    raise InvalidEvent(f"{w} has a key {k!r} that is not a string")
                stack.append((item, f"{w}.{k}"))
        elif t is list:
            stack.extend((item, f"{w}[{i}]") for i, item in enumerate(v))
        else:
            raise InvalidEvent(
                f"{w} is a {t.__name__}, which is not JSON "
                "(use dict, list, str, int, float, bool or None)"
            )


def encode_event(event: Event, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> tuple[str, bytes]:
    """Validate ``event`` and return its id (generated if absent) and canonical bytes."""
    if not isinstance(event, Event):
        raise InvalidEvent(f"expected an Event, got {type(event).__name__}")
    if not isinstance(event.type, str) or not event.type:
        raise InvalidEvent(f"event type must be a non-empty string, got {event.type!r}")
    tags = event.tags
    if isinstance(tags, str) or not isinstance(tags, (tuple, list)):
        raise InvalidEvent(f"event tags must be a list of strings, got {tags!r}")
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidEvent(f"event tag {tag!r} is a {type(tag).__name__}, not a string")
    if event.metadata is not None and type(event.metadata) is not dict:
        raise InvalidEvent("event metadata must be a dict or None")
    event_id = new_id() if event.id is None else check_id(event.id)
    doc = {
        "data": event.data,
        "id": event_id,
        "metadata": event.metadata,
        "tags": list(tags),
        "type": event.type,
    }
    try:
        raw = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        _check_json(event.data, "data")
        _check_json(event.metadata, "metadata")
        raise InvalidEvent(f"event {event_id} cannot be written as JSON: {exc}") from None
    # The bytes must read back as the very values given: orjson writes NaN as null and a tuple
    # or a datetime as something else. One parse and a C-level comparison prove it for the
    # common case; the walk that names the bad value runs only when they differ.
    back = orjson.loads(raw)
    if back["data"] != event.data or back["metadata"] != event.metadata:
        _check_json(event.data, "data")
        _check_json(event.metadata, "metadata")
        raise InvalidEvent(f"event {event_id} does not read back from JSON as the same value")
    if len(raw) > max_bytes:
        raise InvalidEvent(
            f"event {event_id} is {len(raw)} bytes, over the store's limit of {max_bytes}; "
            "store large payloads elsewhere and reference them"
        )
    # orjson's bytes keep its whole growth buffer (4 KiB for a tiny event, several times a big
    # one's size): a right-sized copy keeps a batch's memory near its bytes.
    return event_id, bytes(memoryview(raw))


def encode_batch(events: list[Event], max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> list[tuple[str, bytes]]:
    """:func:`encode_event` for a whole batch, with per-batch calls: the missing ids drawn at
    once and one JSON read-back for every event (the event-by-event path runs only to name a
    bad event)."""
    fresh = iter(new_ids(sum(1 for e in events if type(e) is Event and e.id is None)))
    dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
    out: list[tuple[str, bytes]] = []
    for event in events:
        if type(event) is not Event or type(event.type) is not str or not event.type or (
                type(event.tags) not in (tuple, list)) or any(type(t) is not str for t in event.tags) or (
                event.metadata is not None and type(event.metadata) is not dict):
            out.append(encode_event(event, max_bytes))  # raises, naming what is wrong
            continue
        event_id = next(fresh) if event.id is None else check_id(event.id)
        try:
            raw = dumps({"data": event.data, "id": event_id, "metadata": event.metadata, "tags": list(event.tags),
                         "type": event.type}, option=sort)
        except (TypeError, orjson.JSONEncodeError):
            out.append(encode_event(event, max_bytes))
            continue
        if len(raw) > max_bytes:
            out.append(encode_event(event, max_bytes))
            continue
        out.append((event_id, bytes(memoryview(raw))))
    back = orjson.loads(b"[" + b",".join([raw for _, raw in out]) + b"]")
    if [d["data"] for d in back] != [e.data for e in events] or (
            [d["metadata"] for d in back] != [e.metadata for e in events]):
        for event in events:
            encode_event(event, max_bytes)
    return out


def decode_event(raw: bytes) -> Event:
    """Parse an event file's bytes. Raises ``ValueError`` when they are not a valid event."""
    doc = orjson.loads(raw)
    if type(doc) is not dict or not isinstance(doc.get("type"), str) or "id" not in doc:
        raise ValueError("not an event object")
    tags = doc.get("tags", [])
    if type(tags) is not list:
        raise ValueError("tags is not a list")
    return Event(doc["type"], doc.get("data"), tuple(tags), doc.get("metadata"), doc["id"])


def decode_run(first: int, bodies: list[bytes], where: str = "",
               commits: list[tuple[int, int, bool]] | None = None) -> list[SequencedEvent]:
    """Decode the stored events of positions ``first, first + 1, ...`` in one JSON parse (their
    canonical bytes joined into an array). Any doubt falls back to decoding one by one, which
    names the bad position. ``commits`` (from :func:`~kroniko_ops.format.record.commits`) gives
    each event its batch's commit time and marks the batches' last events.

    The events are built without their dataclass ``__init__`` (a third of the cost of a bulk
    read): the fields are exactly the ones :func:`decode_event` passes, checked here.
    """
    groups = iter(commits or ((len(bodies) - 1, 0, False),))
    try:
        docs = orjson.loads(b"[" + b",".join(bodies) + b"]")
    except orjson.JSONDecodeError:
        docs = None
    if docs is not None and len(docs) == len(bodies):
        out: list[SequencedEvent] = []
        append, new, pos = out.append, object.__new__, first
        upto, stamp, ends = next(groups)
        upto += first
        for doc in docs:
            try:
                tags = doc["tags"]
                if doc["type"].__class__ is not str or tags.__class__ is not list or len(doc) != 5:
                    break
            except (KeyError, TypeError):
                break
            # The five canonical keys are exactly Event's fields: copy them in one C call.
            event = new(Event)
            fields = event.__dict__
            fields.update(doc)
            fields["tags"] = tuple(tags)
            seq = new(SequencedEvent)
            if pos == upto:
                seq.__dict__.update(position=pos, event=event, commit_us=stamp, batch_end=ends)
                upto, stamp, ends = next(groups, (-1, 0, False))
                upto += first
            else:
                seq.__dict__.update(position=pos, event=event, commit_us=stamp, batch_end=False)
            append(seq)
            pos += 1
        else:
            return out
    events = []
    groups = iter(commits or ((len(bodies) - 1, 0, False),))
    upto, stamp, ends = next(groups)
    for k, raw in enumerate(bodies):
        try:
            event = decode_event(raw)
        except ValueError:
            raise StoreCorrupted(
                f"the event at position {first + k} does not parse; run: kroniko-ops fsck {where}"
            ) from None
        events.append(SequencedEvent(first + k, event, stamp, ends and k == upto))
        if k == upto:
            upto, stamp, ends = next(groups, (-1, 0, False))
    return events
