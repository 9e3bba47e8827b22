"""fsck over a big dense pack: its walk is shared by the workers (the pack cut at block
boundaries), with the same report as one process, and damage in any piece found where it is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kroniko_ops import Event, EventStore, fsck
from kroniko_ops.format import pack as packfmt
from kroniko_ops.ops.compact import compact


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store of 50,000 small events, all but the active segment's in one pack."""
    path = str(tmp_path_factory.mktemp("big") / "s")
    with EventStore(path, durable=False, segment_bytes=1 << 20) as s:
        for a in range(0, 50_000, 1000):
            s.append([Event("T", {"i": i}, [f"k:{i % 7}"], None, f"ev-{i}") for i in range(a, a + 1000)])
    assert compact(path, durable=False).exit_code == 0
    return path


def _codes(path: str, jobs: int) -> list[tuple[str, int | None]]:
    report = fsck(path, jobs=jobs)
    assert report.figures["events_checked"] == 50_000
    return sorted((f.code, f.position) for f in report.findings if f.severity != "info")


def test_a_big_pack_is_walked_by_every_worker_with_the_same_report(big: str) -> None:
    [name] = os.listdir(os.path.join(big, "packs"))
    assert packfmt.parse_name(name)[1] > 40_000  # type: ignore[index]
    assert _codes(big, 1) == _codes(big, 2) == []


def test_damage_in_any_piece_is_found_by_its_worker(big: str, tmp_path: Path) -> None:
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(big, copy)
    [name] = os.listdir(os.path.join(copy, "packs"))
    path = os.path.join(copy, "packs", name)
    with packfmt.PackReader(path) as r:
        late = r.blocks[len(r.blocks) * 3 // 4]
    data = bytearray(Path(path).read_bytes())
    data[late.offset + 3] ^= 0x40
    Path(path).write_bytes(bytes(data))
    one, two = _codes(copy, 1), _codes(copy, 2)
    assert one == two and ("pack-corrupt", late.first) in one, one
