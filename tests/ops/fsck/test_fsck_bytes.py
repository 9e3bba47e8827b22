"""Property: whatever single byte of a sealed segment, an offset index or a pack changes, a full
fsck never says the store is clean, and never crashes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from fsck_store_helpers import build, pack_first_segment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops import fsck


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("bytes") / "s")
    build(path, batches=8)
    pack_first_segment(path)
    assert fsck(path).exit_code == 0
    return path


def _immutable_files(path: str) -> list[str]:
    """Packs, sealed segments and offset indexes (the active segment is the last .seg)."""
    log = sorted(os.listdir(Path(path, "log")))
    active = max(n for n in log if n.endswith(".seg"))
    files = [f"log/{n}" for n in log if n != active]
    files += [f"packs/{n}" for n in sorted(os.listdir(Path(path, "packs")))]
    return files


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_changed_byte_is_found(template: str, data: st.DataObject) -> None:
    files = _immutable_files(template)
    rel = data.draw(st.sampled_from(files), label="file")
    size = os.path.getsize(Path(template, rel))
    offset = data.draw(st.integers(0, size - 1), label="offset")
    delta = data.draw(st.integers(1, 255), label="xor")
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "s")
        shutil.copytree(template, store, symlinks=True)
        target = Path(store, rel)
        raw = bytearray(target.read_bytes())
        raw[offset] ^= delta
        target.write_bytes(bytes(raw))
        report = fsck(store)
        assert report.exit_code & 4, (rel, offset, delta, report.findings)
