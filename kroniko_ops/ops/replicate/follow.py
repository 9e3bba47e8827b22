"""``replicate``: rounds of :mod:`.ship` until caught up (``--once``) or for ever (following),
retention after each round, the metrics file after each round and on failure; and ``backup
STORE s3://...``: one round into an empty prefix.
"""

from __future__ import annotations

import os
import threading
import time

from ...errors import EXIT_OPERATIONAL, InvalidArgument, KronikoError
from ...objstore import Retry, open_url
from ...report import Report
from .retention import prune
from .ship import Replicator, now_us


def replicate(store: str | os.PathLike[str], url: str, *, once: bool = False, interval: float = 1.0,
              retain: float | None = None, metrics_file: str | None = None, retry: Retry | None = None,
              stop: threading.Event | None = None, lock_timeout: float = 30.0) -> Report:
    """Ship the store at ``store`` to ``url`` (``s3://bucket/prefix`` or a folder): with
    ``once`` until the replica holds the synced head seen at the start, else every
    ``interval`` seconds until ``stop`` is set. ``retain`` (seconds) deletes what no restore
    within that window needs; ``metrics_file`` records each round (and a failure) with the
    replica's lag (:mod:`kroniko_ops.metrics`, operation ``replicate``, path ``url``).

    Raises InvalidArgument (exit 2, nothing written) when ``url`` holds something else than
    this store's replica, ObjectStoreError (exit 8) once the object store kept failing for
    ``retry.seconds``.
    """
    store = os.fspath(store)
    stop = stop or threading.Event()
    if interval <= 0:
        raise InvalidArgument(f"--interval must be > 0 seconds, got {interval}")
    report = Report("replicate", url)
    started = time.monotonic()
    try:
        remote = open_url(url, retry)
        remote.cancel = stop
        rep = Replicator(store, remote, lock_timeout=lock_timeout)
    except (KronikoError, OSError) as exc:
        if metrics_file:
            _metrics(None, metrics_file, url, _code(exc), time.monotonic() - started)
        raise
    rounds = deleted_manifests = deleted_objects = 0
    opened = False
    try:
        while True:
            started = time.monotonic()
            try:
                if not opened:
                    rep.open()
                    opened = True
                rep.round()
                dm, do = prune(rep, retain, now_us())
            except (KronikoError, OSError) as exc:
                if metrics_file:
                    _metrics(rep if opened else None, metrics_file, url, _code(exc), time.monotonic() - started)
                raise
            rounds += 1
            deleted_manifests += dm
            deleted_objects += do
            if metrics_file:
                _metrics(rep, metrics_file, url, 0, time.monotonic() - started)
            if once or stop.wait(max(0.0, interval - (time.monotonic() - started))):
                break
    finally:
        rep.close()
    return _finish(report, rep, rounds=rounds, deleted_manifests=deleted_manifests, deleted_objects=deleted_objects)


def backup_to_url(store: str | os.PathLike[str], url: str, *, retry: Retry | None = None,
                  lock_timeout: float = 30.0) -> Report:
    """One snapshot of the store at its synced head into ``url``, which must hold nothing yet
    (else InvalidArgument, exit 2); the result is a replica with one manifest."""
    report = Report("backup", url)
    rep = Replicator(os.fspath(store), open_url(url, retry), lock_timeout=lock_timeout)
    try:
        rep.open(empty_only=True)
        rep.round()
    finally:
        rep.close()
    return _finish(report, rep)


def lag(rep: Replicator) -> tuple[int, float]:
    """Positions and seconds the replica is behind the store's synced head: seconds since the
    first batch it lacks was committed (0 when it lacks none or its time is unknown)."""
    state = rep.store.synced_state()
    head = rep.current.head if rep.current is not None else 0
    behind = max(0, state.position - head)
    if not behind:
        return 0, 0.0
    committed = next(iter(rep.store.records(head + 1, head + 1))).time
    return behind, max(0.0, time.time() - committed / 1e6) if committed else 0.0


def _code(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, KronikoError) else EXIT_OPERATIONAL


def _metrics(rep: Replicator | None, path: str, url: str, exit_code: int, seconds: float) -> None:
    """Record a round (or a failure: the last success is carried forward) in the metrics file,
    with the replica's lag when its head is known (``rep``) and the store can be read."""
    from ...metrics import GAUGES, write_run  # prometheus_client costs ~30 ms to import: only when asked for

    extra: dict[str, tuple[str, float]] = {}
    if rep is not None:
        try:
            positions, behind = lag(rep)
            extra = {"replica_lag_positions": (GAUGES["replica_lag_positions"], positions),
                     "replica_lag_seconds": (GAUGES["replica_lag_seconds"], behind)}
        except (KronikoError, OSError, StopIteration):
            pass
    write_run(path, "replicate", url, exit_code=exit_code, seconds=seconds, extra=extra)


def _finish(report: Report, rep: Replicator, **more: int) -> Report:
    m = rep.current
    report.head = m.head if m is not None else 0
    for path in rep.swept:
        report.add("backup-stale-temp", "info", path, "removed a temp file an interrupted upload left")
    report.finish()
    c = rep.count
    report.figures.update(manifest=m.seq if m is not None else 0, chain=m.chain if m is not None else "",
                          uploaded_bytes=c.bytes, pack_bytes=c.pack_bytes, manifest_bytes=c.manifest_bytes,
                          objects=c.objects, adopted=c.adopted, manifests=c.manifests, **more)
    return report
