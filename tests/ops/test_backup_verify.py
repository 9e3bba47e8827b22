"""verify-backup catches every change: each byte of a backup, missing and extra files, bases."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from backup_helpers import fill
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops import EventStore, StoreNotFound, backup, verify_backup


def _codes(path: str, **kwargs: object) -> set[str]:
    report = verify_backup(path, **kwargs)  # type: ignore[arg-type]
    return {f.code for f in report.problems}


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_every_single_byte_change_to_a_backup_folder_is_caught(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 2)
    dest = tmp_path / "b"
    backup(src, str(dest), durable=False)
    assert verify_backup(str(dest)).exit_code == 0
    checked = 0
    for path in _files(dest):
        original = path.read_bytes()
        os.chmod(path, 0o644)
        for i in range(len(original)):
            for flip in (0x01, 0x80):
                changed = bytearray(original)
                changed[i] ^= flip
                path.write_bytes(bytes(changed))
                report = verify_backup(str(dest))
                assert report.exit_code == 4, f"{path.relative_to(dest)} byte {i} ^ {flip:#x} went unnoticed"
                checked += 1
        path.write_bytes(original)
    assert verify_backup(str(dest)).exit_code == 0
    assert checked > 4000


def test_every_single_byte_change_to_an_incremental_is_caught(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 2)
    backup(src, str(tmp_path / "full"), durable=False)
    fill(src, 1, start=2)
    dest = tmp_path / "inc"
    backup(src, str(dest), incremental_from=str(tmp_path / "full"), durable=False)
    for path in _files(dest):
        original = path.read_bytes()
        os.chmod(path, 0o644)
        for i in range(len(original)):
            changed = bytearray(original)
            changed[i] ^= 0x04
            path.write_bytes(bytes(changed))
            assert verify_backup(str(dest)).exit_code == 4, f"{path.relative_to(dest)} byte {i}"
        path.write_bytes(original)


@pytest.fixture(scope="module")
def archive_backup(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("arch")
    fill(str(root / "src"), 2)
    backup(str(root / "src"), str(root / "b.tar"), archive=True, durable=False)
    return (root / "b.tar").read_bytes()


def _check_archive_byte(tmp: Path, original: bytes, i: int, value: int) -> None:
    if original[i] == value:
        return
    changed = bytearray(original)
    changed[i] = value
    path = tmp / f"b-{os.getpid()}.tar"
    path.write_bytes(bytes(changed))
    try:
        assert verify_backup(str(path)).exit_code == 4, f"byte {i} set to {value} went unnoticed"
    finally:
        path.unlink()


def test_single_byte_changes_across_a_backup_archive_are_caught(tmp_path: Path, archive_backup: bytes) -> None:
    """Every 7th byte, and every byte of the first header and of the end blocks (headers, data,
    padding and end-of-archive blocks are all checked)."""
    n = len(archive_backup)
    positions = sorted(set(range(0, n, 7)) | set(range(0, 1024)) | set(range(n - 1024, n)))
    for i in positions:
        _check_archive_byte(tmp_path, archive_backup, i, archive_backup[i] ^ 0x20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_byte_of_a_backup_archive_set_to_any_value_is_caught(tmp_path: Path, archive_backup: bytes,
                                                                 data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(archive_backup) - 1))
    value = data.draw(st.integers(0, 255))
    _check_archive_byte(tmp_path, archive_backup, i, value)


def test_missing_and_extra_files_are_named(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 3)
    dest = tmp_path / "b"
    backup(src, str(dest), durable=False)
    event = next((dest / "events").iterdir())
    os.rename(event, tmp_path / "moved.json")
    (dest / "events" / "stray.json").write_text("{}")
    (dest / "extra.txt").write_text("x")
    report = verify_backup(str(dest))
    found = {(f.code, f.path) for f in report.problems}
    assert ("backup-file-missing", f"events/{event.name}") in found
    assert ("backup-file-extra", "events/stray.json") in found
    assert ("backup-file-extra", "extra.txt") in found
    assert report.exit_code == 4


def test_a_lock_file_from_opening_the_backup_is_only_a_note(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 3)
    backup(src, str(tmp_path / "b"), durable=False)
    (tmp_path / "b" / "locks" / "append.lock").write_bytes(b"")
    report = verify_backup(str(tmp_path / "b"))
    assert report.exit_code == 0 and "backup-file-extra" in report.counts()


def test_a_manifest_edit_that_keeps_valid_json_is_caught(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 3)
    dest = tmp_path / "b"
    backup(src, str(dest), durable=False)
    manifest = dest / "MANIFEST.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"kind": "full"', '"kind":  "full"'))
    assert _codes(str(dest)) == {"backup-manifest-mismatch"}
    manifest.write_text(text.replace("\n", "\r\n"))
    assert _codes(str(dest)) == {"backup-manifest-mismatch"}
    manifest.unlink()
    assert _codes(str(dest)) == {"backup-file-missing"}


def test_a_backup_whose_log_was_rewritten_consistently_fails_the_chain(tmp_path: Path) -> None:
    """Even when manifest and files agree (a forged or buggy backup), the log must chain."""
    from kroniko_ops.ops.manifest import FileEntry, parse

    src = str(tmp_path / "src")
    fill(src, 4)
    dest = tmp_path / "b"
    backup(src, str(dest), durable=False)
    log = dest / "log" / "append.log"
    raw = bytearray(log.read_bytes())
    raw[219 + 100] = ord("0") if raw[219 + 100] != ord("0") else ord("1")  # event hash of position 2
    os.chmod(log, 0o644)
    log.write_bytes(bytes(raw))
    m = parse((dest / "MANIFEST.json").read_bytes())
    import hashlib

    m.files["log/append.log"] = FileEntry(len(raw), hashlib.sha256(bytes(raw)).hexdigest())
    (dest / "MANIFEST.json").write_bytes(m.render())
    report = verify_backup(str(dest))
    assert "backup-chain-mismatch" in report.counts()
    assert any(f.position == 2 for f in report.problems)


def test_an_incremental_whose_base_is_missing_or_different_is_refused(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 3)
    backup(src, str(tmp_path / "full"), durable=False)
    fill(src, 2, start=3)
    backup(src, str(tmp_path / "inc"), incremental_from=str(tmp_path / "full"), durable=False)
    shutil.move(str(tmp_path / "full"), str(tmp_path / "elsewhere"))
    assert _codes(str(tmp_path / "inc")) == {"backup-base-missing"}
    assert verify_backup(str(tmp_path / "inc"), base=str(tmp_path / "elsewhere")).exit_code == 0
    # another backup of the same store at another head is not the base
    backup(src, str(tmp_path / "full"), durable=False)
    assert _codes(str(tmp_path / "inc")) == {"backup-base-mismatch"}


def test_the_whole_chain_of_bases_must_be_present(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    fill(src, 2)
    backup(src, str(tmp_path / "full"), durable=False)
    fill(src, 2, start=2)
    backup(src, str(tmp_path / "i1"), incremental_from=str(tmp_path / "full"), durable=False)
    fill(src, 2, start=4)
    backup(src, str(tmp_path / "i2.tar"), incremental_from=str(tmp_path / "i1"), archive=True, durable=False)
    assert verify_backup(str(tmp_path / "i2.tar")).exit_code == 0
    shutil.rmtree(tmp_path / "full")
    assert _codes(str(tmp_path / "i2.tar")) == {"backup-base-missing"}


def test_a_missing_backup_is_an_operational_error(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound):
        verify_backup(str(tmp_path / "nothing"))


def test_a_folder_that_is_not_a_backup_fails_verification(tmp_path: Path) -> None:
    EventStore(str(tmp_path / "store")).close()
    assert _codes(str(tmp_path / "store")) == {"backup-file-missing"}
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    assert "backup-archive-corrupt" in _codes(str(tmp_path / "junk.tar"))


def test_the_chain_walk_in_a_child_process_finds_what_the_inline_walk_finds(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from kroniko_ops.ops import backup_chain

    src = str(tmp_path / "src")
    fill(src, 8)
    dest = tmp_path / "b"
    backup(src, str(dest), durable=False)
    (dest / "events" / "stray.json").write_text("{}")
    inline = verify_backup(str(dest))
    monkeypatch.setattr(backup_chain, "FORK_MIN_BYTES", 0)
    forked = verify_backup(str(dest))
    assert [(f.code, f.path) for f in forked.findings] == [(f.code, f.path) for f in inline.findings]
    log = dest / "log" / "append.log"
    os.chmod(log, 0o644)
    raw = bytearray(log.read_bytes())
    raw[219 * 3 + 150] ^= 0x02  # the chain hash of position 4
    log.write_bytes(bytes(raw))
    report = verify_backup(str(dest))
    assert {"backup-chain-mismatch", "backup-hash-mismatch"} <= set(report.counts())
    assert any(f.code == "backup-chain-mismatch" and f.position == 4 for f in report.findings)
