"""reindex: the index rebuilt from the log and the events, verified, swapped in atomically (readers
never see half an index), catching up appends made during the build."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from fsck_helpers import build, observe, queries, write

from kroniko_ops import Event, EventStore, StoreLocked, fsck, reindex
from kroniko_ops.fileio import set_fault_injector
from kroniko_ops.index import Index
from kroniko_ops.layout import Layout
from kroniko_ops.locking import held
from kroniko_ops.ops import reindex as reindex_module


def _index_files(store: str) -> dict[str, bytes]:
    root = Path(store, "index")
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.name != "CHECKPOINT"}


def test_reindex_rebuilds_exactly_the_index_the_engine_writes(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    before, seen = _index_files(store), observe(store)
    report = reindex(store)
    assert report.exit_code == 0
    assert report.figures["events_indexed"] == 12
    assert _index_files(store) == before
    cp = Index(str(Path(store, "index"))).read_checkpoint()
    assert cp.written == cp.durable == 12
    assert observe(store) == seen
    assert fsck(store).exit_code == 0
    # The replaced index is kept in lost-found/ (derived data: safe to delete).
    [folder] = Path(store, "lost-found").iterdir()
    assert "reindex replaced" in (folder / "NOTE.txt").read_text()


def test_reindex_repairs_a_broken_index(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    seen = observe(store)
    os.unlink(Path(store, "index", "types", "Paid.pos"))
    write(Path(store, "index", "tags", "vip.pos"), b"000000000007\n000000000001\n")
    Path(store, "index", "tags", "a b.pos").write_bytes(b"000000000002\n")
    assert fsck(store).exit_code == 4
    assert reindex(store).exit_code == 0
    assert fsck(store).exit_code == 0
    assert observe(store) == seen


def test_reindex_without_an_index_folder(tmp_path: Path) -> None:
    import shutil

    store = str(tmp_path / "s")
    build(store)
    seen = observe(store)
    shutil.rmtree(Path(store, "index"))
    assert reindex(store).exit_code == 0
    assert observe(store) == seen and fsck(store).exit_code == 0


def test_readers_never_see_half_an_index(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store, batches=(3, 1, 4, 2, 2) * 10)
    with EventStore(store, create=False) as s:
        want = [[e.position for e in s.read(q)] for q in queries()]
    stop = threading.Event()
    wrong: list[object] = []

    def read_all() -> None:
        with EventStore(store, create=False) as s:
            while not stop.is_set():
                got = [[e.position for e in s.read(q)] for q in queries()]
                if got != want:
                    wrong.append(got)

    readers = [threading.Thread(target=read_all) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for _ in range(4):
            assert reindex(store).exit_code == 0
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=30)
    assert wrong == []


def test_appends_made_during_the_build_are_caught_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = str(tmp_path / "s")
    build(store)
    real_verify = reindex_module._verify

    def verify_then_append(*args: object) -> None:
        real_verify(*args)  # type: ignore[arg-type]
        with EventStore(store, create=False) as s:  # a writer, while the build waits for the lock
            s.append([Event("Late", {"k": k}, ["late"]) for k in range(3)])

    monkeypatch.setattr(reindex_module, "_verify", verify_then_append)
    report = reindex(store)
    assert report.exit_code == 0 and report.head == 15
    assert fsck(store).exit_code == 0
    assert Index(str(Path(store, "index"))).positions("tags", "late", 0, 99) == [13, 14, 15]


def test_the_swap_falls_back_to_renames_without_renameat2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = str(tmp_path / "s")
    build(store)
    seen = observe(store)

    def no_exchange(a: str, b: str) -> None:
        raise OSError(errno.EINVAL, "not supported here", b)

    monkeypatch.setattr(reindex_module.fileio, "exchange", no_exchange)
    assert reindex(store).exit_code == 0
    assert observe(store) == seen and fsck(store).exit_code == 0


def test_a_failed_build_leaves_the_old_index_in_place(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    before = _index_files(store)
    calls = {"n": 0}

    def fail_later(op: str, path: str) -> None:
        if op == "open" and ".tmp-" in path and "-reindex" in path:
            calls["n"] += 1
            if calls["n"] == 5:
                raise OSError(errno.ENOSPC, "injected: disk full", path)

    previous = set_fault_injector(fail_later)
    try:
        with pytest.raises(OSError):
            reindex(store)
    finally:
        set_fault_injector(previous)
    assert _index_files(store) == before
    assert not [n for n in os.listdir(store) if n.startswith(".tmp-")]
    assert fsck(store).exit_code == 0


def test_an_unreadable_event_is_left_out_and_reported(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    os.unlink(Path(store, "events", "ev-0004.json"))
    report = reindex(store)
    assert report.exit_code == 4
    assert [(f.code, f.position) for f in report.findings] == [("missing-event", 5)]
    after = fsck(store)
    assert {f.code for f in after.problems} == {"missing-event"}


def test_reindex_waits_for_the_writer_lock_then_gives_up(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    build(store)
    with held(Layout(store).append_lock, 5, "append"), pytest.raises(StoreLocked):
        reindex(store, lock_timeout=0.2)
    assert not [n for n in os.listdir(store) if n.startswith(".tmp-")]
    assert fsck(store).exit_code == 0
