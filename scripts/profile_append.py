"""Where a durable conditional append's time goes: appends/s, CPU per append (user and system),
context switches and fsyncs per append, for 1 and for N processes on one store, optionally beside
the commit-protocol prototype (``--prototype path/to/wal_proto.py``) doing the same loop.

Not a benchmark (``scripts/bench.py`` is, with SQLite in the same run): a profile for the
question "what separates the engine from the prototype". ``--blocking-lock`` also runs the
engine with the writer lock taken by a plain blocking ``flock`` in the calling thread, which
has no timeout (the shipped lock waits in a helper thread so that ``lock_timeout`` holds): it
shows what that guarantee costs. Run it on a quiet machine.

    python scripts/profile_append.py --procs 1 8 --blocking-lock [--prototype path/to/wal_proto.py]
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_engine  # the benchmark's own loop, so the work is the same

from kroniko_ops import EventStore, fileio, locking


def _engine(path: str, worker: int, seconds: float, blocking: bool, out: Any) -> None:
    fsyncs = [0]
    plain = fileio.Syncer.file

    def counted(self: fileio.Syncer, *args: Any, **kwargs: Any) -> None:
        fsyncs[0] += 1
        plain(self, *args, **kwargs)

    fileio.Syncer.file = counted  # type: ignore[method-assign]
    if blocking:
        def acquire(self: locking.AppendLock, timeout: float) -> None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._held_fd = self._fd
        locking.AppendLock.acquire = acquire  # type: ignore[method-assign]
    with EventStore(path) as store:
        _measure(lambda deadline: bench_engine.kroniko_loop(store, f"cart:{worker}-", deadline, False)[0],
                 seconds, out, fsyncs)


def _prototype(module: str, path: str, worker: int, seconds: float, out: Any) -> None:
    spec = importlib.util.spec_from_file_location("wal_proto", module)
    assert spec is not None and spec.loader is not None
    saved, sys.argv = sys.argv, [module, "1", os.path.dirname(path)]
    proto = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(proto)
    sys.argv = saved
    wal, last = proto.Wal(path), {}

    def loop(deadline: float) -> int:
        i = 0
        while time.perf_counter() < deadline:
            tag = f"cart:{worker}-{i % bench_engine.ENTITIES}"
            last[tag] = wal.append(bench_engine.TYPE, bench_engine.payload(i), [tag], tag, last.get(tag, 0), True)
            i += 1
        return i

    _measure(loop, seconds, out, None)


def _measure(loop: Any, seconds: float, out: Any, fsyncs: list[int] | None) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF)
    done = loop(time.perf_counter() + seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    out.put((done, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
             after.ru_nvcsw - before.ru_nvcsw, after.ru_nivcsw - before.ru_nivcsw,
             fsyncs[0] if fsyncs is not None else -1))


def run(kind: str, procs: int, seconds: float, prototype: str | None) -> str:
    """One line of figures for ``procs`` processes of ``kind`` (engine, engine-blocking-lock,
    prototype) appending to one new store for ``seconds``."""
    folder = tempfile.mkdtemp(prefix="kroniko-profile-")
    path = os.path.join(folder, "store" if kind.startswith("engine") else "wal.log")
    if kind.startswith("engine"):
        EventStore(path).close()
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    if kind == "prototype":
        children = [ctx.Process(target=_prototype, args=(prototype, path, w, seconds, out)) for w in range(procs)]
    else:
        children = [ctx.Process(target=_engine, args=(path, w, seconds, kind == "engine-blocking-lock", out))
                    for w in range(procs)]
    for child in children:
        child.start()
    try:
        got = [out.get(timeout=seconds + 120) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    n = sum(g[0] for g in got)
    per = 1e6 / max(n, 1)
    line = (f"{kind:22} {procs} proc(s): {n / seconds:8,.0f} appends/s  user {sum(g[1] for g in got) * per:5.0f} us"
            f"  sys {sum(g[2] for g in got) * per:5.0f} us  voluntary {sum(g[3] for g in got) / max(n, 1):4.1f}"
            f"  involuntary {sum(g[4] for g in got) / max(n, 1):4.1f}")
    if got[0][5] >= 0:
        line += f"  fsyncs {sum(g[5] for g in got) / max(n, 1):.2f}"
    return line + " (per append)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prototype", help="path of wal_proto.py, run beside the engine")
    parser.add_argument("--blocking-lock", action="store_true", help="also run the engine with a plain blocking flock")
    args = parser.parse_args()
    kinds = ["engine"] + (["engine-blocking-lock"] if args.blocking_lock else []) + (
        ["prototype"] if args.prototype else [])
    for r in range(args.rounds):
        for procs in args.procs:
            for kind in kinds:
                print(f"round {r}: {run(kind, procs, args.seconds, args.prototype)}", flush=True)


if __name__ == "__main__":
    main()
