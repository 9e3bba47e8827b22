"""Fixtures of the legacy tests: small generated legacy stores (the Ruby fixtures come from the
top-level conftest as ``legacy_clean`` / ``legacy_crashed``)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from kroniko_ops.legacy.synth import LegacyWriter, write_shop_store


@pytest.fixture
def synth_store(tmp_path: Path) -> str:
    """A generated legacy store of 300 shop events, undamaged."""
    root = str(tmp_path / "synth")
    write_shop_store(root, 300, seed=7)
    return root


@pytest.fixture
def legacy_writer(tmp_path: Path) -> Callable[[str], LegacyWriter]:
    """Open a :class:`LegacyWriter` on a new folder of ``tmp_path`` (closed by the test)."""

    def make(name: str = "legacy") -> LegacyWriter:
        return LegacyWriter(str(tmp_path / name), rng=random.Random(1))

    return make
