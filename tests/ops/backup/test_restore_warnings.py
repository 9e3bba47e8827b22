"""restore refuses only on errors (issue 16 item 13): a backup whose events carry references
that dangle (a warning: the events' business, backed up as they were) restores, and the report
says what the warnings were; before, restore refused it ("the restored store does not check;
nothing was written", exit 4) although backup and verify-backup were clean. A store's reference
fields, recorded in FORMAT at init, travel with its backups."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kroniko_ops import Event, EventStore, backup, fsck, restore, verify_backup

CLI = [sys.executable, "-c", "from kroniko_ops.cli import main; main()"]


def test_warnings_never_block_a_restore(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    with EventStore(src, durable=False) as store:
        store.append([Event("Paid", {"i": i}, [], {"causation_id": f"cmd-{i}"}) for i in range(5)])
    assert fsck(src).exit_code == 4  # five dangling-reference warnings
    backup(src, str(tmp_path / "b"), durable=False)
    assert verify_backup(str(tmp_path / "b")).exit_code == 0
    report = restore(str(tmp_path / "b"), str(tmp_path / "dst"), durable=False)
    assert report.exit_code == 0, report.findings
    [summary] = [f for f in report.findings if f.code == "restore-warnings"]
    assert "dangling-reference x5" in summary.message
    assert sum(f.code == "restore-dangling-reference" for f in report.findings) == 5
    with EventStore(str(tmp_path / "dst")) as restored:
        assert restored.head() == 5


def test_init_records_reference_fields_that_travel_with_backups(tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    done = subprocess.run([*CLI, "init", src, "--ref-field", "metadata.correlation_id"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with EventStore(src, durable=False) as store:
        store.append(Event("A", 1, [], {"correlation_id": "req-9"}))
    done = subprocess.run([*CLI, "fsck", src, "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 4 and '"dangling-reference"' in done.stdout
    assert subprocess.run([*CLI, "backup", src, str(tmp_path / "b")], capture_output=True, timeout=60).returncode == 0
    done = subprocess.run([*CLI, "restore", str(tmp_path / "b"), str(tmp_path / "dst"), "--json"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["exit_code"] == 0
    assert "ref_fields=metadata.correlation_id" in Path(tmp_path, "dst", "FORMAT").read_text()
    done = subprocess.run([*CLI, "init", str(tmp_path / "pg"), "--ref-field", "correlation_id"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and not (tmp_path / "pg").exists()
