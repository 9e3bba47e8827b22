"""Canonical JSON for events: validation, encoding, decoding and ids (format layer).

A record's body holds ``{"data", "id", "metadata", "tags", "type"}`` as orjson writes it with
sorted keys: UTF-8, no insignificant whitespace. Those exact bytes are what the log hashes.
"""

from __future__ import annotations

import gc
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson

from .errors import InvalidEvent, StoreCorrupted
from .model import Event, SequencedEvent

ID_RE = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
_SCALARS = (str, int, bool, type(None))
_VARIANT = "89ab"
_PAUSE_FROM = 32  # events decoded at once before pausing the collector pays for itself


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
    """Refuse anything that would not come back from JSON as the same Python value, and a
    value that contains itself (a walk that followed the cycle would never end)."""
    stack: list[tuple[Any, str, bool]] = [(value, where, False)]
    on_path: set[int] = set()  # the containers being walked: meeting one again is a cycle
    done: set[int] = set()  # containers walked whole: a value shared twice is checked once
    while stack:
        v, w, leaving = stack.pop()
        if leaving:
            on_path.discard(id(v))
            done.add(id(v))
            continue
        t = type(v)
        if t is float:
            if v != v or v in (float("inf"), float("-inf")):
                raise InvalidEvent(f"{w} is {v!r}: JSON has no NaN or Infinity")
        elif t is int:
            if not -(2**63) <= v < 2**64:
                raise InvalidEvent(f"{w} is an integer outside the 64-bit range JSON readers accept")
        elif t in _SCALARS:
            continue
        elif t is dict or t is list:
            if id(v) in on_path:
                raise InvalidEvent(f"{w} contains itself (a cycle of references): JSON cannot hold it")
            if id(v) in done:
                continue
            on_path.add(id(v))
            stack.append((v, w, True))
            if t is dict:
                for k, item in v.items():
                    if type(k) is not str:
                        raise InvalidEvent(f"{w} has a key {k!r} that is not a string")
                    stack.append((item, f"{w}.{k}", False))
            else:
                stack.extend((item, f"{w}[{i}]", False) for i, item in enumerate(v))
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


def decode_run(first: int, bodies: Sequence[bytes], where: str = "",
               commits: Sequence[tuple[int, int, bool]] | None = None, array: bytes | memoryview | None = None,
               positions: Sequence[int] | None = None) -> list[SequencedEvent]:
    """Decode the stored events of positions ``first, first + 1, ...`` (or ``positions``) in one
    JSON parse: of ``array`` when given (the bodies already joined into one JSON array, as a
    dense pack block holds them), else of the bodies joined. Any doubt falls back to decoding one
    by one, which names the bad position. ``commits`` (from
    :func:`~kroniko_ops.format.record.commits`) gives each event its batch's commit time and
    marks the batches' last events.

    The events are built without their dataclass ``__init__``, from each parsed document's five
    canonical keys, which are exactly :class:`Event`'s fields. The cyclic garbage collector is
    paused meanwhile (:mod:`.gcpause`): it would otherwise scan the new objects again and again,
    which costs more than building them.
    """
    n = len(bodies)
    if positions is None:
        positions = range(first, first + n)
    groups = commits or ((n - 1, 0, False),)
    paused = n >= _PAUSE_FROM and gc.isenabled()
    if paused:
        gc.disable()
    try:
        try:
            docs = orjson.loads(b"[" + b",".join(bodies) + b"]" if array is None else array)
        except orjson.JSONDecodeError:
            docs = None
        if docs is not None and len(docs) == n:
            out = _build(docs, positions, groups)
            if out is not None:
                return out
    finally:
        if paused:
            gc.enable()
    events = []
    upto, stamp, ends = groups[0]
    g = 1
    for k, raw in enumerate(bodies):
        try:
            event = decode_event(raw)
        except ValueError:
            raise StoreCorrupted(
                f"the event at position {positions[k]} does not parse; run: kroniko-ops fsck {where}"
            ) from None
        events.append(SequencedEvent(positions[k], event, stamp, ends and k == upto))
        if k == upto:
            upto, stamp, ends = groups[g] if g < len(groups) else (-1, 0, False)
            g += 1
    return events


_EVENT_SLOTS = tuple(Event.__dict__[name].__set__ for name in ("type", "data", "tags", "metadata", "id"))
_SEQ_SLOTS = tuple(SequencedEvent.__dict__[name].__set__ for name in ("position", "event", "commit_us", "batch_end"))


def _build(docs: list[Any], positions: Sequence[int], groups: Sequence[tuple[int, int, bool]]
           ) -> list[SequencedEvent] | None:
    """The events of parsed documents, or None at the first that is not a canonical event.

    The frozen classes' slots are filled through their member descriptors, as their ``__init__``
    would through ``object.__setattr__``, for about two thirds of the cost per field."""
    out: list[SequencedEvent] = []
    append, new = out.append, object.__new__
    event_cls, seq_cls = Event, SequencedEvent
    set_type, set_data, set_tags, set_metadata, set_id = _EVENT_SLOTS
    set_position, set_event, set_commit, set_end = _SEQ_SLOTS
    it = iter(groups)
    upto, stamp, ends = next(it)
    k = 0
    for pos, doc in zip(positions, docs):  # noqa: B905  (as many positions as documents)
        try:
            type_, tags = doc["type"], doc["tags"]
            if type_.__class__ is not str or tags.__class__ is not list or len(doc) != 5:
                return None
            event = new(event_cls)
            set_type(event, type_)
            set_data(event, doc["data"])
            set_tags(event, tuple(tags))
            set_metadata(event, doc["metadata"])
            set_id(event, doc["id"])
        except (KeyError, TypeError):
            return None
        seq = new(seq_cls)
        set_position(seq, pos)
        set_event(seq, event)
        set_commit(seq, stamp)
        if k == upto:
            set_end(seq, ends)
            upto, stamp, ends = next(it, (-1, 0, False))
        else:
            set_end(seq, False)
        append(seq)
        k += 1
    return out
