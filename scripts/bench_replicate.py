"""The replicate group of ``scripts/bench.py`` (``--only replicate``), against a throwaway SeaweedFS
on loopback (``kroniko_ops.objstore.seaweed``):

- replication lag with 1,000 durable appends per second sustained (4 processes of 250/s, one
  event per append; 1 MiB segments): ``kroniko-ops replicate --interval 1`` follows the store while a watcher
  polls the replica's newest manifest every 20 ms; an event's lag is when a manifest holding it
  was first seen minus when its append was acknowledged (synced). Median and 99th percentile.
- bytes uploaded per byte appended (segments' bytes; packs counted apart, manifests apart),
  from the same run, with a compaction in the middle of it;
- restore of an N-event replica (N = 200,000 with ``--size full``), events per second, wall
  clock for the whole command (download, verify, build, index, fsck).

Not a benchmark of its own: ``scripts/bench.py`` imports it by name.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import orjson

from kroniko_ops import Event, EventStore, compact
from kroniko_ops.objstore import open_url
from kroniko_ops.objstore.seaweed import BUCKET, S3Server
from kroniko_ops.ops.replicate import replicate, restore
from kroniko_ops.ops.replicate.manifest import MAX_MANIFEST_BYTES, manifest_key, manifest_seq, parse

WRITERS = 4
RATE = 1000  # durable appends per second, all writers together


def _writer(path: str, n: int, seconds: float, out: str) -> None:
    """Append one event every WRITERS/RATE seconds for ``seconds``; write (position, ack time)."""
    acks = []
    period = WRITERS / RATE
    with EventStore(path) as s:
        start = time.perf_counter()
        k = 0
        while (now := time.perf_counter()) - start < seconds:
            due = start + k * period
            if now < due:
                time.sleep(due - now)
            pos = s.append(Event("Tick", {"w": n, "k": k, "pad": "x" * 200}, [f"w:{n}"]))
            acks.append((pos, time.time()))
            k += 1
    with open(out, "wb") as f:
        f.write(orjson.dumps(acks))


class _Watcher(threading.Thread):
    """Polls the replica's newest manifest; records when each head was first seen."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.seen, self.stop = url, [], threading.Event()

    def run(self) -> None:
        remote = open_url(self.url)
        last = -1
        while not self.stop.is_set():
            seqs = sorted(s for k in remote.list("manifests/") if (s := manifest_seq(k)) is not None)
            if seqs and seqs[-1] != last:
                try:
                    head = parse(remote.get(manifest_key(seqs[-1]), MAX_MANIFEST_BYTES), seqs[-1]).head
                    self.seen.append((time.time(), head))
                    last = seqs[-1]
                except Exception:  # deleted by thinning between list and get: look again
                    pass
            self.stop.wait(0.02)
        remote.close()


def _log_bytes(path: str) -> int:
    """The bytes of every record of the store (what was appended to its segments, whether they
    are still segments or were packed since)."""
    with EventStore(path, create=False) as s:
        head = s.synced_state().position
        return sum(rec.size for rec in s.records(1, head)) if head else 0


def lag_rows(tmp: str, seconds: float, env: dict[str, str]) -> list[dict[str, Any]]:
    """The lag and bytes rows."""
    store, url = os.path.join(tmp, "lag-store"), f"s3://{BUCKET}/lag-{os.getpid()}"
    EventStore(store, segment_bytes=1 << 20).close()  # 1 MiB segments: compaction has sealed ones to pack
    exe = os.path.join(os.path.dirname(sys.executable), "kroniko-ops")
    follower = subprocess.Popen([exe, "replicate", store, url, "--interval", "1", "--json"], env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = _Watcher(url)
    watcher.start()
    ctx = mp.get_context("spawn")
    outs = [os.path.join(tmp, f"acks-{n}.json") for n in range(WRITERS)]
    procs = [ctx.Process(target=_writer, args=(store, n, seconds, outs[n])) for n in range(WRITERS)]
    for p in procs:
        p.start()
    time.sleep(seconds / 2)
    compact(store)  # packs go up once, counted apart
    for p in procs:
        p.join(seconds + 120)
    head = max(pos for out in outs for pos, _t in orjson.loads(open(out, "rb").read()))
    deadline = time.time() + 60
    while time.time() < deadline and not any(h >= head for _t, h in watcher.seen):
        time.sleep(0.05)
    watcher.stop.set()
    watcher.join(10)
    follower.send_signal(signal.SIGTERM)
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err
    summary = orjson.loads(out.strip().splitlines()[-1])
    acks = sorted((pos, t) for o in outs for pos, t in orjson.loads(open(o, "rb").read()))
    lags = []
    seen = sorted(watcher.seen)
    i = 0
    for pos, t in acks:
        while i < len(seen) and seen[i][1] < pos:
            i += 1
        if i < len(seen):
            lags.append(max(0.0, seen[i][0] - t))
    lags.sort()
    med, p99 = statistics.median(lags), lags[int(len(lags) * 0.99) - 1]
    appended = _log_bytes(store)
    rate = len(acks) / seconds
    return [
        {"key": "replicate_lag", "workload": f"replication lag at {rate:,.0f} durable appends/s, --interval 1 (p99)",
         "rate": p99, "unit": "s", "baseline": None, "ratio": None,
         "note": f"median {med:.3f} s, p99 {p99:.3f} s, max {lags[-1]:.3f} s over {len(lags):,} events"},
        {"key": "replicate_bytes", "workload": "bytes uploaded per byte appended (segments)",
         "rate": summary["uploaded_bytes"] / appended, "unit": "x", "baseline": None, "ratio": None,
         "note": f"{summary['uploaded_bytes']:,} uploaded for {appended:,} appended; packs {summary['pack_bytes']:,}, "
                 f"manifests {summary['manifest_bytes']:,} ({summary['manifests']} rounds)"},
    ]


def restore_rows(tmp: str, events: int, env: dict[str, str]) -> list[dict[str, Any]]:
    """The restore row."""
    store, url = os.path.join(tmp, "restore-store"), f"s3://{BUCKET}/restore-{os.getpid()}"
    with EventStore(store, durable=False) as s:
        for b in range(events // 1000):
            s.append([Event("Order", {"b": b, "k": k, "pad": "y" * 150}, [f"order:{b}-{k % 10}"])
                      for k in range(1000)])
    replicate(store, url, once=True)
    t0 = time.perf_counter()
    report = restore(url, os.path.join(tmp, "restored"))
    secs = time.perf_counter() - t0
    assert report.exit_code == 0 and report.head == events, report.findings
    return [{"key": "replicate_restore", "workload": f"restore of a {events:,}-event replica (S3, whole command)",
             "rate": events / secs, "unit": "ev/s", "baseline": None, "ratio": None,
             "note": f"{secs:.1f} s"}]


def rows(tmp: str, seconds: float, events: int) -> list[dict[str, Any]]:
    """Start SeaweedFS, measure, stop it."""
    server = S3Server(__import__("pathlib").Path(tmp) / "seaweedfs")
    server.dir.mkdir()
    server.start()
    env = server.env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return lag_rows(tmp, seconds, env) + restore_rows(tmp, events, env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
