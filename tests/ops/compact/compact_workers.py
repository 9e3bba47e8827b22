"""Child processes of the online compaction test: appenders and readers that check what they see."""

from __future__ import annotations

import os
import random
import traceback
from pathlib import Path

import orjson

from kroniko_ops import Event, EventStore, Query, QueryItem


def expected_event(worker: int, n: int) -> Event:
    """The event appender ``worker`` writes as its ``n``-th: its content follows from its id."""
    return Event("W", {"w": worker, "n": n, "pad": "x" * (n % 37)}, [f"w:{worker}", f"m:{n % 5}"],
                 {"seq": n} if n % 3 == 0 else None, f"w{worker}-{n}")


def appender(path: str, worker: int, count: int, out: str) -> None:
    """Append ``count`` events in small batches; write ``[[id, position], ...]`` to ``out``."""
    rng = random.Random(worker)
    done: list[tuple[str, int]] = []
    with EventStore(path, durable=False) as store:
        n = 0
        while n < count:
            batch = [expected_event(worker, k) for k in range(n, min(count, n + rng.randint(1, 5)))]
            last = store.append(batch)
            done += [(e.id, last - len(batch) + 1 + k) for k, e in enumerate(batch)]  # type: ignore[misc]
            n += len(batch)
    Path(out).write_bytes(orjson.dumps(done))


def _check(e: object) -> None:
    worker, n = (int(x) for x in e.id[1:].split("-"))  # type: ignore[attr-defined]
    if e.event != expected_event(worker, n):  # type: ignore[attr-defined]
        raise AssertionError(f"position {e.position} holds {e.event!r}")  # type: ignore[attr-defined]


def reader(path: str, stop: str, out: str) -> None:
    """Read in every way until ``stop`` exists; write the number of reads or the first error."""
    rng = random.Random(os.getpid())
    reads = 0
    try:
        with EventStore(path, create=False) as store:
            while not os.path.exists(stop):
                kind = reads % 4
                if kind == 0:
                    result = store.read()
                    got = list(result)
                    if [e.position for e in got] != list(range(1, result.head + 1)):
                        raise AssertionError("a read of all events is not 1..head")
                elif kind == 1:
                    worker = rng.randrange(2)
                    got = list(store.read(Query([QueryItem(tags=[f"w:{worker}"])])))
                    ns = [int(e.id.split("-")[1]) for e in got]
                    if ns != list(range(len(ns))):
                        raise AssertionError(f"worker {worker}'s events are not 0..n in order: {ns[:20]}")
                elif kind == 2:
                    result = store.read(backwards=True, limit=rng.randint(1, 50))
                    got = list(result)
                    pos = [e.position for e in got]
                    if pos != list(range(result.head, result.head - len(pos), -1)):
                        raise AssertionError(f"a backwards read from head {result.head} gave {pos}")
                else:
                    head = store.head()
                    got = list(store.read(start=rng.randint(1, max(1, head)), limit=rng.randint(1, 300)))
                for e in got:
                    _check(e)
                reads += 1
        Path(out).write_bytes(orjson.dumps({"reads": reads}))
    except BaseException:
        Path(out).write_bytes(orjson.dumps({"reads": reads, "error": traceback.format_exc()}))
