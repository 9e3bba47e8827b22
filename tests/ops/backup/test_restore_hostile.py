"""Hostile archives: restore refuses them before extracting anything, and writes nothing,
neither at the target nor outside it."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from backup_helpers import fill

from kroniko_ops.ops.backup import backup, restore, verify_backup
from kroniko_ops.ops.backup.container import UnsafeArchive


def _rewrite(path: Path, good: Path, add: Callable[[tarfile.TarFile], None], first: bool) -> None:
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


def _huge(tar: tarfile.TarFile) -> None:
    """A member whose header claims far more bytes than the manifest (or the disk) allows."""
    info = tarfile.TarInfo("log/000000999999.seg")
    info.size = 1 << 20
    tar.addfile(info, io.BytesIO(bytes(1 << 20)))


CASES = {
    "traversal": (_file("../outside/victim.txt"), "'..'"),
    "deep-traversal": (_file("log/../../outside/x.seg"), "'..'"),
    "absolute": (_file("/tmp/kroniko-absolute-victim.txt"), "absolute"),
    "symlink-out": (_special("log/000000000777.seg", tarfile.SYMTYPE, "../../outside/victim.txt"), "symbolic link"),
    "symlink-dir": (_special("packs", tarfile.SYMTYPE, "/etc"), "symbolic link"),
    "hardlink": (_special("log/000000000777.seg", tarfile.LNKTYPE, "FORMAT"), "hard link"),
    "char-device": (_special("log/000000000777.seg", tarfile.CHRTYPE), "character device"),
    "block-device": (_special("log/000000000777.seg", tarfile.BLKTYPE), "block device"),
    "fifo": (_special("log/000000000777.seg", tarfile.FIFOTYPE), "FIFO"),
    "unknown-name": (_file("bin/sh"), "not part of a backup's layout"),
    "duplicate": (_file("FORMAT"), "twice"),
    "huge-unlisted": (_huge, "not a file the manifest says"),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    fill(str(root / "src"), 30)
    backup(str(root / "src"), str(root / "good.tar"), archive=True, durable=False)
    return root / "good.tar"


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("first", [True, False], ids=["before", "after"])
def test_hostile_members_are_refused_before_anything_is_written(good: Path, tmp_path: Path, case: str,
                                                                first: bool) -> None:
    add, why = CASES[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("original")
    place = tmp_path / "place"
    place.mkdir()
    bad = tmp_path / "bad.tar"
    _rewrite(bad, good, add, first)
    with pytest.raises(UnsafeArchive, match=why) as exc:
        restore(str(bad), str(place / "target"), durable=False)
    assert exc.value.exit_code == 2
    assert os.listdir(place) == []
    assert os.listdir(outside) == ["victim.txt"]
    assert (outside / "victim.txt").read_text() == "original"
    assert not os.path.lexists("/tmp/kroniko-absolute-victim.txt")
    assert verify_backup(str(bad)).exit_code == 4


def test_a_member_bigger_than_the_manifest_says_is_refused(good: Path, tmp_path: Path) -> None:
    with tarfile.open(good) as src:
        members = src.getmembers()
        seg = next(m for m in members if m.name.endswith(".seg"))
        bad = tmp_path / "bad.tar"
        with tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as out:
            for m in members:
                data = src.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
                if m.name == seg.name:
                    data += bytes(1 << 16)
                    m.size = len(data)
                out.addfile(m, io.BytesIO(data))
    with pytest.raises(UnsafeArchive, match="the manifest says"):
        restore(str(bad), str(tmp_path / "t"), durable=False)
    assert not (tmp_path / "t").exists()


def test_a_file_that_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(UnsafeArchive):
        restore(str(junk), str(tmp_path / "t"), durable=False)
    assert verify_backup(str(junk)).counts().get("backup-archive-corrupt") == 1
    assert not (tmp_path / "t").exists()
