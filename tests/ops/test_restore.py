"""restore: verified first, never over existing data, chains of incrementals, point in time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import pytest
from backup_helpers import fill, problems, same_prefix, tree_digest
from click.testing import CliRunner

from kroniko_ops import EventStore, InvalidArgument, backup, restore, verify_backup
from kroniko_ops.cli import cli
from kroniko_ops.log import LINE_LEN


@pytest.fixture
def chain(tmp_path: Path) -> dict[str, object]:
    """A source store and three backups of it: full, then two incrementals (heads h0 < h1 < h2)."""
    src = str(tmp_path / "src")
    h0 = fill(src, 6)
    backup(src, str(tmp_path / "full"), durable=False)
    h1 = fill(src, 5, start=6)
    backup(src, str(tmp_path / "inc1.tar"), incremental_from=str(tmp_path / "full"), archive=True, durable=False)
    h2 = fill(src, 5, start=11)
    backup(src, str(tmp_path / "inc2"), incremental_from=str(tmp_path / "inc1.tar"), durable=False)
    fill(src, 2, start=16)  # appended after the last backup: never restored
    return {"src": src, "heads": (h0, h1, h2), "tmp": tmp_path}


def _boundaries(src: str, upto: int) -> list[int]:
    with open(os.path.join(src, "log", "append.log"), "rb") as f:
        raw = f.read(upto * LINE_LEN)
    return [p for p in range(1, upto + 1) if raw[(p - 1) * LINE_LEN + 208 : (p - 1) * LINE_LEN + 209] == b"C"]


def test_an_incremental_chain_restores_to_every_point(chain: dict[str, object]) -> None:
    src, (h0, h1, h2), tmp = chain["src"], chain["heads"], chain["tmp"]
    assert isinstance(src, str) and isinstance(tmp, Path)
    points = [0, 1, h0, h0 + 1, h1, h2, *_boundaries(src, h2)[::4]]
    for i, point in enumerate(sorted(set(points))):
        if point and point not in _boundaries(src, h2):
            continue
        target = str(tmp / f"r{i}")
        report = restore(str(tmp / "full"), target, point, incrementals=[str(tmp / "inc1.tar"), str(tmp / "inc2")],
                         durable=False)
        assert report.exit_code == 0 and report.head == point
        same_prefix(src, target, point)
        assert problems(target) == []


def test_restoring_the_last_incremental_finds_its_bases(chain: dict[str, object]) -> None:
    src, (_h0, _h1, h2), tmp = chain["src"], chain["heads"], chain["tmp"]
    assert isinstance(src, str) and isinstance(tmp, Path)
    report = restore(str(tmp / "inc2"), str(tmp / "r"), durable=True)
    assert report.exit_code == 0 and report.figures["backups"][-1] == str(tmp / "inc2")
    assert len(report.figures["backups"]) == 3
    same_prefix(src, str(tmp / "r"), h2)
    # the restored store is a live store: it takes appends after the restored head
    with EventStore(str(tmp / "r")) as r:
        from kroniko_ops import Event

        assert r.append(Event("After", 1)) == h2 + 1
    assert problems(str(tmp / "r")) == []


def test_incrementals_out_of_order_or_with_a_missing_base_are_refused(chain: dict[str, object]) -> None:
    tmp = chain["tmp"]
    assert isinstance(tmp, Path)
    report = restore(str(tmp / "full"), str(tmp / "r"), incrementals=[str(tmp / "inc2")], durable=False)
    assert report.exit_code == 4 and "backup-base-mismatch" in report.counts()
    shutil.move(str(tmp / "full"), str(tmp / "moved"))
    report = restore(str(tmp / "inc2"), str(tmp / "r"), durable=False)
    assert report.exit_code == 4 and "backup-base-missing" in report.counts()
    assert not (tmp / "r").exists()
    assert not [n for n in os.listdir(tmp) if n.startswith(".tmp-")]
    # given explicitly, the moved base works
    report = restore(str(tmp / "moved"), str(tmp / "r"), incrementals=[str(tmp / "inc1.tar"), str(tmp / "inc2")],
                     durable=False)
    assert report.exit_code == 0


def test_a_damaged_backup_is_refused_and_nothing_is_written(chain: dict[str, object]) -> None:
    tmp = chain["tmp"]
    assert isinstance(tmp, Path)
    log = tmp / "inc2" / "log" / "increment.log"
    os.chmod(log, 0o644)
    data = bytearray(log.read_bytes())
    data[5] ^= 1
    log.write_bytes(bytes(data))
    report = restore(str(tmp / "inc2"), str(tmp / "r"), durable=False)
    assert report.exit_code == 4 and "backup-hash-mismatch" in report.counts()
    assert not (tmp / "r").exists()
    assert not [n for n in os.listdir(tmp) if n.startswith(".tmp-")]
    # restoring the undamaged part still works
    assert restore(str(tmp / "full"), str(tmp / "r"), incrementals=[str(tmp / "inc1.tar")],
                   durable=False).exit_code == 0


def test_restore_refuses_a_non_empty_target_and_touches_nothing(chain: dict[str, object]) -> None:
    tmp = chain["tmp"]
    assert isinstance(tmp, Path)
    target = tmp / "busy"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    before = tree_digest(str(target))
    with pytest.raises(InvalidArgument, match="not an empty folder"):
        restore(str(tmp / "full"), str(target), durable=False)
    (tmp / "afile").write_text("x")
    with pytest.raises(InvalidArgument):
        restore(str(tmp / "full"), str(tmp / "afile"), durable=False)
    # an existing live store is the classic mistake
    with pytest.raises(InvalidArgument):
        restore(str(tmp / "full"), str(chain["src"]), durable=False)
    assert tree_digest(str(target)) == before
    # an empty folder is fine
    (tmp / "empty").mkdir()
    assert restore(str(tmp / "full"), str(tmp / "empty"), durable=False).exit_code == 0


def test_a_position_inside_a_batch_or_past_the_chain_is_refused(chain: dict[str, object]) -> None:
    src, (_h0, _h1, h2), tmp = chain["src"], chain["heads"], chain["tmp"]
    assert isinstance(src, str) and isinstance(tmp, Path)
    inside = next(p for p in range(1, h2) if p not in _boundaries(src, h2))
    with pytest.raises(InvalidArgument, match="inside a batch"):
        restore(str(tmp / "inc2"), str(tmp / "r"), inside, durable=False)
    with pytest.raises(InvalidArgument, match="past the last backup"):
        restore(str(tmp / "inc2"), str(tmp / "r"), h2 + 1, durable=False)
    with pytest.raises(InvalidArgument):
        restore(str(tmp / "inc2"), str(tmp / "r"), -1, durable=False)
    assert not (tmp / "r").exists()


def test_dry_run_verifies_and_writes_nothing(chain: dict[str, object]) -> None:
    tmp, (_h0, h1, _h2) = chain["tmp"], chain["heads"]
    assert isinstance(tmp, Path)
    before = sorted(os.listdir(tmp))
    report = restore(str(tmp / "inc2"), str(tmp / "r"), h1, dry_run=True, durable=False)
    assert report.exit_code == 0 and report.head == h1 and "restore-dry-run" in report.counts()
    assert sorted(os.listdir(tmp)) == before


def test_cli_backup_verify_restore_round_trip(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    head = fill(src, 4)
    runner = CliRunner()
    res = runner.invoke(cli, ["backup", src, str(tmp_path / "b.tar"), "--archive", "--json"])
    assert res.exit_code == 0, res.output
    summary = orjson.loads(res.output.splitlines()[-1])
    assert summary["kind"] == "summary" and summary["head"] == head and summary["exit_code"] == 0
    res = runner.invoke(cli, ["verify-backup", str(tmp_path / "b.tar")])
    assert res.exit_code == 0 and "clean" in res.output
    res = runner.invoke(cli, ["restore", str(tmp_path / "b.tar"), str(tmp_path / "r"), "--json"])
    assert res.exit_code == 0, res.output
    same_prefix(src, str(tmp_path / "r"), head)
    res = runner.invoke(cli, ["restore", str(tmp_path / "b.tar"), str(tmp_path / "r")])
    assert res.exit_code == 2 and "not an empty folder" in res.output
    res = runner.invoke(cli, ["backup", src, str(tmp_path / "r")])
    assert res.exit_code == 2
    with open(tmp_path / "b.tar", "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 1]))
    res = runner.invoke(cli, ["verify-backup", str(tmp_path / "b.tar"), "--json"])
    assert res.exit_code == 4
    lines = [orjson.loads(x) for x in res.output.splitlines()]
    assert lines[-1]["kind"] == "summary" and any(x["kind"] == "finding" for x in lines)
    res = runner.invoke(cli, ["restore", str(tmp_path / "b.tar"), str(tmp_path / "r2")])
    assert res.exit_code == 4 and not (tmp_path / "r2").exists()
    res = runner.invoke(cli, ["verify-backup", str(tmp_path / "missing")])
    assert res.exit_code == 8
    res = runner.invoke(cli, ["restore", str(tmp_path / "missing"), str(tmp_path / "r3")])
    assert res.exit_code == 8


@pytest.mark.parametrize("checker", ["fsck", "own"])
def test_a_backup_whose_index_disagrees_with_its_events_restores_with_a_rebuilt_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checker: str) -> None:
    """The index is derived: a backup made from a store whose index had lost a line (its files
    still match the manifest) restores clean, its index rebuilt from the events."""
    import hashlib

    from kroniko_ops.ops import restore as restore_mod
    from kroniko_ops.ops.manifest import FileEntry, parse

    if checker == "own":
        monkeypatch.setattr(restore_mod, "_fsck_function", lambda: None)
    src = str(tmp_path / "src")
    head = fill(src, 6)
    dest = tmp_path / "b"
    backup(src, str(dest), durable=False)
    pos = dest / "index" / "types" / "A.pos"
    data = pos.read_bytes()[13:]  # drop the first position listed for type A
    pos.write_bytes(data)
    m = parse((dest / "MANIFEST.json").read_bytes())
    m.files["index/types/A.pos"] = FileEntry(len(data), hashlib.sha256(data).hexdigest())
    (dest / "MANIFEST.json").write_bytes(m.render())
    assert verify_backup(str(dest)).exit_code == 0  # a consistent backup of a bad index
    report = restore(str(dest), str(tmp_path / "r"), durable=False)
    assert report.exit_code == 0 and "restore-index-rebuilt" in report.counts()
    same_prefix(src, str(tmp_path / "r"), head)
    assert problems(str(tmp_path / "r")) == []
    with EventStore(str(tmp_path / "r")) as r:
        from kroniko_ops import Query, QueryItem

        assert len(list(r.read(Query([QueryItem(types=["A"])])))) == len(list(EventStore(src).read(
            Query([QueryItem(types=["A"])]))))
