"""Pack and read-path workloads for ``scripts/bench.py`` (issue 19): the same events read from
sealed segments and from packs, streamed and kept in a list; pack bytes; compaction; fsck over
both; one tag's events; and entity reads, the DCB decision and a category's first events at
growing store sizes, before and after compaction, on realistic events.

Two sets of events: the benchmark's own (``bench_engine.payload``, about 60 bytes of data) and
realistic ones (nested data and metadata of about 500 bytes of JSON; an ``order:<k>`` entity tag
per about 10 events, an order's events spread over 10,000 positions as orders live a while, and
one of 50 ``category:<c>`` tags). Rates are given in wall time and in CPU time (the process's
own, children included for fsck): the machine may be shared, and CPU time is steadier there.

Not a benchmark of its own: ``scripts/bench.py`` imports it by name.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

from bench_engine import TYPE, payload
from bench_stores import in_child

import kroniko_ops
from kroniko_ops import AppendCondition, Event, EventStore, Query, QueryItem

WINDOW = 1000  # orders alive at once: each gets an event every WINDOW positions, 10 in all
CATEGORIES = 50
TYPES = ("OrderPlaced", "ItemAdded", "ItemRemoved", "PaymentCaptured", "OrderShipped", "AddressChanged")
NAMES = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov")
CITIES = ("Berlin", "Paris", "Lisbon", "Oslo", "Vienna")


def order_of(i: int) -> int:
    """The order (entity) of the i-th realistic event: WINDOW orders interleaved, 10 events each."""
    return (i // (WINDOW * 10)) * WINDOW + i % WINDOW


def realistic(i: int) -> Event:
    """The i-th realistic event (deterministic)."""
    rnd = random.Random(i)
    order = order_of(i)
    customer = {"id": f"cust-{rnd.randrange(10**6)}", "name": rnd.choice(NAMES),
                "email": f"u{rnd.randrange(10**6)}@example.com",
                "address": {"street": f"{rnd.randrange(999)} Main Street", "city": rnd.choice(CITIES),
                            "zip": f"{rnd.randrange(99999):05d}"}}
    lines = [{"sku": f"SKU-{rnd.randrange(10**5)}", "qty": rnd.randrange(1, 5), "price_cents": rnd.randrange(99, 99999)}
             for _ in range(rnd.randrange(1, 4))]
    data = {"order_id": f"order-{order}", "customer": customer, "lines": lines, "currency": "EUR",
            "total_cents": rnd.randrange(100, 10**6)}
    metadata = {"request_id": f"req-{rnd.getrandbits(64):016x}", "actor": f"user:{rnd.randrange(1000)}",
                "user_agent": "shop-web/4.2.1", "schema": 3}
    return Event(rnd.choice(TYPES), data, [f"order:{order}", f"category:{i % CATEGORIES}"], metadata)


def small(i: int, n: int) -> Event:
    """The i-th of ``n`` benchmark events (the tag 'hot' on 100 evenly spread ones, as in bench_stores)."""
    tags = [f"cart:{i % 100}", "hot"] if i % max(1, n // 100) == 0 and i // max(1, n // 100) < 100 else \
        [f"cart:{i % 100}"]
    return Event(TYPE, payload(i), tags)


KINDS: dict[str, Callable[[int, int], Event]] = {"bench": small, "realistic": lambda i, _n: realistic(i)}


def build(path: str, kind: str, n: int) -> None:
    """A store of the first ``n`` events of ``kind`` (fsync off, batches of 1,000), in the default
    16 MiB segments, or 64 KiB ones below 200,000 events (so that a small store has sealed ones)."""
    gen = KINDS[kind]
    with closing(EventStore(path, durable=False, segment_bytes=None if n >= 200_000 else 1 << 16)) as store:
        for a in range(0, n, 1000):
            store.append([gen(i, n) for i in range(a, min(n, a + 1000))])


def folder_bytes(path: str) -> int:
    """Bytes of every file under ``path``."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _s, names in os.walk(path) for f in names)


