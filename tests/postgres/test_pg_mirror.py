"""``mirror STORE URL``: follows a file store, resumes after a SIGKILL, copies nothing twice,
keeps batches whole, and refuses a database that is not its mirror."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
from click.testing import CliRunner

from kroniko_ops import Event, EventStore
from kroniko_ops.cli import cli
from kroniko_ops.ops.postgres import transfer
from kroniko_ops.postgres import PostgresEventStore

REAP = 120.0  # a hang guard, not a timing assertion
CLI = [sys.executable, "-c", "from kroniko_ops.cli import main; main()"]


def stored(store: EventStore | PostgresEventStore) -> list[tuple[int, str, bytes, bytes, bytes, bool]]:
    return [(r.position, r.event_id, bytes(r.body), r.event_hash, r.chain, r.commit)
            for r in store.records(1, store.head())]


def grow(path: str, batches: int, size: int = 7) -> int:
    with EventStore(path, durable=False) as s:
        for i in range(batches):
            head = s.append([Event("E", {"i": i, "k": k}, [f"b:{i % 5}"]) for k in range(size)])
        return head


def wait_for(url: str, head: int) -> None:
    deadline = time.monotonic() + REAP
    with PostgresEventStore(url) as p:
        while p.head() < head:
            assert time.monotonic() < deadline, f"the mirror never reached {head}"
            time.sleep(0.05)


def test_mirror_follows_resumes_after_kill_and_copies_nothing_twice(pg_url: str, tmp_path) -> None:
    src = str(tmp_path / "src")
    first = grow(src, 40)
    proc = subprocess.Popen([*CLI, "mirror", src, pg_url, "--interval", "0.05"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(pg_url, first)
        second = grow(src, 30)  # the running mirror follows
        wait_for(pg_url, second)
        grow(src, 300)
        os.kill(proc.pid, signal.SIGKILL)  # most likely in the middle of copying these
    finally:
        proc.kill()
        proc.wait(REAP)
    with PostgresEventStore(pg_url) as p:
        assert p.head() % 7 == 0, "a batch was cut in two"
    res = CliRunner().invoke(cli, ["mirror", "--once", "--json", src, pg_url])
    assert res.exit_code == 0, res.output
    with EventStore(src) as a, PostgresEventStore(pg_url) as p:
        assert stored(a) == stored(p)
        head = p.head()
    again = CliRunner().invoke(cli, ["mirror", "--once", "--json", src, pg_url])
    assert orjson.loads(again.stdout.splitlines()[-1])["copied"] == 0
    assert orjson.loads(again.stdout.splitlines()[-1])["head"] == head
    assert CliRunner().invoke(cli, ["fsck", pg_url]).exit_code == 0


def test_mirror_steps_end_at_batch_boundaries(pg_url: str, tmp_path, monkeypatch) -> None:
    src = str(tmp_path / "src")
    grow(src, 20, size=9)
    monkeypatch.setattr(transfer, "CHUNK", 10)
    heads: list[int] = []
    report = transfer.mirror(src, pg_url, on_step=heads.append)
    assert heads == list(range(18, 181, 18)) and report.figures["copied"] == 180


def test_mirror_refuses_a_database_that_is_not_its_mirror(pg_url: str, tmp_path) -> None:
    src = str(tmp_path / "src")
    grow(src, 3)
    with PostgresEventStore(pg_url) as p:
        p.append(Event("Other", 1))
    res = CliRunner().invoke(cli, ["mirror", "--once", src, pg_url])
    assert res.exit_code == 2 and "not a mirror" in res.output
    with PostgresEventStore(pg_url) as p:
        assert p.head() == 1
