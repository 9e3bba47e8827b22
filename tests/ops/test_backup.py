"""backup and verify-backup: what a backup holds, that it is a store, incrementals, packs."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import tarfile
import time
from pathlib import Path

import orjson
import pytest
from backup_helpers import event_bytes, fill, log_bytes, problems, same_prefix, tree_digest

from kroniko_ops import Event, EventStore, InvalidArgument, StoreNotFound, backup, restore, verify_backup
from kroniko_ops.log import LINE_LEN, read_line


def _manifest(path: str) -> dict:
    if os.path.isfile(path):
        with tarfile.open(path) as tar:
            f = tar.extractfile("MANIFEST.json")
            assert f is not None
            return orjson.loads(f.read())
    return orjson.loads(Path(path, "MANIFEST.json").read_bytes())


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "archive"])
def test_backup_holds_the_store_at_its_head_with_a_checksummed_manifest(tmp_path: Path, archive: bool) -> None:
    src = str(tmp_path / "src")
    head = fill(src, 12)
    dest = str(tmp_path / ("b.tar" if archive else "b"))
    report = backup(src, dest, archive=archive, durable=False)
    assert report.exit_code == 0 and report.head == head
    m = _manifest(dest)
    with EventStore(src) as s:
        assert m["head"] == head and m["chain"] == read_line(s._read_fd, head).chain
    assert m["kind"] == "full" and m["format"] == "kroniko-ops backup 1" and m["created_at"].endswith("Z")
    body = {k: v for k, v in m.items() if k != "manifest_sha256"}
    assert m["manifest_sha256"] == hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert m["files"]["log/append.log"]["size"] == head * LINE_LEN
    assert sum(1 for p in m["files"] if p.startswith("events/")) == head
    assert verify_backup(dest).exit_code == 0
    if not archive:
        for rel, entry in m["files"].items():
            data = Path(dest, rel).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])
        # the backup folder is itself a valid store, for read-only use
        with EventStore(dest, create=False) as b:
            assert [e.position for e in b.read()] == list(range(1, head + 1))
            assert b.head() == head
        # fsck is clean but for MANIFEST.json itself, which a live store does not have
        assert [p for p in problems(dest) if "MANIFEST.json" not in p] == []
        same_prefix(src, dest, head)
    else:
        with tarfile.open(dest) as tar:
            assert tar.getnames()[-1] == "MANIFEST.json"
            assert all(m.isreg() or m.isdir() for m in tar.getmembers())


def test_backup_refuses_a_non_empty_destination_and_writes_nothing(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 3)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(InvalidArgument, match="not an empty folder"):
        backup(src, str(dest), durable=False)
    assert os.listdir(dest) == ["keep.txt"]
    (tmp_path / "b.tar").write_text("x")
    with pytest.raises(InvalidArgument, match="exists"):
        backup(src, str(tmp_path / "b.tar"), archive=True, durable=False)
    assert (tmp_path / "b.tar").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["b.tar", "dest", "src"]


def test_backup_into_an_empty_folder_and_of_an_empty_store(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    EventStore(src).close()
    (tmp_path / "dest").mkdir()
    report = backup(src, str(tmp_path / "dest"), durable=False)
    assert report.head == 0
    assert verify_backup(str(tmp_path / "dest")).exit_code == 0
    assert restore(str(tmp_path / "dest"), str(tmp_path / "r"), durable=False).head == 0
    with EventStore(str(tmp_path / "r"), create=False) as r:
        assert r.head() == 0


def test_missing_store_is_an_operational_error(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound):
        backup(str(tmp_path / "nope"), str(tmp_path / "b"), durable=False)
    assert not (tmp_path / "b").exists()


def _appender(path: str, worker: int, stop: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    with EventStore(path, durable=False) as s:
        i = 0
        while not stop.is_set():
            s.append([Event("W", {"w": worker, "i": i}, [f"w:{worker}"]) for _ in range(1 + i % 3)])
            i += 1


def test_backup_while_four_processes_append_holds_exactly_one_head(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 30)
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    procs = [ctx.Process(target=_appender, args=(src, w, stop)) for w in range(4)]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + 30
        while EventStore(src).head() < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        report = backup(src, str(tmp_path / "b"), durable=False)
        archived = backup(src, str(tmp_path / "b.tar"), archive=True, durable=False)
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
    assert all(p.exitcode == 0 for p in procs)
    with EventStore(src) as s:
        final = s.head()
    head = report.head
    assert 200 <= head <= archived.head <= final
    for dest, h in ((tmp_path / "b", head), (tmp_path / "b.tar", archived.head)):
        assert verify_backup(str(dest)).exit_code == 0
        target = str(tmp_path / f"r-{dest.name}")
        assert restore(str(dest), target, durable=False).exit_code == 0
        assert problems(target) == []
        same_prefix(src, target, h)
    assert problems(src) == []


def test_backup_of_a_packed_store_copies_whole_packs_and_the_rest_loose(tmp_path: Path) -> None:
    from kroniko_ops import compact

    src = str(tmp_path / "src")
    fill(src, 30)
    assert compact(src).exit_code == 0
    fill(src, 10, start=30)
    assert compact(src).exit_code == 0
    head = fill(src, 5, start=40)
    report = backup(src, str(tmp_path / "b"), durable=False)
    assert report.figures["packs"] >= 2 and report.figures["loose_events"] >= 5
    assert report.figures["packed_events"] + report.figures["loose_events"] == head
    assert any(n.endswith(".pack") for n in os.listdir(tmp_path / "b" / "packs"))
    assert verify_backup(str(tmp_path / "b")).exit_code == 0
    assert restore(str(tmp_path / "b"), str(tmp_path / "r"), durable=False).exit_code == 0
    same_prefix(src, str(tmp_path / "r"), head)
    assert problems(str(tmp_path / "r")) == []


def test_an_event_packed_and_removed_during_the_backup_is_read_from_its_pack(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Compaction runs after the backup listed the packs (none) and before it copies events:
    every loose file is gone, so each event must come out of the new pack."""
    from kroniko_ops import compact
    from kroniko_ops.ops import backup as backup_mod

    src = str(tmp_path / "src")
    head = fill(src, 20)
    real = backup_mod._copy_events

    def compact_first(*args: object, **kwargs: object) -> int:
        assert compact(src).exit_code == 0
        assert not [n for n in os.listdir(os.path.join(src, "events")) if n.endswith(".json")]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(backup_mod, "_copy_events", compact_first)
    report = backup(src, str(tmp_path / "b"), durable=False)
    assert report.figures["loose_events"] == head
    assert verify_backup(str(tmp_path / "b")).exit_code == 0
    assert event_bytes(str(tmp_path / "b"), head) == event_bytes(src, head)


