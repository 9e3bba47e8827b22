"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` + ``pg_ctl`` in a temp
folder, run as the unprivileged ``postgres`` account when we are root (initdb refuses root),
listening on 127.0.0.1 at a free port and on a Unix socket in that folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass

BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
PASSWORD = "kroniko-test-pw"


def _tool(name: str) -> str:
    for d in BIN_DIRS:
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install PostgreSQL (apt-get install -y postgresql)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running server: ``url(database)`` for connections, :meth:`stop` to end it."""

    folder: str
    port: int
    user: str = "postgres"

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        """A connection URL for ``database`` (over 127.0.0.1, password login)."""
        return f"postgresql://{self.user}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once and remove its folder."""
        _as_owner([_tool("pg_ctl"), "-D", f"{self.folder}/data", "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def _as_owner(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)


def start(fsync: bool = False) -> Server:
    """Start a fresh server (``fsync=off`` by default: tests; ``True`` for benchmarks)."""
    folder = tempfile.mkdtemp(prefix="kroniko-pg-")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    os.chmod(folder, 0o700)
    pwfile = os.path.join(folder, "pw")
    with open(pwfile, "w") as f:
        f.write(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    try:
        _as_owner([_tool("initdb"), "-D", f"{folder}/data", "-U", "postgres", "--pwfile", pwfile,
                   "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
        port = _free_port()
        opts = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} "
                f"-c fsync={'on' if fsync else 'off'} -c max_connections=200 -c shared_buffers=64MB")
        _as_owner([_tool("pg_ctl"), "-D", f"{folder}/data", "-l", f"{folder}/log", "-o", opts, "-w", "-t", "60",
                   "start"])
    except subprocess.CalledProcessError as exc:
        log = ""
        if os.path.exists(f"{folder}/log"):
            with open(f"{folder}/log") as f:
                log = f.read()[-2000:]
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{log}") from exc
    return Server(folder, port)
