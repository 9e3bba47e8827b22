"""Point-in-time restore: any batch boundary (in a pack, a sealed segment or the active one)
gives exactly the events up to it, and the restored store appends from there; a position
inside a batch, past the head, or a non-empty target is refused with nothing created."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from backup_helpers import contents, fill, tagged
from click.testing import CliRunner

from kroniko_ops import Event, EventStore, compact
from kroniko_ops.cli import cli
from kroniko_ops.errors import InvalidArgument
from kroniko_ops.ops.backup import backup, restore


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    root = tmp_path_factory.mktemp("pit")
    src = str(root / "src")
    ends = fill(src, 40)
    assert compact(src, durable=False).exit_code == 0
    ends += fill(src, 40, start=40)
    backup(src, str(root / "b"), durable=False)
    backup(src, str(root / "b.tar"), archive=True, durable=False)
    return root, ends


def test_every_kind_of_container_is_cut_at_a_boundary(made: tuple[Path, list[int]], tmp_path: Path) -> None:
    root, ends = made
    src = str(root / "src")
    packed = max(int(n.split("-")[1].split(".")[0]) for n in os.listdir(root / "b" / "packs"))
    segs = sorted(int(n[:12]) for n in os.listdir(root / "b" / "log") if n.endswith(".seg"))
    sealed_end = segs[1] - 1  # the last position of the first sealed segment after the pack
    # a boundary inside the pack, the pack's end, a sealed segment's end, one inside a sealed
    # segment, one inside the active segment, the head, zero
    cuts = sorted({0, ends[3], packed, sealed_end, next(e for e in ends if e > packed + 20),
                   next(e for e in ends if e > segs[-1]), ends[-1]})
    assert len(cuts) == 7 and segs[0] == packed + 1
    for backup_name in ("b", "b.tar"):
        for cut in cuts:
            target = tmp_path / f"{backup_name}-{cut}"
            report = restore(str(root / backup_name), str(target), to_position=cut, durable=False)
            assert report.exit_code == 0 and report.head == cut
            assert contents(str(target)) == contents(src, cut)
            assert tagged(str(target), "cart:2") == [p for p in tagged(src, "cart:2") if p <= cut]
            with EventStore(str(target)) as s:
                assert s.append([Event("Next", {"i": i}, ["cart:2"]) for i in range(3)]) == cut + 3
            assert tagged(str(target), "cart:2")[-3:] == [cut + 1, cut + 2, cut + 3]


def test_a_position_inside_a_batch_is_refused_and_nothing_is_created(made: tuple[Path, list[int]],
                                                                     tmp_path: Path) -> None:
    root, ends = made
    inside = [(a, e - 1, e) for a, e in itertools.pairwise(ends) if e - a > 1]
    assert len(inside) > 10
    for before, pos, after in (inside[0], inside[len(inside) // 2], inside[-1]):
        for backup_name in ("b", "b.tar"):
            target = tmp_path / "t"
            # the message names the nearest positions a restore accepts: the batch ends around pos
            with pytest.raises(InvalidArgument, match=f"inside a batch.* --to-position {before} .* "
                                                      f"--to-position {after} "):
                restore(str(root / backup_name), str(target), to_position=pos, durable=False)
            assert not target.exists()
            assert os.listdir(tmp_path) == []
    with pytest.raises(InvalidArgument, match="past the backup's head"):
        restore(str(root / "b"), str(tmp_path / "t"), to_position=ends[-1] + 1, durable=False)
    assert os.listdir(tmp_path) == []


def test_a_non_empty_target_is_refused(made: tuple[Path, list[int]], tmp_path: Path) -> None:
    root, _ends = made
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidArgument, match="not an empty folder"):
        restore(str(root / "b"), str(tmp_path / "t"), durable=False)
    assert os.listdir(tmp_path / "t") == ["keep.txt"]


def test_cli_exit_codes(made: tuple[Path, list[int]], tmp_path: Path) -> None:
    root, ends = made
    runner = CliRunner()
    inside = next(e - 1 for a, e in itertools.pairwise(ends) if e - a > 1)
    got = runner.invoke(cli, ["restore", str(root / "b"), str(tmp_path / "t"), "--to-position", str(inside)])
    assert got.exit_code == 2 and "inside a batch" in got.output
    assert not (tmp_path / "t").exists()
    got = runner.invoke(cli, ["restore", str(root / "b"), str(tmp_path / "t"), "--to-position", str(ends[5]),
                              "--json"])
    assert got.exit_code == 0, got.output
    assert f'"head":{ends[5]}' in got.output.splitlines()[-1]
    got = runner.invoke(cli, ["backup", str(root / "src"), str(tmp_path / "t")])
    assert got.exit_code == 2
    got = runner.invoke(cli, ["backup", str(root / "src"), str(tmp_path / "b2"), "--archive", "--json"])
    assert got.exit_code == 0, got.output
    got = runner.invoke(cli, ["backup", str(root / "src"), str(tmp_path / "b3"), "--incremental-from",
                              str(tmp_path / "b2")])
    assert got.exit_code == 0, got.output
    got = runner.invoke(cli, ["verify-backup", str(tmp_path / "b3"), "--json"])
    assert got.exit_code == 0, got.output
    assert '"kind":"summary"' in got.output