def test_backup_reads_only_and_leaves_the_source_untouched(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 10)
    before = tree_digest(src)
    backup(src, str(tmp_path / "b"), durable=False)
    backup(src, str(tmp_path / "b.tar"), archive=True, durable=False)
    assert tree_digest(src) == before


def test_incremental_backups_hold_only_new_positions_and_name_their_base(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    h0 = fill(src, 5)
    backup(src, str(tmp_path / "full"), durable=False)
    h1 = fill(src, 4, start=5)
    report = backup(src, str(tmp_path / "inc1"), incremental_from=str(tmp_path / "full"), durable=False)
    assert (report.head, report.figures["first"]) == (h1, h0 + 1)
    m = _manifest(str(tmp_path / "inc1"))
    full = _manifest(str(tmp_path / "full"))
    assert m["kind"] == "incremental" and m["base"] == {"head": h0, "chain": full["chain"], "path": "full"}
    assert m["files"]["log/increment.log"]["size"] == (h1 - h0) * LINE_LEN
    assert Path(tmp_path, "inc1", "log", "increment.log").read_bytes() == log_bytes(src, h1)[h0 * LINE_LEN:]
    assert sum(1 for p in m["files"] if p.startswith("events/")) == h1 - h0
    assert verify_backup(str(tmp_path / "inc1")).exit_code == 0
    # nothing new: an empty incremental is still a valid link
    backup(src, str(tmp_path / "inc2"), incremental_from=str(tmp_path / "inc1"), durable=False)
    assert verify_backup(str(tmp_path / "inc2")).exit_code == 0
    assert restore(str(tmp_path / "inc2"), str(tmp_path / "r"), durable=False).head == h1


def test_incremental_from_a_backup_of_another_store_is_refused(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    fill(a, 3)
    fill(b, 6, start=1)
    backup(a, str(tmp_path / "ba"), durable=False)
    with pytest.raises(InvalidArgument, match="not a backup of this store"):
        backup(b, str(tmp_path / "inc"), incremental_from=str(tmp_path / "ba"), durable=False)
    with pytest.raises(InvalidArgument, match="no backup"):
        backup(b, str(tmp_path / "inc"), incremental_from=str(tmp_path / "nothing"), durable=False)
    assert not (tmp_path / "inc").exists()


def test_metrics_file_reports_head_bytes_and_duration(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    head = fill(src, 4)
    prom = tmp_path / "metrics" / "backup.prom"
    report = backup(src, str(tmp_path / "b"), durable=False, metrics_file=str(prom))
    text = prom.read_text()
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if not line.startswith("#")}
    assert values["kroniko_backup_last_head"] == head
    assert values["kroniko_backup_last_bytes"] == report.figures["bytes"]
    assert values["kroniko_backup_last_duration_seconds"] >= 0
    # report.write_metrics prints 6 significant digits: the timestamp is right to ~1e-5
    assert abs(values["kroniko_backup_last_success_timestamp_seconds"] / time.time() - 1) < 2e-5
    verify_backup(str(tmp_path / "b"), metrics_file=str(tmp_path / "v.prom"))
    assert "kroniko_backup_verify_ok{" in (tmp_path / "v.prom").read_text()


def test_a_damaged_source_log_is_refused_and_nothing_is_published(tmp_path: Path) -> None:
    from kroniko_ops import StoreCorrupted

    src = str(tmp_path / "src")
    fill(src, 6)
    log = Path(src, "log", "append.log")
    raw = bytearray(log.read_bytes())
    raw[LINE_LEN * 2 + 20] ^= 0x01  # inside the id of position 3: the CRC no longer matches
    log.write_bytes(bytes(raw))
    with pytest.raises(StoreCorrupted, match=r"position|damaged"):
        backup(src, str(tmp_path / "b"), durable=False)
    assert sorted(os.listdir(tmp_path)) == ["src"]


@pytest.mark.parametrize("forked", [False, True], ids=["inline", "child-process"])
def test_a_damaged_source_index_is_rebuilt_for_the_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          forked: bool) -> None:
    from kroniko_ops.ops import backup as backup_mod

    if forked:  # big stores read their index in a child process: same result
        monkeypatch.setattr(backup_mod, "FORK_MIN_POSITIONS", 0)
    src = str(tmp_path / "src")
    head = fill(src, 6)
    pos_file = next(Path(src, "index", "types").iterdir())
    pos_file.write_bytes(b"garbage\n" + pos_file.read_bytes())
    report = backup(src, str(tmp_path / "b"), durable=False)
    assert "backup-index-rebuilt" in report.counts()
    assert verify_backup(str(tmp_path / "b")).exit_code == 0
    assert restore(str(tmp_path / "b"), str(tmp_path / "r"), durable=False).exit_code == 0
    same_prefix(src, str(tmp_path / "r"), head)
    assert problems(str(tmp_path / "r")) == []


def test_without_syncfs_every_file_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kroniko_ops import fileio
    from kroniko_ops.ops import backup_sink

    src = str(tmp_path / "src")
    fill(src, 4)
    monkeypatch.setattr(backup_sink, "_syncfs", lambda fd: False)
    synced: list[str] = []

    def spy(op: str, path: str) -> None:
        if op == "fsync":
            synced.append(os.path.basename(path))

    previous = fileio.set_fault_injector(spy)
    try:
        backup(src, str(tmp_path / "b"), durable=True)
    finally:
        fileio.set_fault_injector(previous)
    files = [p for p in Path(tmp_path, "b").rglob("*") if p.is_file() and p.name != "MANIFEST.json"]
    assert {p.name for p in files} <= set(synced)


def _compactor(path: str, stop: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    from kroniko_ops import compact

    while not stop.is_set():
        compact(path, max_pack_bytes=16384, max_packs=4)


@pytest.mark.soak
def test_soak_backups_while_appending_and_compacting(tmp_path: Path) -> None:
    """Two appenders and a compaction loop (packing, merging, removing loose files) run while
    backups and incrementals are taken; every one verifies and restores to its exact prefix."""
    src = str(tmp_path / "src")
    fill(src, 50)
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    procs = [ctx.Process(target=_appender, args=(src, w, stop)) for w in range(2)]
    procs.append(ctx.Process(target=_compactor, args=(src, stop)))
    for p in procs:
        p.start()
    heads = []
    try:
        previous = None
        for i in range(12):
            time.sleep(0.2)
            dest = str(tmp_path / f"b{i}")
            report = backup(src, dest, incremental_from=previous, archive=i % 3 == 2, durable=False)
            heads.append((dest, report.head))
            previous = dest
    finally:
        stop.set()
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
    for i, (dest, head) in enumerate(heads):
        assert verify_backup(dest).exit_code == 0
        target = str(tmp_path / f"r{i}")
        assert restore(dest, target, durable=False).head == head
        same_prefix(src, target, head)
    assert problems(src) == []


def test_an_archive_is_a_plain_tar_that_standard_tools_extract_to_the_folder_backup(tmp_path: Path) -> None:
    import shutil
    import subprocess

    src = str(tmp_path / "src")
    with EventStore(src, durable=False) as s:  # a tag whose index file name is over 100 bytes
        s.append(Event("T", 1, ["k:" + "x" * 120, "cart:1"]))
    fill(src, 5, start=1)
    backup(src, str(tmp_path / "b.tar"), archive=True, durable=False)
    backup(src, str(tmp_path / "b"), durable=False)
    with tarfile.open(tmp_path / "b.tar") as tar:
        names = tar.getnames()
        assert any(len(n) > 100 for n in names)  # a pax header carried the long name
        tar.extractall(tmp_path / "py", filter="data")
    want = {k: v for k, v in tree_digest(str(tmp_path / "b")).items() if k != "MANIFEST.json"}
    got = {k: v for k, v in tree_digest(str(tmp_path / "py")).items() if k != "MANIFEST.json"}
    assert got == want
    if shutil.which("tar"):
        (tmp_path / "gnu").mkdir()
        subprocess.run(["tar", "-xf", str(tmp_path / "b.tar"), "-C", str(tmp_path / "gnu")], check=True)
        assert {k: v for k, v in tree_digest(str(tmp_path / "gnu")).items() if k != "MANIFEST.json"} == want


def test_a_big_store_reads_its_index_in_a_child_process_with_the_same_result(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from kroniko_ops.ops import backup as backup_mod

    src = str(tmp_path / "src")
    fill(src, 8)
    backup(src, str(tmp_path / "inline"), durable=False)
    monkeypatch.setattr(backup_mod, "FORK_MIN_POSITIONS", 0)
    forks = []
    real_fork = os.fork

    def counting_fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counting_fork)
    backup(src, str(tmp_path / "forked"), durable=False)
    import threading

    assert len(forks) == (1 if threading.active_count() == 1 else 0)
    inline, forked = tree_digest(str(tmp_path / "inline")), tree_digest(str(tmp_path / "forked"))
    assert {k: v for k, v in inline.items() if k != "MANIFEST.json"} == \
        {k: v for k, v in forked.items() if k != "MANIFEST.json"}
