"""replicate following a store while 4 writers append and compaction runs: the replica ends
holding every event, byte for byte, packs included; killed with SIGKILL at many points it
resumes where the replica is, adopts what a killed run uploaded and uploads nothing twice."""

from __future__ import annotations

import os
import random
import signal
import time
import traceback
from pathlib import Path

import pytest
from replica_helpers import SEGMENT, contents, fill, finish, objects, reap, replica_head, spawn, wait_for

from kroniko_ops import DurabilityError, Event, EventStore, compact, fileio
from kroniko_ops.ops.replicate import replicate, restore, verify_backup

WRITERS = 4


def _writer(src: str, n: int, batches: int) -> None:  # pragma: no cover - runs in a child
    b = 0
    while b < batches:
        try:  # a handle that lost a race with compaction while sealing is reopened, as an application would
            with EventStore(src, durable=False, segment_bytes=SEGMENT) as s:
                while b < batches:
                    s.append([Event("W", {"w": n, "b": b, "k": k}, [f"w:{n}"]) for k in range(1 + b % 3)])
                    b += 1
        except DurabilityError:
            continue


def _compactor(src: str, stop: str) -> None:  # pragma: no cover - runs in a child
    while not os.path.exists(stop):
        compact(src, durable=False)
        time.sleep(0.05)


def _fork(fn, *args: object) -> int:  # type: ignore[no-untyped-def]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn(*args)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


@pytest.mark.parametrize("batches", [120, pytest.param(3000, marks=pytest.mark.soak)])
def test_follow_while_writers_append_and_compaction_runs(url: str, tmp_path: Path, batches: int) -> None:
    src, stop = str(tmp_path / "src"), str(tmp_path / "stop")
    fill(src, 5)
    follower = spawn("replicate", src, url, "--interval", "0.05", "--json")
    try:
        wait_for(lambda: replica_head(url) >= 0, what="the first manifest")
        writers = [_fork(_writer, src, n, batches) for n in range(WRITERS)]
        compactor = _fork(_compactor, src, stop)
        for pid in writers:
            assert reap(pid, 300, "writer") == 0
        open(stop, "w").close()
        assert reap(compactor, 120, "compactor") == 0
        head = contents(src)[-1][0]
        wait_for(lambda: replica_head(url) == head, what="the follower catching up")
    finally:
        code, _out, err = finish(follower)
    assert code == 0, err
    assert replicate(src, url, once=True).head == head
    assert any(k.startswith("packs/") for k in objects(url)), "compaction's packs are shipped"
    assert verify_backup(url).exit_code == 0
    restore(url, str(tmp_path / "restored"))
    assert contents(str(tmp_path / "restored")) == contents(src)


def _stamps(url: str) -> dict[str, tuple[int, int]]:
    """Each object's size and, for a folder, its inode: an object uploaded again gets a new one
    (a rename replaces the file); for S3 its ETag-free identity is its size and listing."""
    if url.startswith("s3://"):
        from kroniko_ops.objstore import open_url

        remote = open_url(url)
        try:
            client = remote.client  # type: ignore[attr-defined]
            out = {}
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=remote.bucket,  # type: ignore[attr-defined]
                                                                         Prefix=remote.prefix + "/"):  # type: ignore[attr-defined]
                for o in page.get("Contents", ()):
                    out[o["Key"]] = (o["Size"], int(o["LastModified"].timestamp() * 1e6))
            return out
        finally:
            remote.close()
    out = {}
    for dirpath, _dirs, files in os.walk(url):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), url)] = (st.st_size, st.st_ino)
    return out


@pytest.mark.parametrize("kills", [pytest.param(4, id="4"), pytest.param(40, id="40", marks=pytest.mark.soak)])
def test_sigkill_at_many_points_then_resume(url: str, tmp_path: Path, kills: int) -> None:
    src = str(tmp_path / "src")
    fill(src, 20)
    rng = random.Random(kills)
    seen: dict[str, tuple[int, int]] = {}
    for round_ in range(kills):
        fill(src, 15, start=20 + 15 * round_)
        if round_ % 4 == 2:
            compact(src, durable=False)
        proc = spawn("replicate", src, url, "--interval", "0.01")
        time.sleep(rng.uniform(0.3, 1.2))  # from before its first request to well into its rounds
        finish(proc, signal.SIGKILL)
        now = _stamps(url)
        for key, stamp in seen.items():  # without --retain no data object is ever deleted
            assert now.get(key) == stamp, f"{key} was uploaded again (or lost) after a kill"
        seen.update({k: v for k, v in now.items() if "manifests/" not in k})
    done = replicate(src, url, once=True)
    assert done.head == contents(src)[-1][0]
    assert verify_backup(url).exit_code == 0
    restore(url, str(tmp_path / "restored"))
    assert contents(str(tmp_path / "restored")) == contents(src)


def _killed_at(fn, n: int) -> int:  # type: ignore[no-untyped-def]
    """Run ``fn`` in a child that dies at its ``n``-th file operation (as a SIGKILL would)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        count = 0

        def die(op: str, path: str) -> None:
            nonlocal count
            count += 1
            if count == n:
                os._exit(77)

        fileio.set_fault_injector(die)
        try:
            fn()
        except BaseException:
            os._exit(1)
        os._exit(0)
    return reap(pid, 60, f"replicate killed at op {n}")


def test_killed_at_every_file_operation_of_a_round_into_a_folder(tmp_path: Path) -> None:
    """A folder replica is written through fileio: kill the round at each of its operations;
    the next run resumes, and the replica always restores to a batch end of the store."""
    src, url = str(tmp_path / "src"), str(tmp_path / "replica")
    fill(src, 30)
    replicate(src, url, once=True)
    n, code = 0, 77
    while code == 77:
        n += 1
        fill(src, 4, start=30 + 4 * n)  # a few more batches: new ranges, seals
        before = _stamps(url)
        code = _killed_at(lambda: replicate(src, url, once=True), n)
        assert code in (0, 77)
        ends = {row[0] for row in contents(src) if row[5]}
        with_kill = verify_backup(url)
        assert with_kill.exit_code == 0, [f.message for f in with_kill.problems]
        assert with_kill.head in ends
        replicate(src, url, once=True)
        after = _stamps(url)
        assert all(after.get(k) == v for k, v in before.items() if "manifests/" not in k)
    assert n > 10  # the round had that many operations to be killed at
    restore(url, str(tmp_path / "restored"))
    assert contents(str(tmp_path / "restored")) == contents(src)
