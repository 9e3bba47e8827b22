"""Fixtures of the replication tests, against the real S3 server of ``tests/conftest.py``
(SeaweedFS on loopback, started once per session): the admin's AWS environment, and a fresh
replica URL per test, a prefix in the bucket or a folder (the same tests run on both).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from kroniko_ops.objstore.seaweed import BUCKET, S3Server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The admin's AWS environment, set for this process (and returned for children)."""
    env = s3_server.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    return env


@pytest.fixture(params=["s3", "folder"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh replica URL: a new prefix in the S3 bucket, or a new folder."""
    if request.param == "folder":
        return str(tmp_path / "replica")
    request.getfixturevalue("s3_env")
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').replace(']', '')}-{uuid.uuid4().hex[:8]}"
