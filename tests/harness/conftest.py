"""Fixtures of the harness tests: the worker context and a fast sweep folder."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from kroniko_ops.harness.worker import context


@pytest.fixture(scope="session")
def mp_context() -> Any:
    """The forkserver context workers run in (started once per session)."""
    return context("forkserver")


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
