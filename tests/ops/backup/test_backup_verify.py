"""verify-backup catches any damage: a flipped byte in any file, a missing or extra file, an
edited manifest, a missing or different base; and restore refuses such a backup, writing nothing."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import orjson
import pytest
from backup_helpers import fill

from kroniko_ops import compact
from kroniko_ops.ops.backup import backup, restore, verify_backup
from kroniko_ops.ops.backup.manifest import MANIFEST


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a pack, sealed segments and an active one; a full backup and an incremental."""
    root = tmp_path_factory.mktemp("verify")
    src = str(root / "src")
    fill(src, 50)
    assert compact(src, durable=False).exit_code == 0
    fill(src, 30, start=50)
    backup(src, str(root / "full"), durable=False)
    fill(src, 20, start=80)
    backup(src, str(root / "inc"), incremental_from=str(root / "full"), durable=False)
    return root


def _copy(made: Path, tmp_path: Path) -> Path:
    for name in ("full", "inc"):
        shutil.copytree(made / name, tmp_path / name)
    for dirpath, _dirs, files in os.walk(tmp_path):
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return tmp_path


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_intact_backups_verify(made: Path) -> None:
    assert verify_backup(str(made / "full")).exit_code == 0
    report = verify_backup(str(made / "inc"))
    assert report.exit_code == 0
    assert report.counts() == {"backup-base": 1}


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_flipped_byte_in_any_file_is_caught(made: Path, tmp_path: Path, where: str) -> None:
    names = _files(made / "full")
    assert any(n.endswith(".pack") for n in names) and any(n.endswith(".idx") for n in names)
    for rel in names:
        root = _copy(made, tmp_path / rel.replace("/", "_") / where)
        path = root / "full" / rel
        data = bytearray(path.read_bytes())
        i = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
        data[i] ^= 0x01
        path.write_bytes(bytes(data))
        report = verify_backup(str(root / "full"))
        assert report.exit_code == 4, rel
        expected = "backup-manifest-mismatch" if rel == MANIFEST else "backup-hash-mismatch"
        assert expected in report.counts(), (rel, report.counts())
        # the incremental built on it sees its base's damage too
        assert verify_backup(str(root / "inc")).exit_code == 4, rel
        target = root / "restored"
        assert restore(str(root / "full"), str(target), durable=False).exit_code == 4
        assert not target.exists()
        assert [n for n in os.listdir(root) if n.startswith(".tmp-")] == []


def test_a_missing_file_and_an_extra_file_are_caught(made: Path, tmp_path: Path) -> None:
    root = _copy(made, tmp_path)
    victim = next(n for n in _files(root / "full") if n.endswith(".seg"))
    os.unlink(root / "full" / victim)
    report = verify_backup(str(root / "full"))
    assert report.exit_code == 4
    assert "backup-file-missing" in report.counts()
    root2 = _copy(made, tmp_path / "2")
    (root2 / "full" / "log" / "000000099999.seg").write_bytes(b"")
    report = verify_backup(str(root2 / "full"))
    assert "backup-file-extra" in report.counts()


def test_an_edited_manifest_is_caught_even_with_a_recomputed_file_hash(made: Path, tmp_path: Path) -> None:
    root = _copy(made, tmp_path)
    path = root / "full" / MANIFEST
    doc = orjson.loads(path.read_bytes())
    doc["head"] = doc["head"] - 1  # a plausible edit: the checksum no longer matches
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    report = verify_backup(str(root / "full"))
    assert report.counts().get("backup-manifest-mismatch") == 1
    path.write_bytes(path.read_bytes().replace(b'\n  "active"', b'\n   "active"'))  # whitespace only
    assert verify_backup(str(root / "full")).counts().get("backup-manifest-mismatch") == 1


def test_a_missing_or_other_base_is_caught(made: Path, tmp_path: Path) -> None:
    root = _copy(made, tmp_path)
    shutil.rmtree(root / "full")
    report = verify_backup(str(root / "inc"))
    assert report.counts().get("backup-base-missing") == 1
    target = root / "r"
    assert restore(str(root / "inc"), str(target), durable=False).exit_code == 4
    assert not target.exists()
    # another store's backup in the base's place
    other = str(tmp_path / "other")
    fill(other, 90)
    backup(other, str(root / "full"), durable=False)
    assert verify_backup(str(root / "inc")).counts().get("backup-base-mismatch") == 1


def test_archive_damage_is_caught(made: Path, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 30)
    tar = tmp_path / "b.tar"
    backup(src, str(tar), archive=True, durable=False)
    assert verify_backup(str(tar)).exit_code == 0
    with tarfile.open(tar) as t:
        member = next(m for m in t.getmembers() if m.name.endswith(".seg"))
    data = bytearray(tar.read_bytes())
    data[member.offset_data + 3] ^= 0x20  # inside a segment's data
    tar.write_bytes(bytes(data))
    assert "backup-hash-mismatch" in verify_backup(str(tar)).counts()
    data[member.offset_data + 3] ^= 0x20
    data[member.offset + 10] ^= 0x20  # inside a member header
    tar.write_bytes(bytes(data))
    assert verify_backup(str(tar)).exit_code == 4
    tar.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    assert verify_backup(str(tar)).exit_code == 4
