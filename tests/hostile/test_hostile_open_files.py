"""Class 5 of issue 13 (second half): a batch is not limited by open files. ``append -f`` of a
100,000-event batch works in a child limited to 1,024 open descriptors and a bounded address
space, on an empty store and on one with more sealed segments than descriptors; reading and
checking the result work under the same limits, and so do the maintenance commands (fsck,
recover, backup, reindex, compact) on a store with more sealed segments than descriptors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hostile_helpers import no_traceback, run_cli

from kroniko_ops import Event, EventStore

BATCH = 100_000
FILES = 1024
MEMORY = 1 << 30  # address space: the batch is about 30 MB of JSON lines, its records about 45 MB
SEGMENTS = FILES + 200


def _events_file(path: Path) -> str:
    with open(path, "w") as f:
        for i in range(BATCH):
            f.write(json.dumps({"type": "Added", "data": {"i": i}, "tags": [f"t:{i % 7}", f"u:{i % 1000}"]}) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A JSON-lines file of 100,000 events."""
    return _events_file(tmp_path_factory.mktemp("batch") / "batch.jsonl")


def _many_segments(path: str) -> int:
    """A store with more sealed segments than the child may open files; return its head."""
    with EventStore(path, durable=False, segment_bytes=4096) as s:
        while len(os.listdir(os.path.join(path, "log"))) < 2 * SEGMENTS:  # a .seg and an .idx each
            s.append([Event("Old", {"pad": "z" * 1200}, ("old",)) for _ in range(3)])
        return s.head()


@pytest.mark.parametrize("kind", ["empty", "many-segments"])
def test_a_100k_batch_appends_under_1024_open_files(tmp_path: Path, batch: str, kind: str) -> None:
    store = str(tmp_path / "store")
    if kind == "empty":
        EventStore(store, durable=False).close()
        before = 0
    else:
        before = _many_segments(store)
    r = run_cli(["append", store, "-f", batch], files=FILES, memory=MEMORY, timeout=300)
    no_traceback(r)
    assert r.code == 0, str(r)
    assert int(r.out.strip()) == before + BATCH
    head = run_cli(["head", store], files=FILES, memory=MEMORY)
    assert head.code == 0 and int(head.out) == before + BATCH, str(head)
    read = run_cli(["read", store, "--tag", "u:999", "--json"], files=FILES, memory=MEMORY, timeout=300)
    no_traceback(read)
    summary = json.loads(read.out.splitlines()[-1])
    assert read.code == 0 and summary["events"] == BATCH // 1000, str(read)
    fsck = run_cli(["fsck", store, "--json"], files=FILES, memory=MEMORY, timeout=600)
    no_traceback(fsck)
    assert fsck.code == 0, str(fsck)


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store with more sealed segments than the child may open files (built once)."""
    path = str(tmp_path_factory.mktemp("segmented") / "store")
    _many_segments(path)
    return path


@pytest.mark.parametrize("argv", [["reindex", "{s}", "--json"], ["compact", "{s}", "--json"],
                                  ["recover", "{s}", "--json"], ["backup", "{s}", "{d}", "--json"]],
                         ids=lambda a: a[0])
def test_maintenance_on_more_segments_than_open_files(tmp_path: Path, segmented: str, argv: list[str]) -> None:
    store = str(tmp_path / "store")
    shutil.copytree(segmented, store)
    r = run_cli([a.format(s=store, d=str(tmp_path / "dest")) for a in argv], files=FILES, memory=MEMORY,
                timeout=600)
    no_traceback(r)
    assert r.code == 0, str(r)


def test_fsck_on_more_segments_than_open_files(tmp_path: Path, segmented: str) -> None:
    r = run_cli(["fsck", segmented, "--json"], files=FILES, memory=MEMORY, timeout=600)
    no_traceback(r)
    assert r.code == 0, str(r)
