"""A pause of Python's cyclic garbage collector around bulk decoding.

Decoding a block of events allocates thousands of container objects that all survive (the
caller keeps them); the collector would scan them again and again as they age, which measured
as half the cost of a bulk read. They hold no reference cycles, so pausing the collector while a
block is decoded loses nothing: the next collection after the pause sees them once.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """Disable the collector for the ``with`` body, unless it is already off (then leave it so:
    an application that turned it off keeps it off)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
