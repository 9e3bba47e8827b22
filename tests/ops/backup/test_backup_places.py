"""backup and restore never write inside what they read, around it, or inside another store or
backup (issue 16 item 4): each such destination is refused with exit 2 and nothing written,
symbolic links resolved first. Before, ``backup S S/log/000000999999.seg`` left a store that
``head`` refused and ``fsck --repair`` could not fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kroniko_ops import Event, EventStore, InvalidArgument, backup, fsck
from kroniko_ops.ops import replicate as replicas
from kroniko_ops.ops.backup import backup_into
from kroniko_ops.ops.replicate import replicate

CLI = [sys.executable, "-c", "from kroniko_ops.cli import main; main()"]


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for folder, dirs, names in os.walk(root):
        for n in dirs + names:
            p = os.path.join(folder, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_mode, b"" if os.path.isdir(p) else Path(p).read_bytes()
                                             if not os.path.islink(p) else os.readlink(p).encode())
    return out


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """``S`` a store, ``B`` its backup, ``T`` another store, ``L`` a link to ``S``."""
    with EventStore(str(tmp_path / "S"), durable=False) as store:
        store.append([Event("A", 1), Event("B", 2)])
    backup(str(tmp_path / "S"), str(tmp_path / "B"), durable=False)
    EventStore(str(tmp_path / "T"), durable=False).close()
    (tmp_path / "L").symlink_to(tmp_path / "S")
    (tmp_path / "LB").symlink_to(tmp_path / "B")
    backup_into(str(tmp_path / "S"), str(tmp_path / "SET"), durable=False)
    assert replicate(str(tmp_path / "S"), str(tmp_path / "R"), once=True).exit_code == 0
    return tmp_path


CASES = [
    ("backup", "S", "S/log/000000999999.seg", False),
    ("backup", "S", "S/bk", False),
    ("backup", "S", "S/lost-found/bk", False),
    ("backup", "S", "S/packs/bk.tar", True),
    ("backup", "S", "L/bk", False),  # a link leading back into the store
    ("backup", "L", "S/bk", False),
    ("backup", "S", "T/log/bk", False),  # inside another store
    ("backup", "S", "B/bk", False),  # inside a backup
    ("backup", "S/log", ".", False),  # the source inside the destination
    ("restore", "B", "S/packs/r", False),
    ("restore", "B", "B/r", False),
    ("restore", "B", "LB/r", False),
    ("restore", "LB", "B/log/r", False),
    ("restore", "B", "T/index/r", False),
    ("restore", "SET", "SET/r", False),  # a backup set's folder, as given
    ("restore", "R", "R/r", False),  # a folder replica
    ("restore", "R", "S/r", False),
    ("restore", "B", "R/r", False),  # inside a folder replica
    ("replicate", "S", "T/rep", False),
    ("replicate", "S", "B/rep", False),
]


@pytest.mark.parametrize("op, source, dest, archive", CASES, ids=[f"{c[0]} {c[1]} {c[2]}" for c in CASES])
def test_a_destination_inside_a_source_or_store_is_refused(place: Path, op: str, source: str, dest: str,
                                                          archive: bool) -> None:
    before = _tree(place)
    src, dst = str(place / source), str(place / dest)
    with pytest.raises(InvalidArgument, match="nothing was written"):
        if op == "backup":
            backup(src, dst, archive=archive, durable=False)
        elif op == "replicate":
            replicate(src, dst, once=True)
        else:
            replicas.restore(src, dst, durable=False)
    assert _tree(place) == before
    for store in ("S", "T"):
        assert fsck(str(place / store)).exit_code == 0


def test_the_command_line_exits_2(place: Path) -> None:
    before = _tree(place)
    for args in (["backup", "S", "S/log/000000999999.seg"], ["restore", "B", "B/r"]):
        done = subprocess.run([*CLI, *args], cwd=place, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "inside" in done.stderr and "Traceback" not in done.stderr
    assert _tree(place) == before
    # A destination beside the store is fine.
    assert subprocess.run([*CLI, "backup", "S", "S-copy"], cwd=place, capture_output=True, timeout=60).returncode == 0
    assert subprocess.run([*CLI, "restore", "S-copy", "S2"], cwd=place, capture_output=True, timeout=60).returncode == 0