def sealed_bytes(path: str) -> int:
    """Bytes of the sealed segments of a store (with their offset indexes), the active one left out."""
    log = os.path.join(path, "log")
    names = sorted(os.listdir(log))
    active = max(n for n in names if n.endswith(".seg"))
    return sum(os.path.getsize(os.path.join(log, n)) for n in names if not n.startswith(active[:12]))


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def read_all(path: str, keep: bool) -> tuple[float, float, float]:
    """(events/s wall, events/s CPU, seconds to free the list) of reading the whole store on a
    fresh handle, streamed (touching each event's data) or into a list. The list is freed after
    the clock stops, and that time is given apart: the events are kept, as a projection keeps
    them, and what dropping them later costs is the collector's and the allocator's."""
    with closing(EventStore(path, create=False)) as store:
        t0, c0 = time.perf_counter(), time.process_time()
        if keep:
            events = list(store.read())
            n = len(events)
        else:
            n = sum(1 for e in store.read() if e.data is not None)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        events = []
        freed = time.perf_counter() - t1
        if n != store.head():
            raise RuntimeError(f"read {n:,} events of {store.head():,}")
    return n / wall, n / cpu, freed


def best_of(fn: Callable[[], tuple[float, float]], runs: int) -> tuple[float, float]:
    """The best wall and the best CPU rate of ``runs`` runs."""
    got = [fn() for _ in range(runs)]
    return max(g[0] for g in got), max(g[1] for g in got)


def timed_cpu(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds with children, result) of ``fn()``."""
    t0, c0 = time.perf_counter(), _cpu()
    out = fn()
    return time.perf_counter() - t0, _cpu() - c0, out


def median_ms(fn: Callable[[], Any], reps: int, warm: bool = True) -> tuple[float, float]:
    """The medians of ``reps`` timings of ``fn()`` in ms, wall and CPU, each after one untimed
    run (warm cache)."""
    walls, cpus = [], []
    for _ in range(reps):
        if warm:
            fn()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - t0) * 1e3)
        cpus.append((time.process_time() - c0) * 1e3)
    return statistics.median(walls), statistics.median(cpus)


def entity_figures(path: str, n: int, reps: int) -> dict[str, tuple[float, float]]:
    """Warm-cache ms of: one order's ~10 events; that read and a conditional append of one event
    after it (the DCB decision; a ``durable=False`` handle, so that no fsync is counted); a
    category's first 100 events. Orders and categories are picked evenly across the store."""
    rnd = random.Random(n)
    orders = [order_of(rnd.randrange(n)) for _ in range(reps)]
    out: dict[str, list[tuple[float, float]]] = {"entity": [], "decision": [], "category": []}
    with closing(EventStore(path, create=False, durable=False)) as store:
        for k, order in enumerate(orders):
            query = Query([QueryItem(tags=[f"order:{order}"])])
            out["entity"].append(median_ms(lambda q=query: list(store.read(q)), 1))

            def decide(q: Query = query, k: int = k) -> None:
                result = store.read(q)
                events = list(result)
                store.append(Event("Noted", {"seen": len(events)}, [f"note:{k}"]),
                             AppendCondition(q, after=result.head))

            out["decision"].append(median_ms(decide, 1))
            cat = Query([QueryItem(tags=[f"category:{k % CATEGORIES}"])])
            out["category"].append(median_ms(lambda q=cat: list(store.read(q, limit=100)), 1))
    return {key: (statistics.median(w for w, _c in v), statistics.median(c for _w, c in v)) for key, v in out.items()}


def open_first_read_ms(path: str) -> float:
    """Ms to open the store and read one entity's events (a fresh process: nothing cached in it)."""
    t0 = time.perf_counter()
    with closing(EventStore(path, create=False)) as store:
        list(store.read(Query([QueryItem(tags=["order:7"])]), limit=10))
        list(store.read(limit=1))
    return (time.perf_counter() - t0) * 1e3


