"""Child-process bodies for the fsck tests (importable by multiprocessing's spawn)."""

from __future__ import annotations

from kroniko_ops import Event, EventStore


def append_batches(path: str, batches: int) -> None:
    """Append ``batches`` batches of a few events, rolling small segments often."""
    with EventStore(path, durable=False, segment_bytes=4096) as store:
        for b in range(batches):
            store.append([Event("Live", {"b": b, "k": k, "pad": "z" * 100}, [f"live:{b % 3}"])
                          for k in range(1 + b % 3)])


def append_and_compact(path: str, batches: int, every: int) -> None:
    """Append ``batches`` batches (4 KiB segments, so they roll often) and compact the store
    every ``every`` batches, from this one process, as the issue's loop does."""
    from kroniko_ops import compact

    with EventStore(path, durable=False, segment_bytes=4096) as store:
        for b in range(batches):
            store.append([Event("Live", {"b": b, "k": k, "pad": "z" * 100}, [f"live:{b % 3}"],
                                {"causation_id": None}) for k in range(1 + b % 3)])
            if b % every == every - 1:
                compact(path, durable=False, prune_age=0)
