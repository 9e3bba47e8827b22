"""What a replica refuses and what verify-backup catches: a replica of store A is refused for
store B (exit 2, nothing written), so is a prefix holding anything else; tampered, missing or
truncated objects and edited manifests are findings (exit 4) and restore writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from replica_helpers import cli, contents, fill, objects

from kroniko_ops import Event, EventStore
from kroniko_ops.errors import InvalidArgument, StoreCorrupted
from kroniko_ops.objstore import open_url
from kroniko_ops.ops.replicate import replicate, restore, verify_backup


def _put(url: str, key: str, data: bytes) -> None:
    import hashlib

    remote = open_url(url)
    try:
        if url.startswith("s3://"):
            remote.put(key, data, len(data), hashlib.sha256(data).hexdigest())
        else:  # a folder's objects are read-only files: replace one as an intruder would
            path = os.path.join(url, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.exists(path):
                os.chmod(path, 0o644)
            with open(path, "wb") as f:
                f.write(data)
    finally:
        remote.close()


def _get(url: str, key: str) -> bytes:
    remote = open_url(url)
    try:
        return remote.get(key, 1 << 30)
    finally:
        remote.close()


def _delete(url: str, key: str) -> None:
    remote = open_url(url)
    try:
        remote.delete(key)
    finally:
        remote.close()


def test_replica_of_another_store_is_refused_nothing_written(url: str, tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    fill(a, 30)
    fill(b, 40)  # same events' shapes, another store (its own FORMAT, ids, chain)
    replicate(a, url, once=True)
    before = objects(url)
    with pytest.raises(InvalidArgument, match="another store"):
        replicate(b, url, once=True)
    done = cli("replicate", b, url, "--once")
    assert done.returncode == 2 and "another store" in done.stderr
    assert objects(url) == before


def test_a_copy_that_went_another_way_is_refused(url: str, tmp_path: Path) -> None:
    """A restore of the replica at an earlier point, then appended to, has another history."""
    a, fork = str(tmp_path / "a"), str(tmp_path / "fork")
    ends = fill(a, 30)
    replicate(a, url, once=True)
    restore(url, fork, to_position=ends[10])
    fill(fork, 3, start=100)
    before = objects(url)
    with pytest.raises(InvalidArgument, match="another history"):
        replicate(fork, url, once=True)
    assert objects(url) == before
    # ... while a restore of the whole replica may carry on into it (the same history, longer)
    whole = str(tmp_path / "whole")
    restore(url, whole)
    fill(whole, 3, start=100)
    assert replicate(whole, url, once=True).head == contents(whole)[-1][0]


def test_prefix_holding_something_else_is_refused(url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 5)
    _put(url, "notes.txt", b"someone else's")
    with pytest.raises(InvalidArgument, match="not part of a replica"):
        replicate(src, url, once=True)
    assert set(objects(url)) == {"notes.txt"}


@pytest.mark.parametrize("damage", ["flip", "delete", "manifest", "old-manifest-object",
                                    pytest.param("truncate", marks=pytest.mark.soak)])
def test_tampered_replica_is_caught_and_not_restored(url: str, tmp_path: Path, damage: str) -> None:
    src = str(tmp_path / "src")
    fill(src, 60)
    replicate(src, url, once=True)
    if damage == "old-manifest-object":
        from kroniko_ops import compact

        compact(src, durable=False)  # the newest manifest names a pack; the older one, segments
        replicate(src, url, once=True)
    keys = sorted(objects(url))
    victim = next(k for k in keys if k.startswith("log/") and k.endswith(".seg.000000000000-" + k[-12:]))
    if damage == "flip":
        data = bytearray(_get(url, victim))
        data[300] ^= 0x20
        _put(url, victim, bytes(data))
    elif damage == "truncate":
        _put(url, victim, _get(url, victim)[:-10])
    elif damage in ("delete", "old-manifest-object"):
        _delete(url, victim)
    else:
        victim = max(k for k in keys if k.startswith("manifests/"))
        _put(url, victim, _get(url, victim).replace(b'"head": ', b'"head":  '))
    checked = verify_backup(url)
    assert checked.exit_code == 4
    expected = {"flip": "backup-hash-mismatch", "truncate": "backup-hash-mismatch", "delete": "backup-file-missing",
                "manifest": "backup-manifest-mismatch", "old-manifest-object": "backup-file-missing"}[damage]
    assert any(f.code == expected and f.path == victim for f in checked.problems), checked.problems
    if damage == "old-manifest-object":
        assert restore(url, str(tmp_path / "r")).exit_code == 0  # the newest manifest is whole
        return
    if damage == "flip":  # the command line says the same with its exit codes
        assert cli("verify-backup", url).returncode == 4
        assert cli("restore", url, str(tmp_path / "r")).returncode == 4
    else:
        assert restore(url, str(tmp_path / "r")).exit_code == 4
    assert not os.path.exists(tmp_path / "r")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


@pytest.mark.parametrize("where", ["inside", "around"])
def test_folder_replica_and_store_inside_one_another_are_refused(tmp_path: Path, where: str) -> None:
    src = str(tmp_path / "outer" / "src") if where == "around" else str(tmp_path / "src")
    fill(src, 3)
    url = str(tmp_path / "src" / "lost-found" / "replica") if where == "inside" else str(tmp_path / "outer")
    before = sorted(os.listdir(os.path.dirname(src)))
    with pytest.raises(InvalidArgument, match="inside one another"):
        replicate(src, url, once=True)
    assert sorted(os.listdir(os.path.dirname(src))) == before
    assert not os.path.exists(os.path.join(src, "lost-found", "replica"))


def _rot_a_body(store: str, events: int) -> None:
    """A store of ``events`` durable events, then one byte of an event's JSON in the middle of
    the head's segment changed (bit rot: the checksums no longer match)."""
    with EventStore(store) as s:
        for i in range(events):
            s.append(Event("T", {"i": i, "note": "hello world"}))
    seg = os.path.join(store, "log", "000000000001.seg")
    data = Path(seg).read_bytes()
    at = data.index(b'"note":"hello world"', len(data.rstrip(b"\0")) // 2) + 9
    fd = os.open(seg, os.O_WRONLY)
    try:
        os.pwrite(fd, b"J", at)
    finally:
        os.close(fd)


def test_damage_in_the_head_segment_is_never_shipped(url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    _rot_a_body(src, 20)
    with pytest.raises(StoreCorrupted, match="damaged"):
        replicate(src, url, once=True)
    assert not [k for k in objects(url) if k.startswith("manifests/")]


def test_damage_in_the_head_segment_is_never_backed_up(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    _rot_a_body(src, 20)
    done = cli("backup", src, str(tmp_path / "bk"))
    assert done.returncode == 4 and "damaged" in done.stderr, done.stdout + done.stderr
    assert not os.path.exists(tmp_path / "bk")


def test_a_bad_restore_is_refused_before_anything_is_downloaded_or_made(url: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 10)
    replicate(src, url, once=True)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(InvalidArgument, match="--to-time"):
        restore(url, str(tmp_path / "deep" / "a" / "b"), to_time="not-a-time")
    with pytest.raises(InvalidArgument, match="inside the store"):
        restore(url, os.path.join(src, "restored"))
    assert sorted(os.listdir(tmp_path)) == before
    assert not [n for n in os.listdir(src) if n.startswith(".tmp") or n == "restored"]


def test_a_regular_file_as_the_replica_is_refused_at_once(tmp_path: Path) -> None:
    src, afile = str(tmp_path / "src"), tmp_path / "afile"
    fill(src, 3)
    afile.write_bytes(b"mine")
    done = cli("replicate", src, str(afile), "--once", timeout=30)  # was: retried for two minutes, then exit 8
    assert done.returncode == 2 and "not a folder" in done.stderr, done.stderr
    assert afile.read_bytes() == b"mine"


def test_a_foreign_folder_is_refused_before_anything_in_it_is_touched(tmp_path: Path) -> None:
    src, other = str(tmp_path / "src"), tmp_path / "other"
    fill(src, 3)
    (other / "sub").mkdir(parents=True)
    (other / "readme.txt").write_text("mine")
    kept = other / "sub" / ".tmp-999999-deadbeef-notes.txt"  # looks like a dead uploader's temp file
    kept.write_text("also mine")
    with pytest.raises(InvalidArgument, match="not part of a replica"):
        replicate(src, str(other), once=True)
    assert kept.read_text() == "also mine" and (other / "readme.txt").read_text() == "mine"


def test_ranges_merged_later_must_still_match_what_was_shipped(tmp_path: Path) -> None:
    # A following replicate merges bytes it shipped rounds ago, re-read from the local disk: if
    # they rotted since, the replica must not swap its good objects for a bad merged one.
    from kroniko_ops.ops.replicate.ship import Replicator

    src, rep = str(tmp_path / "src"), str(tmp_path / "rep")
    with EventStore(src, durable=False, segment_bytes=1 << 20) as store:
        store.append(Event("Tick", {"i": -1}))
        follower = Replicator(src, open_url(rep))
        try:
            follower.open()
            for i in range(7):  # 7 rounds, 7 small ranges
                store.append(Event("Tick", {"i": i, "note": "hello world"}))
                follower.round()
            assert len(follower.current.files["log/000000000001.seg"].objects) == 7
            seg = os.path.join(src, "log", "000000000001.seg")
            at = Path(seg).read_bytes().index(b'"note":"hello world"') + 9
            fd = os.open(seg, os.O_WRONLY)
            try:
                os.pwrite(fd, b"J", at)  # shipped in an earlier round
            finally:
                os.close(fd)
            store.append(Event("Tick", {"i": 7, "note": "hello world"}))  # the 8th small range: a merge
            with pytest.raises(StoreCorrupted, match="changed since they were replicated"):
                follower.round()
        finally:
            follower.close()
    assert verify_backup(rep).exit_code == 0  # the replica as it was: still whole