def fsck_rate(path: str) -> tuple[float, float, int]:
    """(events/s wall, events/s CPU with the workers', exit code) of a full fsck. Its module is
    imported before the clock starts: a constant 20 ms, not a cost per event (8% of a 50,000-event
    run, 0.1% of a 3M one)."""
    fsck = kroniko_ops.fsck
    wall, cpu, report = timed_cpu(lambda: fsck(path))
    n = report.figures.get("events_checked", 0)
    return n / wall, n / cpu, report.exit_code


def tag_ms(path: str, reps: int) -> float:
    """Median warm ms to read the 100 events of tag 'hot' (bench events)."""
    query = Query([QueryItem(tags=["hot"])])
    with closing(EventStore(path, create=False)) as store:
        if len(list(store.read(query))) != 100:
            raise RuntimeError(f"tag 'hot' of {path} is not on 100 events")
        return median_ms(lambda: list(store.read(query)), reps)[0]


def pack_figures(tmp: str, kind: str, n: int, reps: int) -> dict[str, Any]:
    """Everything measured on one store of ``n`` events of ``kind`` and on a compacted copy of it,
    the two read alternately (segments, packs, segments, packs...) so that both see the same
    machine, and the best of each kept (fsck in fresh processes)."""
    path = os.path.join(tmp, f"packs-{kind}-{n}")
    packed = path + "-packed"
    if not os.path.exists(path):
        build(path, kind, n)
    shutil.rmtree(packed, ignore_errors=True)
    shutil.copytree(path, packed)
    f: dict[str, Any] = {"n": n, "sealed_bytes": sealed_bytes(path)}
    wall, cpu, report = timed_cpu(lambda: kroniko_ops.compact(packed, durable=False))
    moved = report.figures.get("events_packed", 0)
    f["compact"] = (moved / wall, moved / cpu, moved)
    f["pack_bytes"] = folder_bytes(os.path.join(packed, "packs"))
    runs: dict[str, list[tuple[float, ...]]] = {}
    for _ in range(3):
        for where, p in (("seg", path), ("pack", packed)):
            runs.setdefault(f"{where}_stream", []).append(read_all(p, False))
            runs.setdefault(f"{where}_list", []).append(read_all(p, True))
    for _ in range(2):
        for where, p in (("seg", path), ("pack", packed)):
            runs.setdefault(f"{where}_fsck", []).append(in_child(fsck_rate, p))
    for key, got in runs.items():
        f[key] = max(got, key=lambda g: g[1])  # the best CPU rate (steadiest on a shared machine)
    if kind == "bench":
        tags: dict[str, list[float]] = {"seg_tag": [], "pack_tag": []}
        for _ in range(3):
            for where, p in (("seg", path), ("pack", packed)):
                tags[f"{where}_tag"].append(tag_ms(p, reps))
        f.update({k: min(v) for k, v in tags.items()})
    shutil.rmtree(packed, ignore_errors=True)
    return f


Figures = dict[str, tuple[float, float]]


def scale_figures(tmp: str, sizes: list[int], reps: int) -> Iterator[tuple[int, Figures, Figures, float]]:
    """For each size: (n, entity figures before compaction, after, open + first read ms of the
    packed store in a fresh process). Each store is removed once measured."""
    for n in sizes:
        path = os.path.join(tmp, f"scale-{n}")
        build(path, "realistic", n)
        before = entity_figures(path, n, reps)
        kroniko_ops.compact(path, durable=False)
        after = entity_figures(path, n, reps)
        opened = statistics.median(in_child(open_first_read_ms, path) for _ in range(3))
        yield n, before, after, opened
        shutil.rmtree(path, ignore_errors=True)


# -- rows for scripts/bench.py ---------------------------------------------------------------

def _row(key: str, workload: str, rate: float, unit: str, baseline: float | None = None,
         ratio: float | None = None, note: str = "") -> dict[str, Any]:
    return {"key": key, "workload": workload, "rate": rate, "unit": unit, "baseline": baseline, "ratio": ratio,
            "note": note}


