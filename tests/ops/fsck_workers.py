"""Child-process bodies for the fsck / recover tests (importable by ``multiprocessing`` spawn)."""

from __future__ import annotations

import time

from kroniko_ops import Event, EventStore


def append_batches(path: str, batches: int, size: int, durable: bool, pause: float = 0.0) -> None:
    """Append ``batches`` batches of ``size`` events (types and tags varied), pausing between."""
    with EventStore(path, durable=durable) as store:
        for b in range(batches):
            store.append([Event(f"T{(b + k) % 3}", {"b": b, "k": k}, [f"cart:{b % 7}", f"k:{k}"])
                          for k in range(size)])
            if pause:
                time.sleep(pause)


def append_forever(path: str, durable: bool) -> None:
    """Append small batches until killed."""
    with EventStore(path, durable=durable) as store:
        b = 0
        while True:
            store.append([Event("T", {"b": b, "k": k}, [f"cart:{b % 5}"]) for k in range(1 + b % 4)])
            b += 1
