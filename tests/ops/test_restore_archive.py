"""Hostile archives: restore refuses them before extracting anything, and writes nothing outside."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from backup_helpers import fill

from kroniko_ops import backup, restore, verify_backup
from kroniko_ops.ops.archive import UnsafeArchive


def _hostile(path: Path, good: Path, add: Callable[[tarfile.TarFile], None], first: bool = True) -> None:
    """A copy of the valid archive ``good`` with hostile members added before (or after) the rest."""
    with tarfile.open(good) as src, tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as out:
        if first:
            add(out)
        for m in src.getmembers():
            out.addfile(m, src.extractfile(m) if m.isreg() else None)
        if not first:
            add(out)


def _file(name: str, data: bytes = b"pwned") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return add


def _special(name: str, kind: bytes, link: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 1, 3
        tar.addfile(info)
    return add


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A valid archive, an outside folder to watch, and the parent folder of the target."""
    src = tmp_path / "src"
    fill(str(src), 3)
    good = tmp_path / "good.tar"
    backup(str(src), str(good), archive=True, durable=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("original")
    place = tmp_path / "place"
    place.mkdir()
    return {"good": good, "outside": outside, "place": place, "tmp": tmp_path}


CASES = {
    "traversal": (_file("../outside/victim.txt"), "'..'"),
    "deep-traversal": (_file("events/../../outside/x.json"), "'..'"),
    "absolute": (_file("/tmp/kroniko-absolute-victim.txt"), "absolute"),
    "symlink-out": (_special("events/evil.json", tarfile.SYMTYPE, "../../outside/victim.txt"), "symbolic link"),
    "symlink-dir": (_special("index", tarfile.SYMTYPE, "/etc"), "symbolic link"),
    "hardlink": (_special("events/hard.json", tarfile.LNKTYPE, "FORMAT"), "hard link"),
    "char-device": (_special("events/dev.json", tarfile.CHRTYPE), "character device"),
    "block-device": (_special("events/blk.json", tarfile.BLKTYPE), "block device"),
    "fifo": (_special("events/fifo.json", tarfile.FIFOTYPE), "FIFO"),
    "unknown-name": (_file("bin/sh"), "not part of a backup's layout"),
    "duplicate": (_file("FORMAT"), "twice"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("first", [True, False], ids=["before", "after"])
def test_hostile_members_are_refused_before_anything_is_written(world: dict[str, Path], case: str,
                                                                first: bool) -> None:
    add, words = CASES[case]
    archive = world["tmp"] / "evil.tar"
    _hostile(archive, world["good"], add, first)
    target = world["place"] / "target"
    with pytest.raises(UnsafeArchive, match=words) as info:
        restore(str(archive), str(target), durable=False)
    assert info.value.exit_code == 2
    assert os.listdir(world["place"]) == []
    assert (world["outside"] / "victim.txt").read_text() == "original"
    assert sorted(os.listdir(world["outside"])) == ["victim.txt"]
    assert not os.path.exists("/tmp/kroniko-absolute-victim.txt")
    assert verify_backup(str(archive)).exit_code == 4


def test_a_huge_member_is_refused_without_reading_it(world: dict[str, Path]) -> None:
    """A header claiming a terabyte-sized event (the data is not even there)."""
    archive = world["tmp"] / "huge.tar"
    good = world["good"].read_bytes()
    with tarfile.open(world["good"]) as tar:
        names = tar.getnames()
    info = tarfile.TarInfo("events/" + "h" * 10 + ".json")
    info.size = 1 << 40
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    archive.write_bytes(header + good)
    target = world["place"] / "target"
    with pytest.raises(UnsafeArchive):
        restore(str(archive), str(target), durable=False)
    assert os.listdir(world["place"]) == []
    # and a member whose size disagrees with the manifest, placed inside an otherwise valid archive
    size_lie = world["tmp"] / "lie.tar"
    with tarfile.open(world["good"]) as src, tarfile.open(size_lie, "w", format=tarfile.PAX_FORMAT) as out:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
            if m.name == "FORMAT":
                data += b"\0" * 100_000
                m.size = len(data)
            out.addfile(m, io.BytesIO(data) if m.isreg() else None)
    with pytest.raises(UnsafeArchive, match="manifest says"):
        restore(str(size_lie), str(target), durable=False)
    assert os.listdir(world["place"]) == [] and "FORMAT" in names


def test_not_a_tar_is_a_clear_error(world: dict[str, Path]) -> None:
    bad = world["tmp"] / "bad.tar"
    bad.write_bytes(b"\x1f\x8b" + os.urandom(3000))
    with pytest.raises(UnsafeArchive, match="not a readable uncompressed tar"):
        restore(str(bad), str(world["place"] / "t"), durable=False)
    assert os.listdir(world["place"]) == []


def test_a_valid_archive_restores_inside_the_target_only(world: dict[str, Path]) -> None:
    target = world["place"] / "target"
    report = restore(str(world["good"]), str(target), durable=False)
    assert report.exit_code == 0
    assert os.listdir(world["place"]) == ["target"]
    assert not (target / ".restore-staging").exists()
    assert not (target / "MANIFEST.json").exists()
