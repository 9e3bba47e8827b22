"""Progress bars for walks over a whole store: tqdm on stderr, only when stderr is a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None, desc: str, quiet: bool = False) -> Iterator[T]:
    """Iterate ``items`` with a tqdm bar on stderr, unless ``quiet`` or stderr is not a TTY."""
    disable = quiet or not sys.stderr.isatty()
    if disable:  # tqdm's disabled wrapper still costs microseconds per item on million-item walks
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, disable=disable, unit="ev",
                    dynamic_ncols=True, leave=False)
