"""Point in time by the clock: ``restore --to-time TIMESTAMP`` finds the last batch committed at
or before TIMESTAMP.

Every record carries its batch's commit time (``docs/FORMAT.md``), and commit times never
decrease along the log, so the cut is the last commit mark whose time is at or before the
timestamp. Records written before commit times were recorded carry none (0); they all come
before the first record that does, so a timestamp earlier than every known commit time cannot
tell how many of them to keep: that is refused (use ``--to-position``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from ...errors import InvalidArgument
from ...format import record as recfmt

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
T = TypeVar("T")


def parse_time(text: str | datetime) -> int:
    """Microseconds since the epoch of an ISO 8601 timestamp with ``Z`` or an offset
    (``2026-12-06T02:15:00Z``, ``2026-12-06T03:15:00.250+01:00``); raises InvalidArgument
    (exit 2) for anything else, a timestamp without a zone above all."""
    if isinstance(text, datetime):
        when = text
    else:
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            when = None
        if when is None or "T" not in text.upper():
            raise InvalidArgument(f"--to-time {text!r}: expected an ISO 8601 timestamp such as "
                                  "2026-12-06T02:15:00Z or 2026-12-06T03:15:00.5+01:00; nothing was written")
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidArgument(f"--to-time {text!s}: give the time zone (Z for UTC, or an offset such as +01:00); "
                              "nothing was written")
    return (when - _EPOCH) // _ONE_US


def format_time(us: int) -> str:
    """``us`` microseconds since the epoch as ISO 8601 UTC (``...Z``)."""
    return (_EPOCH + us * _ONE_US).isoformat().replace("+00:00", "Z")


def position_at(parts: Iterable[T], records: Callable[[T], Iterator[recfmt.Record]], when_us: int) -> int:
    """The last position ending a batch committed at or before ``when_us``, reading the records
    of ``parts`` (in log order) through ``records(part)``; 0 when the first batch was committed
    later. Raises InvalidArgument when records without a commit time make the answer unknown."""
    best = 0
    untimed = 0  # the last batch end written before commit times were recorded
    for part in parts:
        for rec in records(part):
            if not rec.commit:
                continue
            if rec.time == 0:
                untimed = rec.position
            elif rec.time <= when_us:
                best = rec.position
            else:
                return _answer(best, untimed, when_us)
    return _answer(best, untimed, when_us)


def _answer(best: int, untimed: int, when_us: int) -> int:
    if best == 0 and untimed:
        raise InvalidArgument(
            f"positions 1..{untimed} were written before commit times were recorded, and no later batch was "
            f"committed at or before {format_time(when_us)}: the time cannot tell where to stop; use --to-position "
            "N (a batch end); nothing was written")
    return best
