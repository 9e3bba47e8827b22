"""Helpers of the migrate tests: the new store's fsck verdict and what a migration left behind."""

from __future__ import annotations

import os

import kroniko_ops


def assert_fsck_clean(target: str) -> None:
    """The migrated store passes a full fsck with no finding above info."""
    report = kroniko_ops.fsck(target)
    assert report.exit_code == 0, [(f.code, f.path, f.message) for f in report.findings]


def temp_leftovers(parent: str) -> list[str]:
    """The temporary names (``.tmp-...``) in ``parent``."""
    return sorted(n for n in os.listdir(parent) if n.startswith(".tmp-"))
