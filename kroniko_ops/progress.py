"""Progress of long operations in events and bytes: tqdm bars on stderr, only on a terminal.

A :class:`Meter` counts one phase of an operation (fsck's walk, a backup's copy, a restore's
index build...) in events, with the bytes done beside them, and is advanced as work completes,
never ahead of it: a bar reaches 100% when its phase ends, and a phase that follows (restore's
index build, its fsck) gets a bar of its own. A meter that is not shown costs one attribute test
per call, and tqdm (20 ms to import) is imported only when one is shown.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def shown(progress: bool) -> bool:
    """Whether a bar asked for (``progress``) is drawn: only when stderr is a terminal."""
    return progress and sys.stderr.isatty()


class Meter:
    """One phase's progress. ``events`` is the phase's total in events (None: unknown) and
    ``unit`` what the bar counts: ``"ev"`` (events, bytes shown beside) or ``"B"`` (bytes,
    events shown beside; for copies whose byte total is known up front)."""

    def __init__(self, desc: str, events: int | None = None, *, nbytes: int | None = None, unit: str = "ev",
                 progress: bool = False) -> None:
        self.events = self.bytes = 0
        self.unit = unit
        self.bar: Any = None
        if shown(progress):
            from tqdm import tqdm

            total = nbytes if unit == "B" else events
            self.bar = tqdm(total=total or None, desc=desc, file=sys.stderr, unit=unit, unit_scale=unit == "B",
                            unit_divisor=1024 if unit == "B" else 1000, dynamic_ncols=True, leave=False)

    def add(self, events: int = 0, nbytes: int = 0) -> None:
        """Count work done."""
        self.to(self.events + events, self.bytes + nbytes)

    def to(self, events: int, nbytes: int | None = None) -> None:
        """Set the work done so far (it never goes back)."""
        if self.bar is None:
            self.events, self.bytes = events, nbytes if nbytes is not None else self.bytes
            return
        before = self.bytes if self.unit == "B" else self.events
        self.events, self.bytes = max(events, self.events), max(nbytes or 0, self.bytes)
        now = self.bytes if self.unit == "B" else self.events
        beside = f"{self.events} ev" if self.unit == "B" else _size(self.bytes) if self.bytes else ""
        if beside:
            self.bar.set_postfix_str(beside, refresh=False)
        if now > before:
            self.bar.update(now - before)

    def over(self, items: Iterable[T], weight: Callable[[T], tuple[int, int]]) -> Iterator[T]:
        """Yield ``items``, counting each one's ``(events, bytes)`` once the caller is done
        with it (when it asks for the next one, or the iteration ends)."""
        for item in items:
            yield item
            self.add(*weight(item))

    def close(self) -> None:
        """Take the bar off the terminal."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def progress(items: Iterable[T], total: int | None, desc: str, quiet: bool = False) -> Iterator[T]:
    """Iterate ``items`` (one event each) with a bar on stderr, unless ``quiet`` or stderr is
    not a terminal."""
    if quiet or not sys.stderr.isatty():  # a disabled tqdm still costs microseconds per item
        yield from items
        return
    with Meter(desc, total, progress=True) as meter:
        for item in items:
            yield item
            meter.add(1)
