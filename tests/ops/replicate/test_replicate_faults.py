"""Faults of the object store: the server killed and restarted mid-replication, connections cut
mid-upload, a slow server, a permission error. Retries ride out what passes; what does not
ends with exit 8 and a clear message; no manifest ever names a missing object. The metrics
file says so, and no secret is ever printed or stored."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from replica_helpers import Proxy, cli, contents, fill, finish, objects, spawn, wait_for

from kroniko_ops.objstore import ObjectStoreError, Retry
from kroniko_ops.objstore.seaweed import BUCKET, READER, S3Server, free_ports
from kroniko_ops.ops.replicate import replicate, restore, verify_backup


def _url(name: str) -> str:
    return f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}"


def _metrics(path: str) -> dict[str, float]:
    """The replicate run's samples in the metrics file, by name."""
    with open(path) as f:
        text = f.read()
    assert "# TYPE kroniko_last_success_timestamp_seconds gauge" in text
    assert "# HELP kroniko_replica_lag_positions" in text and "# TYPE kroniko_replica_lag_positions gauge" in text
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.labels.get("operation") == "replicate"}


def test_server_killed_and_restarted_mid_replication(s3_server: S3Server, s3_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    src, url, prom = str(tmp_path / "src"), _url("restart"), str(tmp_path / "replica.prom")
    fill(src, 20)
    follower = spawn("replicate", src, url, "--interval", "0.1", "--retry-for", "60", "--metrics-file", prom)
    try:
        wait_for(lambda: os.path.exists(prom), what="the first round")
        fill(src, 20, start=100)
        time.sleep(0.3)
        s3_server.stop()  # SIGKILL: the server goes away mid-whatever
        fill(src, 30, start=200)  # the store goes on meanwhile
        time.sleep(1.0)
        s3_server.start()
        fill(src, 10, start=300)
        back = time.time()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _metrics(prom)
            success = now["kroniko_last_success_timestamp_seconds"]
            if success > back and not now["kroniko_replica_lag_positions"]:
                break
            time.sleep(0.2)
    finally:
        code, _out, err = finish(follower)
    assert code == 0, err
    assert _metrics(prom)["kroniko_replica_lag_positions"] == 0
    assert verify_backup(url).exit_code == 0
    restore(url, str(tmp_path / "restored"))
    assert contents(str(tmp_path / "restored")) == contents(src)


def test_server_gone_for_good_exits_8_and_metrics_carry_the_last_success(s3_server: S3Server,
                                                                         s3_env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    src, url, prom = str(tmp_path / "src"), _url("gone"), str(tmp_path / "replica.prom")
    fill(src, 10)
    ok = cli("replicate", src, url, "--once", "--metrics-file", prom)
    assert ok.returncode == 0, ok.stderr
    first = _metrics(prom)
    assert first["kroniko_replica_lag_positions"] == 0 and first["kroniko_replica_lag_seconds"] == 0
    success = first["kroniko_last_success_timestamp_seconds"]
    assert abs(success - time.time()) < 60
    fill(src, 5, start=10)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_ports(1)[0]}"}  # nothing listens: connection refused
    failed = cli("replicate", src, url, "--once", "--retry-for", "2", "--metrics-file", prom, env=env)
    assert failed.returncode == 8, failed.stderr
    assert "failed" in failed.stderr and "run the command again" in failed.stderr
    after = _metrics(prom)
    assert after["kroniko_last_success_timestamp_seconds"] == success
    assert after["kroniko_last_run_success"] == 0 and after["kroniko_last_run_exit_code"] == 8
    assert after["kroniko_replica_lag_positions"] == 0  # the replica could not be read: left as it was
    assert verify_backup(url).exit_code == 0  # the replica is as the last success left it


def test_connections_cut_mid_upload_and_a_slow_server(s3_server: S3Server, s3_env: dict[str, str],
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, url = str(tmp_path / "src"), _url("cut")
    fill(src, 150)
    proxy = Proxy(s3_server.ports["s3"])
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        proxy.cut, proxy.cuts_left = 3000, 4  # the next four connections die 3 KB into their request
        proxy.delay = 0.01
        done = replicate(src, url, once=True, retry=Retry(seconds=60, first=0.05))
        assert done.head == contents(src)[-1][0]
        assert proxy.cuts_done >= 1
        proxy.cut, proxy.cuts_left = 3000, 1_000_000  # every connection dies: give up, exit 8
        fill(src, 20, start=150)
        with pytest.raises(ObjectStoreError) as failed:
            replicate(src, url, once=True, retry=Retry(seconds=1.5, first=0.05))
        assert failed.value.exit_code == 8
    finally:
        proxy.close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    assert verify_backup(url).exit_code == 0  # whatever manifest is newest names only whole objects
    assert replicate(src, url, once=True).head == contents(src)[-1][0]
    restore(url, str(tmp_path / "restored"))
    assert contents(str(tmp_path / "restored")) == contents(src)


def test_permission_error_retries_then_exits_8_writing_no_manifest(s3_server: S3Server, s3_env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    src, url = str(tmp_path / "src"), _url("readonly")
    fill(src, 10)
    started = time.monotonic()
    done = cli("replicate", src, url, "--once", "--retry-for", "1.5", env=s3_server.env(READER))
    assert done.returncode == 8
    assert "AccessDenied" in done.stderr and "credentials may write" in done.stderr
    assert time.monotonic() - started > 1.0  # it retried with back-off before giving up
    assert objects(url) == {}


def test_no_secret_is_printed_logged_or_stored(s3_server: S3Server, s3_env: dict[str, str], tmp_path: Path) -> None:
    src, url, prom = str(tmp_path / "src"), _url("secret"), str(tmp_path / "m.prom")
    fill(src, 10)
    outputs = [cli("replicate", src, url, "--once", "--json", "--metrics-file", prom),
               cli("verify-backup", url, "--json"), cli("restore", url, str(tmp_path / "r"), "--json"),
               cli("replicate", src, url, "--once", env=s3_server.env(READER)),
               cli("replicate", src, url, "--once", "--retry-for", "0", env={"AWS_SECRET_ACCESS_KEY": "wrong-" + "x"})]
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    for proc in outputs:
        assert secret not in proc.stdout + proc.stderr
        assert READER[1] not in proc.stdout + proc.stderr
    assert outputs[-1].returncode == 8
    from kroniko_ops.objstore import open_url

    remote = open_url(url)
    try:
        for key in remote.list():
            assert secret.encode() not in remote.get(key, 1 << 26)
    finally:
        remote.close()
    with open(prom) as f:
        assert secret not in f.read()
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                assert secret.encode() not in f.read()


def test_full_bucket_quota_retries_exits_8_then_resumes(s3_server: S3Server, s3_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    """A bucket over its quota refuses writes: replicate retries, gives up with exit 8 and no
    manifest; once the quota is raised it carries on."""
    import boto3

    bucket = f"kroniko-quota-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="filler", Body=os.urandom(2 << 20))
    s3_server.shell(f"s3.bucket.quota -name={bucket} -op=set -sizeMB=1\n")
    wait_for(lambda: _refused(s3_server, client, bucket), timeout=60, what="the quota enforced")
    src, url = str(tmp_path / "src"), f"s3://{bucket}/events"
    fill(src, 20)
    done = cli("replicate", src, url, "--once", "--retry-for", "2")
    assert done.returncode == 8 and "quota is not full" in done.stderr, done.stderr
    assert not [k for k in objects(url) if k.startswith("manifests/")]
    s3_server.shell(f"s3.bucket.quota -name={bucket} -op=set -sizeMB=1000\ns3.bucket.quota.enforce -apply\n")
    assert replicate(src, url, once=True, retry=Retry(seconds=60)).head == contents(src)[-1][0]
    assert verify_backup(url).exit_code == 0


def _refused(server: S3Server, client: object, bucket: str) -> bool:
    server.shell("s3.bucket.quota.enforce -apply\n")
    try:
        client.put_object(Bucket=bucket, Key="probe", Body=b"x")  # type: ignore[attr-defined]
    except Exception:
        return True
    return False


def test_a_lost_answer_to_the_manifest_upload_is_not_another_writer(s3_env: dict[str, str], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The manifest reached the server but its answer was lost (a dropped connection): the retry
    # finds its own manifest (412 to If-None-Match) and must take that as success.
    from botocore.exceptions import ReadTimeoutError

    import kroniko_ops.objstore.s3 as s3mod

    src = str(tmp_path / "src")
    fill(src, 10)
    real_init = s3mod.S3Store.__init__
    dropped: list[bool] = []

    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_init(self, *args, **kwargs)
        put = self.client.put_object

        def put_object(**kw):  # type: ignore[no-untyped-def]
            answer = put(**kw)
            if "IfNoneMatch" in kw and not dropped:
                dropped.append(True)
                raise ReadTimeoutError(endpoint_url="http://127.0.0.1")
            return answer

        self.client.put_object = put_object

    monkeypatch.setattr(s3mod.S3Store, "__init__", init)
    url = f"s3://{BUCKET}/lost-answer-{uuid.uuid4().hex[:8]}"
    report = replicate(src, url, once=True)
    assert dropped and report.exit_code == 0 and report.head == contents(src)[-1][0]
    monkeypatch.setattr(s3mod.S3Store, "__init__", real_init)  # (undo() would drop the credentials too)
    assert verify_backup(url).exit_code == 0


def test_temp_files_of_a_killed_upload_are_swept_from_a_folder_replica(tmp_path: Path) -> None:
    src, rep = str(tmp_path / "src"), tmp_path / "rep"
    fill(src, 10)
    assert replicate(src, str(rep), once=True).exit_code == 0
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: a dead uploader's pid
        os._exit(0)
    os.waitpid(pid, 0)
    left = [rep / f".tmp-{pid}-0123abcd-FORMAT", rep / "log" / f".tmp-{pid}-89abcdef-000000000001.idx"]
    for f in left:
        f.write_bytes(b"half an upload")
    fill(src, 3, start=10)
    report = replicate(src, str(rep), once=True)
    assert report.exit_code == 0 and not any(f.exists() for f in left)
    assert sorted(f.path for f in report.findings if f.code == "backup-stale-temp") == sorted(map(str, left))
    assert verify_backup(str(rep)).exit_code == 0
