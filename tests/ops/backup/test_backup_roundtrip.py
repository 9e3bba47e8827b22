"""Backup then restore gives back the store: every event, the index, appends afterwards; full
and incremental, folder and archive, with some segments compacted into packs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from backup_helpers import contents, fill, head, tagged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops import Event, EventStore, InvalidArgument, compact
from kroniko_ops.ops.backup import backup, restore, verify_backup
from kroniko_ops.ops.backup.manifest import MANIFEST, parse

# one step: append that many batches, then maybe compact, then maybe take a backup
STEPS = st.lists(st.tuples(st.integers(0, 25), st.booleans(), st.booleans()), min_size=1, max_size=4)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, archive=st.booleans())
def test_restore_of_the_last_backup_gives_back_every_event(steps: list[tuple[int, bool, bool]], archive: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        start, backups = 0, []
        for i, (batches, pack, take) in enumerate(steps):
            fill(src, batches, start)
            start += batches
            if pack:
                assert compact(src, durable=False).exit_code == 0
            if take or i == len(steps) - 1:
                dest = os.path.join(tmp, f"b{i}" + (".tar" if archive else ""))
                report = backup(src, dest, archive=archive, durable=False,
                                incremental_from=backups[-1] if backups else None)
                assert report.exit_code == 0
                assert report.head == head(src)
                backups.append(dest)
        assert verify_backup(backups[-1]).exit_code == 0
        target = os.path.join(tmp, "restored")
        report = restore(backups[-1], target, durable=False)
        assert report.exit_code == 0, [(f.code, f.message) for f in report.findings]
        assert contents(target) == contents(src)
        assert tagged(target, "cart:1") == tagged(src, "cart:1")
        with EventStore(target) as s:
            pos = s.append(Event("After", {"x": 1}, ["cart:1"]))
        assert pos == head(src) + 1
        assert contents(target)[:-1] == contents(src)
        assert tagged(target, "cart:1")[-1] == pos


def test_incremental_copies_only_the_new_immutable_files(tmp_path: Path) -> None:
    src, base, inc = str(tmp_path / "src"), str(tmp_path / "base"), str(tmp_path / "inc")
    fill(src, 60)
    backup(src, base, durable=False)
    fill(src, 30, start=60)
    report = backup(src, inc, incremental_from=base, durable=False)
    with open(os.path.join(base, MANIFEST), "rb") as f:
        base_m = parse(f.read())
    with open(os.path.join(inc, MANIFEST), "rb") as f:
        inc_m = parse(f.read())
    held = set(inc_m.held())
    referenced = {rel for rel, e in inc_m.files.items() if e.in_base}
    # every file the base has with the same bytes is referenced, never copied again
    for rel, e in inc_m.files.items():
        same = rel in base_m.files and (base_m.files[rel].size, base_m.files[rel].sha256) == (e.size, e.sha256)
        assert (rel in referenced) == (same and rel != "FORMAT" and rel != inc_m.active), rel
    assert referenced and held
    assert all(not os.path.exists(os.path.join(inc, rel)) for rel in referenced)
    assert report.figures["referenced"] == len(referenced)
    assert inc_m.base is not None and inc_m.base.manifest_sha256 == base_m.checksum
    target = str(tmp_path / "r")
    assert restore(inc, target, durable=False).exit_code == 0
    assert contents(target) == contents(src)


def test_incremental_after_compaction_and_a_chain_of_three(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 40)
    chain = [str(tmp_path / "b0.tar")]
    backup(src, chain[0], archive=True, durable=False)
    for i in (1, 2):
        fill(src, 20, start=20 + 20 * i)
        assert compact(src, durable=False).exit_code == 0
        chain.append(str(tmp_path / f"b{i}"))
        backup(src, chain[-1], incremental_from=chain[-2], durable=False)
    report = verify_backup(chain[-1])
    assert report.exit_code == 0
    assert report.counts().get("backup-base") == 2
    target = str(tmp_path / "r")
    assert restore(chain[-1], target, durable=False).exit_code == 0
    assert contents(target) == contents(src)


def test_empty_store_backs_up_and_restores(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    EventStore(src).close()
    backup(src, str(tmp_path / "b"), durable=False)
    assert verify_backup(str(tmp_path / "b")).exit_code == 0
    assert restore(str(tmp_path / "b"), str(tmp_path / "r"), durable=False).exit_code == 0
    with EventStore(str(tmp_path / "r")) as s:
        assert s.head() == 0
        assert s.append(Event("A")) == 1


def test_backup_is_durable_by_default_and_dest_is_only_the_finished_backup(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 10)
    dest = tmp_path / "empty-dest"
    dest.mkdir()  # an empty folder is fine
    assert backup(src, str(dest)).exit_code == 0
    assert sorted(os.listdir(dest)) == ["FORMAT", MANIFEST, "log", "packs"]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == []
    target = tmp_path / "r"
    assert restore(str(dest), str(target)).exit_code == 0
    assert "index" in os.listdir(target)
    shutil.rmtree(target)


def test_a_base_from_another_store_or_a_non_backup_is_refused(tmp_path: Path) -> None:
    src, other = str(tmp_path / "src"), str(tmp_path / "other")
    fill(src, 20)
    fill(other, 25)
    backup(other, str(tmp_path / "ob"), durable=False)
    with pytest.raises(InvalidArgument, match="not a backup of this store"):
        backup(src, str(tmp_path / "inc"), incremental_from=str(tmp_path / "ob"), durable=False)
    with pytest.raises(InvalidArgument, match="no backup there"):
        backup(src, str(tmp_path / "inc"), incremental_from=src, durable=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InvalidArgument, match="not an empty folder"):
        backup(src, str(tmp_path / "full"), durable=False)
    assert sorted(os.listdir(tmp_path)) == ["full", "ob", "other", "src"]
