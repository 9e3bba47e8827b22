"""Shared fixtures: temporary stores, the legacy fixtures extracted into temporary folders, and
throwaway PostgreSQL and S3 servers for the session."""

from __future__ import annotations

import itertools
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kroniko_ops import EventStore
from kroniko_ops.objstore.seaweed import S3Server
from kroniko_ops.postgres import server as pgserver

# Copied from the Ruby kroniko into the repository, so that a fresh clone runs every legacy test.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy-kroniko"


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    """A path for a new store (not created yet)."""
    return str(tmp_path / "store")


@pytest.fixture(params=[True, False], ids=["durable", "fast"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> EventStore:
    """A new store, durable and not."""
    s = EventStore(str(tmp_path / "store"), durable=request.param)
    yield s
    s.close()


def _extract(name: str, dest: Path) -> str:
    archive = FIXTURES / name
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    entries = os.listdir(dest)
    return str(dest / entries[0]) if len(entries) == 1 and (dest / entries[0]).is_dir() else str(dest)


@pytest.fixture
def legacy_clean(tmp_path: Path) -> str:
    """The clean Ruby kroniko store, extracted into a temporary folder."""
    return _extract("shop-clean.tar.gz", tmp_path / "legacy-clean")


@pytest.fixture
def legacy_crashed(tmp_path: Path) -> str:
    """The crashed Ruby kroniko store, extracted into a temporary folder."""
    return _extract("shop-crashed.tar.gz", tmp_path / "legacy-crashed")


def write_v3_pack(path: str, raw: bytes, block_bytes: int = 1 << 16) -> None:
    """A version 3 pack (whole raw records in zlib blocks, ``docs/FORMAT.md``) of the records
    ``raw``, built here byte by byte: the engine reads such packs and never writes them."""
    import hashlib
    import struct
    import zlib

    from kroniko_ops.format import record

    recs = list(record.iter_records(raw))
    blocks: list[list[record.Record]] = [[]]
    for rec in recs:
        if blocks[-1] and sum(r.size for r in blocks[-1]) + rec.size > block_bytes:
            blocks.append([])
        blocks[-1].append(rec)
    out = bytearray(struct.pack(">6sH", b"KRPACK", 3))
    table = b""
    for group in blocks:
        data = raw[group[0].offset:group[-1].end]
        packed = zlib.compress(data, 6)
        table += struct.pack(">QIQIII", group[0].position, len(group), len(out), len(packed), len(data),
                             zlib.crc32(packed))
        out += packed
    table_offset = len(out)
    out += table
    trailer = struct.pack(">6sQQQIQI32s32s", b"KRPEND", recs[0].position, recs[-1].position, len(recs), len(blocks),
                          table_offset, zlib.crc32(table), recs[-1].chain, hashlib.sha256(out).digest())
    out += trailer + struct.pack(">I", zlib.crc32(trailer))
    with open(path, "xb") as f:
        f.write(out)


@pytest.fixture
def v3_pack():
    """:func:`write_v3_pack`: ``v3_pack(path, raw_records, block_bytes=65536)``."""
    return write_v3_pack


_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    """One real PostgreSQL server per test session (fsync=off: the tests kill clients, not the
    machine). The session's server; failing to start fails the tests (never a silent skip)."""
    srv = pgserver.start(fsync=False)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def pg_url(pg_server: pgserver.Server) -> str:
    """The URL of a new, empty database."""
    return pg_server.create_database(f"t{next(_names)}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server for the session (SeaweedFS on loopback ports, two identities: an admin and
    a read-only user), started when first asked for and always stopped."""
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