def _freed(mode: str, got: tuple[float, ...]) -> str:
    """The note on the time a list read's events took to free, after its clock stopped."""
    return f"; freeing the list after the clock: {got[2] * 1e3:.0f} ms" if mode == "list" else ""


def pack_rows(n_bench: int, n_real: int, tmp: str, reps: int) -> list[dict[str, Any]]:
    """The rows of both event sets: bytes, reads (streamed, list), compaction, fsck, a tag."""
    rows = []
    for kind, n in (("bench", n_bench), ("realistic", n_real)):
        f = pack_figures(tmp, kind, n, reps)
        what = f"{n:,} {kind} events"
        rows.append(_row("pk_bytes", f"bytes of packs vs sealed segments, {what}", f["pack_bytes"], "B",
                         f["sealed_bytes"], f["pack_bytes"] / max(1, f["sealed_bytes"])))
        for mode, label in (("stream", "streamed"), ("list", "into a list")):
            seg, pk = f[f"seg_{mode}"], f[f"pack_{mode}"]
            rows.append(_row("pk_seg_read", f"read all from segments, {label}, {what}", seg[0], "ev/s",
                             note=f"CPU time: {seg[1]:,.0f} ev/s{_freed(mode, seg)}"))
            rows.append(_row("pk_pack_read", f"read all from packs, {label}, {what}", pk[0], "ev/s", seg[0],
                             pk[0] / seg[0],
                             f"CPU time: {pk[1]:,.0f} ev/s, {pk[1] / seg[1]:.2f}x segments'{_freed(mode, pk)}"))
            rows.append(_row("pk_pack_ratio", f"read all, packs vs segments, {label}, {what}", pk[0], "ev/s", seg[0],
                             pk[0] / seg[0], f"CPU time: {pk[1] / seg[1]:.2f}x"))
        rows.append(_row("pk_compact", f"compaction, {what}", f["compact"][0], "ev/s",
                         note=f"CPU time: {f['compact'][1]:,.0f} ev/s; {f['compact'][2]:,} events packed"))
        for where in ("seg", "pack"):
            wall, cpu, code = f[f"{where}_fsck"]
            rows.append(_row("pk_fsck", f"fsck full over {'segments' if where == 'seg' else 'packs'}, {what}", wall,
                             "ev/s", note=f"CPU time (workers included): {cpu:,.0f} ev/s; exit {code}"))
        if kind == "bench":
            rows.append(_row("pk_tag", f"one tag's 100 events, packs vs segments, {what}", f["pack_tag"], "ms",
                             f["seg_tag"], f["pack_tag"] / f["seg_tag"], f"median of {reps}, warm"))
    return rows


def scale_rows(sizes: list[int], tmp: str, reps: int) -> list[dict[str, Any]]:
    """Entity reads, the DCB decision and a category's first 100 events at each size, before and
    after compaction, each against the same figure at the smallest size."""
    rows: list[dict[str, Any]] = []
    base: Figures = {}
    for n, before, after, opened in scale_figures(tmp, sizes, reps):
        figures = {"entity_before": before["entity"], "entity_after": after["entity"],
                   "decision_before": before["decision"], "decision_after": after["decision"],
                   "category_after": after["category"]}
        if not base:
            base = figures
        for key, (ms, cpu) in figures.items():
            thing, when = key.split("_")
            what = {"entity": "one entity's ~10 events", "decision": "read + conditional append (DCB decision)",
                    "category": "a category's first 100 events"}[thing]
            ratio = ms / base[key][0]
            rows.append(_row(f"sc_{key}", f"{what}, {when} compaction, {n:,} realistic events", ms, "ms",
                             base[key][0], ratio, f"median of {reps} warm reads; CPU {cpu:.3f} ms; vs "
                             f"{sizes[0]:,} events {ratio:.2f}x wall, {cpu / base[key][1]:.2f}x CPU "
                             f"({'ok' if ratio <= 1.5 else 'NOT'} within 1.5x)"))
        rows.append(_row("sc_open", f"open + first read of a packed {n:,}-event store", opened, "ms",
                         note="median of 3 fresh processes"))
    return rows
