"""The ceiling of any reader of stored events: how fast ``orjson`` alone parses the benchmark's
realistic events (about 530 bytes of nested JSON each) in arrays of 200, streamed (each array
dropped after use) or kept in one list, with Python's cyclic garbage collector on and off; then
the same arrays parsed and built into the store's events by its own builder
(``codec.decode_run``, as a read from a dense pack does after decompressing a block), and the
time a kept list of them takes to free.

A reader builds at least these objects; kept in a list, the collector scans them again and again
as they age. Compare its figures with the read rows of ``scripts/bench.py`` (realistic events).

    python scripts/parse_ceiling.py [N]
"""

from __future__ import annotations

import gc
import os
import sys
import time

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_packs  # the benchmark's own realistic events

from kroniko_ops.codec import decode_run


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    docs = []
    for i in range(n):
        e = bench_packs.realistic(i)
        docs.append(orjson.dumps({"data": e.data, "id": f"{i:036d}", "metadata": e.metadata, "tags": list(e.tags),
                                  "type": e.type}, option=orjson.OPT_SORT_KEYS))
    blocks = [b"[" + b",".join(docs[i:i + 200]) + b"]" for i in range(0, n, 200)]
    print(f"{n:,} events, {sum(map(len, docs)) / n:.0f} bytes each")
    gc.collect()
    for keep in (False, True):
        for collector in (True, False):
            kept: list[object] = []
            if not collector:
                gc.disable()
            t0 = time.perf_counter()
            for block in blocks:
                events = orjson.loads(block)
                if keep:
                    kept.extend(events)
            rate = n / (time.perf_counter() - t0)
            gc.enable()
            del kept
            gc.collect()
            print(f"{'kept in a list' if keep else 'streamed':15} collector {'on ' if collector else 'off'}: "
                  f"{rate:10,.0f} events/s")
    sizes = [docs[i:i + 200] for i in range(0, n, 200)]
    for keep in (False, True):
        kept = []
        t0 = time.perf_counter()
        for first, (bodies, block) in enumerate(zip(sizes, blocks, strict=True)):
            events = decode_run(1 + 200 * first, bodies, array=block)
            if keep:
                kept.extend(events)
        rate = n / (time.perf_counter() - t0)
        # Each block is built under a pause and little is allocated between blocks, so few
        # collections run in the loop: the first one after it scans most kept events at once,
        # cold. It is timed apart, and so is the free.
        t0 = time.perf_counter()
        gc.collect(0)
        young = time.perf_counter() - t0
        t0 = time.perf_counter()
        del kept
        freed = time.perf_counter() - t0
        gc.collect()
        print(f"{'kept in a list' if keep else 'streamed':15} as events    : {rate:10,.0f} events/s"
              + (f", then {young * 1e6 / n:.2f} us an event for the collection they put off and "
                 f"{freed * 1e6 / n:.2f} us to free them" if keep else ""))


if __name__ == "__main__":
    main()
