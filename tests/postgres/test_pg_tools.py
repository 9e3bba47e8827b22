"""The commands on a postgresql:// URL: migrate both ways (lossless), fsck (clean and each kind
of damage), read/append/head/stats/init, torture; on a real server, through the CLI."""

from __future__ import annotations

import os

import orjson
import psycopg
from click.testing import CliRunner, Result

from kroniko_ops import Event, EventStore
from kroniko_ops.cli import cli
from kroniko_ops.postgres import PostgresEventStore
from kroniko_ops.postgres.server import PASSWORD


def run(*args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), input=input)
    assert PASSWORD not in result.output, "a URL's password was printed"
    return result


def stored(store: EventStore | PostgresEventStore) -> list[tuple[int, str, bytes, bytes, bytes, bool]]:
    """Every stored event as (position, id, body, hash, chain, batch mark)."""
    return [(r.position, r.event_id, bytes(r.body), r.event_hash, r.chain, r.commit)
            for r in store.records(1, store.head())]


def make_file_store(path: str) -> None:
    with EventStore(path) as s:
        s.append([Event("CartCreated", {"cart": 1}, ["cart:1"], {"by": "ada"}, "c1"),
                  Event("ItemAdded", {"sku": "apple", "n": 2.5, "big": 2**63}, ["cart:1", "sku:apple"],
                        {"causation_id": "c1"})])
        s.append(Event("CartCreated", {"cart": 2, "ü": "ß"}, ["cart:2"]))
        for i in range(30):
            s.append([Event("Tick", i, [f"t:{i % 3}"]) for _ in range(i % 4 + 1)])


def test_file_to_postgres_to_file_keeps_every_event_hash_and_chain(pg_url: str, tmp_path) -> None:
    src, back = str(tmp_path / "src"), str(tmp_path / "back")
    make_file_store(src)
    res = run("migrate", src, pg_url)
    assert res.exit_code == 0, res.output
    res = run("migrate", pg_url, back)
    assert res.exit_code == 0, res.output
    with EventStore(src) as a, PostgresEventStore(pg_url) as p, EventStore(back) as b:
        assert stored(a) == stored(p) == stored(b)
        assert [e.id for e in a.read()] == [e.id for e in p.read()] == [e.id for e in b.read()]
    for target in (pg_url, back):
        assert run("fsck", target).exit_code == 0


def test_migrate_refuses_a_non_empty_target_and_writes_nothing(pg_url: str, tmp_path) -> None:
    src = str(tmp_path / "src")
    make_file_store(src)
    with PostgresEventStore(pg_url) as p:
        p.append(Event("Mine", 1))
    res = run("migrate", src, pg_url)
    assert res.exit_code == 2 and "already holds events" in res.output
    with PostgresEventStore(pg_url) as p:
        assert p.head() == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    res = run("migrate", pg_url, str(tmp_path / "full"))
    assert res.exit_code == 2 and os.listdir(tmp_path / "full") == ["x"]


def test_append_read_head_stats_on_a_url(pg_url: str) -> None:
    assert run("init", pg_url).exit_code == 0
    lines = "\n".join(orjson.dumps(x).decode() for x in [
        {"type": "A", "data": {"i": 1}, "tags": ["k:1"]}, {"type": "B", "data": None, "tags": ["k:2"], "id": "b"}])
    res = run("append", pg_url, input=lines + "\n")
    assert res.exit_code == 0 and res.stdout.strip() == "2"
    res = run("append", pg_url, "--fail-if-tag", "k:1", "--after", "0", input='{"type": "C"}\n')
    assert res.exit_code == 3  # the condition matched position 1
    res = run("read", pg_url, "--tag", "k:2", "--json")
    docs = [orjson.loads(line) for line in res.stdout.splitlines()]
    assert [d.get("id") for d in docs if d["kind"] == "event"] == ["b"]
    assert docs[-1]["head"] == 2
    assert run("head", pg_url).stdout.strip() == "2"
    res = run("stats", pg_url, "--json")
    st, summary = (orjson.loads(line) for line in res.stdout.splitlines())
    assert summary["kind"] == "summary" and "kroniko-test-pw" not in summary["path"]
    assert (st["head"], st["events"], st["batches"], st["tag_rows"]) == (2, 2, 1, 2)


def _damage(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def _codes(url: str, *extra: str) -> tuple[int, set[str]]:
    res = run("fsck", url, "--json", *extra)
    docs = [orjson.loads(line) for line in res.stdout.splitlines()]
    return res.exit_code, {d["code"] for d in docs if d["kind"] == "finding"}


def test_fsck_names_each_kind_of_damage(pg_url: str, tmp_path) -> None:
    make_file_store(str(tmp_path / "src"))
    assert run("migrate", str(tmp_path / "src"), pg_url).exit_code == 0
    assert _codes(pg_url) == (0, set())
    _damage(pg_url, "UPDATE kroniko.events SET body = body || ' '::bytea WHERE position = 5")
    assert _codes(pg_url) == (4, {"event-hash-mismatch"})
    assert _codes(pg_url, "--quick") == (0, set())  # quick reads no body
    _damage(pg_url, "UPDATE kroniko.events SET event_hash = sha256(body) WHERE position = 5")
    assert _codes(pg_url) == (4, {"chain-mismatch"})
    _damage(pg_url, "DELETE FROM kroniko.tags WHERE position = 7")
    _damage(pg_url, "INSERT INTO kroniko.tags VALUES ('ghost', 8)")
    assert _codes(pg_url)[1] == {"chain-mismatch", "index-missing-entry", "index-extra-entry"}
    _damage(pg_url, "DELETE FROM kroniko.events WHERE position = 9")
    assert "segment-gap" in _codes(pg_url, "--quick")[1]
    _damage(pg_url, "UPDATE kroniko.head SET position = position + 5")
    assert "synced-ahead" in _codes(pg_url, "--quick")[1]


def test_fsck_finds_dangling_references(pg_url: str) -> None:
    with PostgresEventStore(pg_url) as p:
        p.append(Event("A", {"order": "nope"}, [], {"causation_id": "missing"}, "a"))
        p.append(Event("B", {"order": ["a", "later"]}, [], {"correlation_id": "a"}, "b"))
        p.append(Event("C", {}, [], None, "later"))
    res = run("fsck", pg_url, "--json", "--ref-field", "data.order", "--ref-field", "metadata.correlation_id")
    docs = [orjson.loads(line) for line in res.stdout.splitlines()]
    dangling = sorted((d["position"], d["message"].split("names ")[1].split(" ")[0]) for d in docs
                      if d["kind"] == "finding" and d["code"] == "dangling-reference")
    assert dangling == [(1, "'missing'"), (1, "'nope'"), (2, "'later'")]
    assert res.exit_code == 4
    assert run("fsck", pg_url, "--repair").exit_code == 2


def test_torture_command_on_a_url(pg_url: str) -> None:
    res = run("torture", pg_url, "--rounds", "2", "--workers", "3", "--seed", "5", "--no-fsync")
    assert res.exit_code == 0, res.output
    assert "violations  0" in res.stdout
    assert run("torture", pg_url, "--power-loss").exit_code == 2
