"""One legacy log line in, one kroniko-ops event out: tags, placeholders and the decisions taken.

Shared by :mod:`.migrate` (which appends the events) and :mod:`.check` (which only wants to know
whether an event would survive the trip).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..codec import ID_RE, encode_event, new_id
from ..errors import InvalidEvent
from ..model import Event, property_tag
from ..report import Report, safe_text
from .reader import LegacyEvent, LogLine, LogScan, show
from .rubyindex import ruby_float

PLACEHOLDER_TYPE = "kroniko.LegacyEventLost"
PLACEHOLDER_TAG = "kroniko:legacy-placeholder"
INLINE_RAW_LIMIT = 64 * 1024
_SCALARS = (str, int, float, bool, type(None))

# keep_aside(label, note, files) puts bytes into the target's lost-found/ and returns where.
KeepAside = Callable[[str, str, dict[str, bytes]], str]


def property_tags(data: Any) -> tuple[list[str], list[str], list[str]]:
    """``(tags, keys left untagged, keys whose tag differs from the gem's index name)`` for a
    legacy event's data.

    Each top-level property of an object whose value is a string, number, boolean or null
    becomes ``property_tag(key, value)`` (strings as they are, the rest as JSON text:
    ``qty:2``, ``plan:null``, ``vip:true``); arrays and objects give no tag. Data that is
    not an object gives no tags (the gem indexed only Hash data). The gem named its index
    files differently for null (``""``) and some floats in exponent form (``1.0e+20``).
    """
    if type(data) is not dict:
        return [], [], []
    tags: list[str] = []
    nested: list[str] = []
    renamed: list[str] = []
    for key, value in data.items():
        kind = type(value)
        if kind is str or kind is int:
            # property_tag's text for strings and integers (any size: the JSON text of an integer
            # is its digits), without its checks
            tags.append(f"{key}:{value}")
        elif isinstance(value, _SCALARS):
            tags.append(property_tag(key, value))
            if value is None or (kind is float and "e" in repr(value)
                                 and ruby_float(value) != tags[-1][len(key) + 1 :]):
                renamed.append(key)
        else:
            nested.append(key)
    return tags, nested, renamed


@dataclass
class Outcome:
    """What became of one log line: the event to append and the notes worth reporting as
    ``(code, fact, decision)``; ``placeholder`` is True when the event stands in for a lost one."""

    event: Event
    notes: list[tuple[str, str, str]] = field(default_factory=list)
    placeholder: bool = False
    untagged: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    encoded: tuple[str, bytes] = ("", b"")


def _raw_fields(raw: bytes, label: str, note: str, keep_aside: KeepAside) -> dict[str, Any]:
    out: dict[str, Any] = {"raw_size": len(raw), "raw_sha256": hashlib.sha256(raw).hexdigest()}
    if len(raw) > INLINE_RAW_LIMIT:
        out["lost_found"] = keep_aside(label, note, {"event.json": raw})
        return out
    try:
        out["raw_text"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        out["raw_base64"] = base64.b64encode(raw).decode("ascii")
    return out


def placeholder(reason: str, position: int, *, event_id: str | None = None, legacy_id: str | None = None,
                extra: dict[str, Any] | None = None) -> Event:
    """The event that keeps ``position`` for a legacy event that cannot be migrated as itself.

    Its type is ``kroniko.LegacyEventLost``, its tag ``kroniko:legacy-placeholder``, and its
    data says why (``reason``), which position and legacy id it stands for, and carries whatever
    was left of it (see docs/LEGACY.md).
    """
    if legacy_id is not None:
        legacy_id = safe_text(legacy_id)
    data: dict[str, Any] = {"reason": reason, "position": position, "legacy_id": legacy_id}
    if legacy_id is not None:
        data["legacy_path"] = f"events/{legacy_id}.json"
    data.update(extra or {})
    eid = event_id if event_id is not None and ID_RE.match(event_id) else new_id()
    return Event(PLACEHOLDER_TYPE, data, (PLACEHOLDER_TAG,), None, eid)


def utf8_report(report: Report) -> Report:
    """Make every text of ``report`` valid UTF-8 (names read from legacy files may hold bytes that
    are not; JSON output cannot carry them): such bytes become ``\\xNN``."""
    report.path = safe_text(report.path)
    for f in report.findings:
        f.path, f.message = safe_text(f.path), safe_text(f.message)
    report.figures = {k: safe_text(v) if isinstance(v, str) else v for k, v in report.figures.items()}
    return report


def wants_event(line: LogLine, scan: LogScan) -> bool:
    """Whether :func:`convert_line` needs the event file of ``line`` (not for a repeated id)."""
    return line.event_id is not None and line.position not in scan.duplicates


def convert_line(line: LogLine, ev: LegacyEvent | None, scan: LogScan, keep_aside: KeepAside,
                 max_event_bytes: int) -> Outcome:
    """Decide what the new store holds at ``line.position``, given ``ev``, the event read
    for it when :func:`wants_event`. The outcome carries the event's canonical encoding
    (:func:`~kroniko_ops.codec.encode_event`)."""
    outcome = _convert(line, ev, scan, keep_aside, max_event_bytes)
    if not outcome.encoded[0]:
        outcome.encoded = encode_event(outcome.event, max_event_bytes)
    return outcome


def _convert(line: LogLine, ev: LegacyEvent | None, scan: LogScan, keep_aside: KeepAside,
             max_event_bytes: int) -> Outcome:
    pos = line.position
    if line.event_id is None:
        event = placeholder("log-bad-line", pos, extra={"log_line": show(line.text, 4096)})
        what = "is blank" if line.kind == "blank" else f"names no event ({show(line.text)!r})"
        return Outcome(event, [("log-bad-line", f"log line {pos} {what}", "a placeholder keeps the position")],
                       placeholder=True)
    eid = line.event_id
    notes: list[tuple[str, str, str]] = []
    if line.kind == "glued":
        notes.append(("legacy-log-glued-line",
                      f"log line {pos} is torn bytes followed by the id {eid} ({show(line.text)!r}), left by "
                      "a torn line or by unlocked appends that interleaved",
                      "the id was kept, the torn bytes belonged to a write that never finished"))
    first = scan.duplicates.get(pos)
    if first is not None:
        event = placeholder("duplicate-id", pos, legacy_id=eid, extra={"duplicate_of": first})
        notes.append(("log-duplicate-id", f"log line {pos} repeats the id {eid} of position {first}",
                      f"the event stays at {first}, a placeholder keeps position {pos}"))
        return Outcome(event, notes, placeholder=True)
    assert ev is not None, "convert_line needs the event of a line that names one"
    if ev.problem == "missing":
        event = placeholder("missing-event", pos, event_id=eid, legacy_id=eid)
        notes.append(("missing-event", f"events/{eid}.json named by log line {pos} does not exist",
                      "a placeholder keeps the position and the id"))
        return Outcome(event, notes, placeholder=True)
    if ev.problem is not None:
        note = f"The event file events/{eid}.json named by legacy log line {pos} is {ev.problem}."
        extra = {"error": ev.problem, **(_raw_fields(ev.raw, "legacy-unreadable", note, keep_aside) if ev.raw
                                      is not None else {})}
        event = placeholder("event-unreadable", pos, event_id=eid, legacy_id=eid, extra=extra)
        notes.append(("event-unreadable", f"events/{eid}.json (log line {pos}) is {ev.problem}",
                      "a placeholder keeps the position, the id and the bytes"))
        return Outcome(event, notes, placeholder=True)
    tags, untagged, renamed = property_tags(ev.data)
    metadata: dict[str, Any] | None = None
    new = eid
    if not ID_RE.match(eid):
        new = new_id()
        metadata = {"legacy_id": safe_text(eid)}
        notes.append(("legacy-id-unportable", f"the id {show(eid)!r} (log line {pos}) is not a valid kroniko-ops id",
                      f"the event got the id {new}, metadata.legacy_id keeps the old one"))
    if ev.content_id != eid:
        metadata = {**(metadata or {}), "legacy_content_id": ev.content_id}
        said = "has no id" if ev.content_id is None else f"says its id is {show(str(ev.content_id))!r}"
        notes.append(("event-id-mismatch", f"events/{eid}.json (log line {pos}) {said}",
                      "the log's id was kept, metadata.legacy_content_id keeps what the file says"))
    event = Event(ev.type, ev.data, tuple(tags), metadata, new)
    try:
        encoded = encode_event(event, max_event_bytes)
    except InvalidEvent as exc:
        note = f"events/{eid}.json (legacy log line {pos}) cannot be stored in a kroniko-ops store: {exc}"
        assert ev.raw is not None
        extra = {"error": str(exc), **_raw_fields(ev.raw, "legacy-unportable", note, keep_aside)}
        notes.append(("legacy-event-unportable", f"events/{eid}.json (log line {pos}) cannot be stored in "
                      f"a kroniko-ops store ({exc})", "a placeholder keeps the position, the id and the bytes"))
        return Outcome(placeholder("event-unportable", pos, event_id=new, legacy_id=eid, extra=extra), notes,
                       placeholder=True)
    return Outcome(event, notes, untagged=untagged, renamed=renamed, encoded=encoded)
