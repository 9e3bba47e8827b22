"""verify-backup compares the chain at the head with the manifest's: a manifest whose head chain
was edited, its own checksum recomputed (so that only that comparison can tell), does not verify,
for a store of one segment and for one with sealed segments; and restore refuses it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from backup_helpers import fill

from kroniko_ops.ops.backup import backup, restore, verify_backup
from kroniko_ops.ops.backup.manifest import MANIFEST, parse


def _forge_head_chain(backup_dir: Path) -> None:
    path = backup_dir / MANIFEST
    m = parse(path.read_bytes())
    m.chain = "%064x" % (int(m.chain, 16) ^ (1 << 200))
    os.chmod(path, 0o644)
    path.write_bytes(m.render())  # render() recomputes manifest_sha256


@pytest.mark.parametrize("batches", [7, 40])
def test_a_manifest_naming_another_head_chain_does_not_verify(tmp_path: Path, batches: int) -> None:
    src, made = str(tmp_path / "src"), tmp_path / "full"
    fill(src, batches)
    backup(src, str(made), durable=False)
    assert verify_backup(str(made)).exit_code == 0
    forged = tmp_path / "forged"
    shutil.copytree(made, forged)
    _forge_head_chain(forged)
    assert parse((forged / MANIFEST).read_bytes()).chain != parse((made / MANIFEST).read_bytes()).chain
    report = verify_backup(str(forged))
    assert report.exit_code == 4
    mismatch = [f for f in report.findings if f.code == "backup-chain-mismatch"]
    assert mismatch and "chain at the head differs" in mismatch[0].message
    assert "backup-manifest-mismatch" not in report.counts()  # the checksum itself is right
    target = tmp_path / "restored"
    assert restore(str(forged), str(target)).exit_code == 4
    assert not target.exists()
