"""Fixtures of the harness tests: the worker context, a fast sweep folder, and whether the
maintenance operations the harness calls (``kroniko_ops.recover``, ``fsck``...) are there."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

import kroniko_ops
from kroniko_ops.harness.worker import context


def operations_available(*names: str) -> bool:
    """Whether ``kroniko_ops.<name>`` resolves for each name (the maintenance operations are
    imported on first use; while one is being ported its module may not import)."""
    try:
        for name in names:
            getattr(kroniko_ops, name)
    except Exception:  # an operation that does not import is simply not there for these tests
        return False
    return True


@pytest.fixture(scope="session")
def mp_context() -> Any:
    """The forkserver context workers run in (started once per session)."""
    return context("forkserver")


@pytest.fixture(scope="session")
def has_recover() -> bool:
    """Whether recover and fsck are there (property 6 can be checked)."""
    return operations_available("recover", "fsck")


@pytest.fixture
def sweep_dir(tmp_path) -> Iterator[str]:
    """A temporary folder for sweeps, in RAM (/dev/shm) when there is one: a sweep copies a
    store and recovers it thousands of times, and neither a process kill nor an injected fault
    depends on the disk underneath (the page cache survives a kill), so tmpfs only saves time."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else str(tmp_path)
    folder = tempfile.mkdtemp(prefix="kroniko-sweep-", dir=base)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _quiet_engine_warnings() -> Iterator[None]:
    # Faults after a commit make the engine log "index update failed" warnings by design.
    logger = logging.getLogger("kroniko_ops")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)
