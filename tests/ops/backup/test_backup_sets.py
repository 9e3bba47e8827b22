"""Backups as a managed set: ``backup --into`` (full or incremental, unique names by time,
``latest``), ``backups``, ``restore ROOT``, ``verify-backup ROOT [--all]`` and ``prune``
(chain-aware retention)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from backup_helpers import contents, fill, head
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from kroniko_ops.cli import cli
from kroniko_ops.errors import InvalidArgument
from kroniko_ops.ops.backup import backup_into, prune, restore, scan
from kroniko_ops.ops.backup import sets as sets_mod
from kroniko_ops.ops.backup.prune import keep_reasons
from kroniko_ops.ops.backup.sets import NAME_RE, Entry


def at(monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    """Make the set's clock read ``when``."""
    monkeypatch.setattr(sets_mod.time, "time_ns", lambda: int(when.timestamp() * 1e6) * 1000)


def jsonl(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def test_full_then_incrementals_named_by_time_with_latest(tmp_path: Path) -> None:
    store, root = str(tmp_path / "s"), str(tmp_path / "set")
    fill(store, 20)
    first = backup_into(store, root, durable=False)
    fill(store, 5, start=20)
    second = backup_into(store, root, durable=False)
    assert first.figures["backup_kind"] == "full" and [f.code for f in first.findings] == ["backup-new-chain"]
    assert second.figures["backup_kind"] == "incremental" and second.figures["base"] == first.figures["name"]
    names = sorted(n for n in os.listdir(root) if NAME_RE.match(n))
    assert names == [first.figures["name"], second.figures["name"]] and names[0].endswith("-full")
    assert os.readlink(os.path.join(root, "latest")) == names[1]
    entries = scan(root)
    assert [e.chain for e in entries] == [[names[0]], names] and all(e.restorable for e in entries)
    # restore ROOT and ROOT/latest restore the newest backup: everything the store holds
    for i, source in enumerate((root, os.path.join(root, "latest"))):
        report = restore(source, str(tmp_path / f"r{i}"), durable=False)
        assert report.exit_code == 0 and contents(str(tmp_path / f"r{i}")) == contents(store)


def test_names_never_collide_even_when_the_clock_steps_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, root = str(tmp_path / "s"), str(tmp_path / "set")
    fill(store, 3)
    noon = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    for when in (noon, noon, noon - timedelta(hours=1)):
        at(monkeypatch, when)
        backup_into(store, root, durable=False)
    names = [e.name for e in scan(root)]
    assert len(set(names)) == 3 and names == sorted(names)
    assert names[0].startswith("20261201T120000.000000Z") and names[1].startswith("20261201T120000.000001Z")
    # two full backups of the same content in the same second have byte-identical manifests:
    # each incremental still finds its own base
    at(monkeypatch, noon + timedelta(days=1))
    backup_into(store, root, full=True, durable=False)
    backup_into(store, root, durable=False)
    entries = scan(root)
    assert all(e.restorable for e in entries) and entries[-1].chain == [e.name for e in entries[-2:]]


def test_two_runs_at_once_make_two_restorable_backups(tmp_path: Path) -> None:
    store, root = str(tmp_path / "s"), str(tmp_path / "set")
    fill(store, 30)
    cmd = [sys.executable, "-c", "from kroniko_ops.cli import main; main()", "backup", store, "--into", root, "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
    assert [p.returncode for p in procs] == [0, 0], outs
    entries = scan(root)
    assert len(entries) == 2 and all(e.restorable for e in entries)
    assert [e.kind for e in entries] == ["full", "incremental"]
    assert os.readlink(os.path.join(root, "latest")) == entries[-1].name


def test_a_new_chain_when_asked_when_old_or_when_the_store_is_another(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store, root = str(tmp_path / "s"), str(tmp_path / "set")
    fill(store, 5)
    day = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    at(monkeypatch, day)
    backup_into(store, root, durable=False)
    at(monkeypatch, day + timedelta(days=1))
    assert backup_into(store, root, full=True, durable=False).figures["backup_kind"] == "full"
    at(monkeypatch, day + timedelta(days=2))
    assert backup_into(store, root, durable=False).figures["backup_kind"] == "incremental"
    at(monkeypatch, day + timedelta(days=8, hours=1))
    aged = backup_into(store, root, durable=False)
    assert aged.figures["backup_kind"] == "full" and "7 day(s) old" in aged.findings[-1].message
    other = str(tmp_path / "other")
    fill(other, 9)
    at(monkeypatch, day + timedelta(days=8, hours=2))
    switched = backup_into(other, root, durable=False)
    assert switched.figures["backup_kind"] == "full" and "cannot be a base" in switched.findings[-1].message


def _daily_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, days: int, per_day: int) -> tuple[str, str]:
    """A set with ``per_day`` backups on each of ``days`` days, fulls every Monday (weekly chain)."""
    store, root = str(tmp_path / "s"), str(tmp_path / "set")
    start = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)  # a Monday
    for d in range(days):
        for k in range(per_day):
            when = start + timedelta(days=d, hours=6 * k)
            at(monkeypatch, when)
            fill(store, 1, start=d * per_day + k)
            backup_into(store, root, full=(d % 7 == 0 and k == 0), full_every_days=1000, durable=False)
    return store, root


def test_prune_keeps_the_policy_and_every_base_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, root = _daily_set(tmp_path, monkeypatch, days=10, per_day=2)
    before = scan(root)
    assert len(before) == 20
    planned = prune(root, keep_daily=2, dry_run=True)
    assert [e.name for e in scan(root)] == [e.name for e in before]  # a dry run deletes nothing
    report = prune(root, keep_daily=2)
    assert report.exit_code == 0
    removed = {f.path for f in report.findings if f.code == "prune-removed"}
    assert removed == {f.path for f in planned.findings if f.code == "prune-removed"}
    left = scan(root)
    names = {e.name for e in left}
    assert not names & removed and len(names) + len(removed) == 20
    # the newest of each of the last two days is kept, with its whole chain back to Monday's full
    newest_by_day = {}
    for e in before:
        newest_by_day[e.when.date()] = e.name
    for name in sorted(newest_by_day.values())[-2:]:
        assert name in names
    assert all(e.restorable for e in left) and all(set(e.chain) <= names for e in left)
    assert left[0].kind == "full" and left[0].when.weekday() == 0
    assert os.readlink(os.path.join(root, "latest")) == before[-1].name
    assert head(str(tmp_path / "s")) == left[-1].manifest.head
    # running it again changes nothing
    again = prune(root, keep_daily=2)
    assert again.figures["removed"] == 0 and {e.name for e in scan(root)} == names
    restored = restore(root, str(tmp_path / "r"), durable=False)
    assert restored.exit_code == 0 and contents(str(tmp_path / "r")) == contents(store)


def test_prune_leaves_what_it_cannot_read_and_refuses_without_a_policy(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _store, root = _daily_set(tmp_path, monkeypatch, days=3, per_day=1)
    oldest = scan(root)[0]
    Path(oldest.path, "MANIFEST.json").write_text("{}")
    with pytest.raises(InvalidArgument, match="at least one"):
        prune(root)
    report = prune(root, keep_last=1)
    assert {f.code for f in report.findings} >= {"prune-incomplete"}
    assert os.path.isdir(oldest.path)
    runner = CliRunner()
    got = runner.invoke(cli, ["prune", root, "--json"])
    assert got.exit_code == 2 and jsonl(got.stdout)[-1]["exit_code"] == 2
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes").write_text("mine")
    got = runner.invoke(cli, ["prune", str(plain), "--keep-last", "1"])
    assert got.exit_code == 2 and (plain / "notes").exists()


@pytest.mark.parametrize("damage", ["full-manifest", "full-moved-away"])
def test_prune_never_deletes_backups_whose_chain_is_broken(tmp_path: Path, damage: str) -> None:
    # The incrementals are not restorable only because their full backup is damaged or was
    # moved away; putting it back makes them restorable again, so prune must leave them.
    store, root = str(tmp_path / "s"), str(tmp_path / "set")
    for i in range(3):
        fill(store, 10, start=10 * i)
        backup_into(store, root, durable=False)
    full, *incrementals = scan(root)
    assert [e.kind for e in scan(root)] == ["full", "incremental", "incremental"]
    if damage == "full-manifest":
        manifest = Path(full.path, "MANIFEST.json")
        text = manifest.read_text()
        assert '"created_at": "2' in text
        manifest.write_text(text.replace('"created_at": "2', '"created_at": "3', 1))
    else:
        os.rename(full.path, tmp_path / "moved")
    report = prune(root, keep_last=3)
    assert report.exit_code == 0 and report.figures["removed"] == 0, report.findings
    assert all(os.path.isdir(e.path) for e in incrementals)
    assert os.path.exists(os.path.join(root, os.readlink(os.path.join(root, "latest"))))
    if damage == "full-moved-away":
        os.rename(tmp_path / "moved", full.path)
        restored = restore(root, str(tmp_path / "r"), durable=False)
        assert restored.exit_code == 0 and contents(str(tmp_path / "r")) == contents(store)


def test_a_bad_backup_fails_verify_all_and_the_listing_says_so(tmp_path: Path) -> None:
    store, root = str(tmp_path / "s"), str(tmp_path / "set")
    fill(store, 40)
    backup_into(store, root, durable=False)
    fill(store, 3, start=40)
    backup_into(store, root, durable=False)
    runner = CliRunner()
    assert runner.invoke(cli, ["verify-backup", root, "--all"]).exit_code == 0
    full = scan(root)[0]
    seg = sorted(Path(full.path, "log").glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    data[300] ^= 1
    seg.write_bytes(bytes(data))
    got = runner.invoke(cli, ["verify-backup", root, "--all", "--json"])
    assert got.exit_code == 4
    lines = jsonl(got.stdout)
    assert lines[-1]["kind"] == "summary" and lines[-1]["exit_code"] == 4
    assert any(line["kind"] == "finding" and line["path"].startswith(full.name) for line in lines)
    assert runner.invoke(cli, ["verify-backup", root]).exit_code == 4  # the newest: its chain holds the bad one
    got = runner.invoke(cli, ["backups", root, "--json"])
    listed = [x for x in jsonl(got.stdout) if x["kind"] == "backup"]
    assert got.exit_code == 0 and [x["chain"] for x in listed] == [[full.name], [full.name, listed[1]["name"]]]
    assert [x["base"] for x in listed] == [None, full.name] and all(x["bytes"] > 0 for x in listed)


@st.composite
def _sets(draw: st.DrawFn) -> list[Entry]:
    """Backups over a few weeks: each a full one or an incremental on the one before it."""
    count = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.integers(1, 60 * 60 * 40), min_size=count, max_size=count))
    fulls = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    entries: list[Entry] = []
    for i in range(count):
        when += timedelta(seconds=gaps[i])
        name = f"{when.strftime('%Y%m%dT%H%M%S')}.000000Z-{'full' if fulls[i] or i == 0 else 'incr'}"
        chain = [name] if name.endswith("full") else [*entries[-1].chain, name]
        entries.append(Entry(name, name, when, chain=chain, restorable=True))
    return entries


@settings(max_examples=200, deadline=None)
@given(_sets(), st.integers(0, 5), st.integers(0, 5), st.integers(0, 3), st.integers(0, 2))
def test_retention_rules_hold_for_every_set(entries: list[Entry], last: int, daily: int, weekly: int,
                                            monthly: int) -> None:
    if not any((last, daily, weekly, monthly)):
        return
    kept = keep_reasons(entries, keep_last=last, keep_daily=daily, keep_weekly=weekly, keep_monthly=monthly)
    by_name = {e.name: e for e in entries}
    assert entries[-1].name in kept  # the newest, so latest never dangles
    for name in kept:
        assert set(by_name[name].chain) <= set(kept)  # every kept backup can be restored
    assert sum(e.name in kept for e in entries[-last:]) == min(last, len(entries)) if last else True
    days = sorted({e.when.date() for e in entries})[-daily:] if daily else []
    for day in days:
        assert max(e.name for e in entries if e.when.date() == day) in kept
    policy = {n for n, why in kept.items() if any(not w.startswith("base of") for w in why)}
    assert len(policy) <= last + daily + weekly + monthly


def test_leftovers_of_killed_runs_are_swept_and_never_listed(tmp_path: Path) -> None:
    store, root = str(tmp_path / "s"), str(tmp_path / "set")
    fill(store, 5)
    backup_into(store, root, durable=False)
    dead = 2**22 + 12345  # above pid_max's default: no such process
    leftovers = [f".tmp-backup-20261201T000000.000000Z-incr-{dead}-0badcafe",
                 f".tmp-prune-20261130T000000.000000Z-full-{dead}-deadbeef"]
    for name in leftovers:
        Path(root, name, "log").mkdir(parents=True)
    assert [e.name for e in scan(root)] == [scan(root)[0].name]  # a temp name is never a backup
    report = backup_into(store, root, durable=False)
    swept = sorted(os.path.basename(f.path) for f in report.findings if f.code == "backup-stale-temp")
    assert swept == sorted(leftovers) and not any(n.startswith(".tmp-") for n in os.listdir(root))
    alive = f".tmp-backup-x-{os.getppid()}-0badcafe"  # a running process's: left alone
    Path(root, alive).mkdir()
    prune(root, keep_last=1)
    assert os.path.isdir(os.path.join(root, alive))


def test_set_commands_pointed_at_the_wrong_folder_write_nothing(tmp_path: Path) -> None:
    store, runner = str(tmp_path / "s"), CliRunner()
    fill(store, 5)
    empty = tmp_path / "empty"
    empty.mkdir()
    got = runner.invoke(cli, ["prune", str(empty), "--keep-last", "1"])
    assert got.exit_code == 2 and os.listdir(empty) == []  # not even a lock file
    got = runner.invoke(cli, ["backups", store])
    assert got.exit_code == 2 and "not a backup set" in got.output
    notastore = tmp_path / "notastore"
    notastore.mkdir()
    (notastore / "notes.txt").write_text("mine")
    got = runner.invoke(cli, ["backup", str(notastore), "--into", str(tmp_path / "newroot")])
    assert got.exit_code == 2, got.output
    assert not (tmp_path / "newroot").exists()
