#!/usr/bin/env python3
"""Backup, verify and restore figures (issue 6), each against a baseline measured in the same run.

    python scripts/bench_backup.py [--size ci|full] [--dir FOLDER]

The store is built through the engine (batches of 1000, fsync off; the shape of scripts/bench.py:
one ``cart:<n>`` tag per 10 events) and packed by ``compact`` (loose when compaction is missing).
Then, best of two runs each (the page cache warm for everybody):

- ``tar -cf`` of the store folder: the baseline of a backup; ``backup --archive`` writes the
  same kind of single file, a folder backup writes one file per index list;
- ``verify-backup`` of both, in MB/s of backup content;
- ``restore`` of the folder backup including its full fsck, in events/s; ``tar -xf`` of the
  tar baseline (creating the same files, checking nothing) is printed beside it.

Nothing is fsynced by either side (``durable=False`` / plain tar), so the figures compare the
work, not the disk's flush latency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kroniko_ops import Event, EventStore, backup, restore, verify_backup

SIZES = {"ci": 100_000, "full": 1_000_000}


def scratch_dir(n: int) -> str | None:
    """A tmpfs to build a big store in (creating a million loose files on a disk takes minutes,
    and the build is not what is measured), when there is one with room to spare."""
    shm = "/dev/shm"
    if n < 500_000 or not os.path.isdir(shm):
        return None
    return shm if shutil.disk_usage(shm).free > n * 8192 else None


def build(path: str, n: int) -> str:
    """A store of ``n`` events at ``path``, packed when compaction is available; returns how it
    is stored. Built in a tmpfs and copied over when :func:`scratch_dir` finds one."""
    scratch = scratch_dir(n)
    if scratch is None:
        return _build(path, n)
    tmp = tempfile.mkdtemp(prefix="kroniko-bench-build-", dir=scratch)
    try:
        shape = _build(os.path.join(tmp, "store"), n)
        shutil.copytree(os.path.join(tmp, "store"), path, symlinks=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return shape + ", built in tmpfs"


def _build(path: str, n: int) -> str:
    with EventStore(path, durable=False) as store:
        for start in range(0, n, 1000):
            store.append([Event("ItemAdded", {"sku": f"s{i}", "qty": i % 7}, [f"cart:{i // 10}"])
                          for i in range(start, min(n, start + 1000))])
    try:
        from kroniko_ops import compact
    except (ImportError, AttributeError):
        return "loose (compaction not available)"
    report = compact(path)
    if report.exit_code != 0:
        return f"loose (compaction failed: exit {report.exit_code})"
    return f"packed ({report.figures.get('packs', '?')} packs)"


def best(runs: int, fn: Callable[[int], Any]) -> float:
    """The shortest wall time of ``runs`` calls of ``fn(i)``."""
    out = float("inf")
    for i in range(runs):
        t0 = time.perf_counter()
        fn(i)
        out = min(out, time.perf_counter() - t0)
    return out


def tree_bytes(path: str) -> int:
    """Bytes of the regular files under ``path``."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def run(size: str, work: str | None = None) -> list[dict[str, Any]]:
    """The figures for ``size`` ("ci": 100k events, "full": 1M)."""
    n = SIZES[size]
    tmp = tempfile.mkdtemp(prefix="kroniko-bench-backup-", dir=work)
    try:
        return _run(n, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(n: int, tmp: str) -> list[dict[str, Any]]:
    src = os.path.join(tmp, "store")
    t0 = time.perf_counter()
    shape = build(src, n)
    built = time.perf_counter() - t0
    store_bytes = tree_bytes(src)
    note = f"{n:,} events, {shape}, {store_bytes / 1e6:.0f} MB; built in {built:.0f}s"

    def tar(i: int) -> None:
        subprocess.run(["tar", "-cf", os.path.join(tmp, f"t{i}.tar"), "-C", tmp, "store"], check=True)

    def archive(i: int) -> None:
        backup(src, os.path.join(tmp, f"b{i}.tar"), archive=True, durable=False)

    def folder(i: int) -> None:
        backup(src, os.path.join(tmp, f"b{i}"), durable=False)

    tar(9)  # warm the page cache for everybody
    t_tar = best(2, tar)
    t_archive = best(2, archive)
    t_folder = best(2, folder)
    for extra in ("t1.tar", "t9.tar", "b1.tar", "b1"):  # keep one of each: less for the page cache
        path = os.path.join(tmp, extra)
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    rows: list[dict[str, Any]] = [
        {"workload": f"backup --archive, {n:,}-event store", "rate": store_bytes / t_archive / 1e6, "unit": "MB/s",
         "baseline": store_bytes / t_tar / 1e6, "ratio": t_tar / t_archive, "target": 0.5,
         "note": f"{note}; tar -cf {t_tar:.2f}s, backup --archive {t_archive:.2f}s"},
        {"workload": f"backup to a folder, {n:,}-event store", "rate": store_bytes / t_folder / 1e6, "unit": "MB/s",
         "baseline": store_bytes / t_tar / 1e6, "ratio": t_tar / t_folder, "target": 0.5,
         "note": f"tar -cf {t_tar:.2f}s, folder backup {t_folder:.2f}s (creates every file of the store)"},
    ]
    for name, path in (("archive", os.path.join(tmp, "b0.tar")), ("folder", os.path.join(tmp, "b0"))):
        reports = []
        secs = best(2, lambda _i, p=path, out=reports: out.append(verify_backup(p)))
        assert reports[-1].exit_code == 0, reports[-1].findings[:3]
        content = reports[-1].figures["bytes"]
        rows.append({"workload": f"verify-backup ({name}), {n:,} events", "rate": content / secs / 1e6,
                     "unit": "MB/s", "target_rate": 200, "note": f"{content / 1e6:.0f} MB in {secs:.2f}s"})
    extract = os.path.join(tmp, "x")
    os.mkdir(extract)
    t0 = time.perf_counter()
    subprocess.run(["tar", "-xf", os.path.join(tmp, "t0.tar"), "-C", extract], check=True)
    t_untar = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = restore(os.path.join(tmp, "b0"), os.path.join(tmp, "r"), durable=False)
    t_restore = time.perf_counter() - t0
    assert report.exit_code == 0 and report.head == n, report.findings[:3]
    fsck_s = report.figures.get("fsck_seconds", 0.0)
    rows.append({"workload": f"restore incl. full fsck, {n:,} events", "rate": n / t_restore, "unit": "ev/s",
                 "target_rate": 100_000,
                 "note": f"{t_restore:.2f}s of which fsck {fsck_s:.2f}s; tar -xf of the same store "
                         f"{t_untar:.2f}s ({n / t_untar:,.0f} ev/s, checks nothing)"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="ci")
    ap.add_argument("--dir", help="work folder (default: a temp folder)")
    args = ap.parse_args()
    for row in run(args.size, args.dir):
        extra = f"  baseline {row['baseline']:,.1f}  ratio {row['ratio']:.2f} (target {row['target']})" \
            if "ratio" in row else f"  (target {row['target_rate']:,})"
        print(f"{row['workload']:<45} {row['rate']:>12,.1f} {row['unit']:<5}{extra}")
        print(f"    {row['note']}")


if __name__ == "__main__":
    main()
