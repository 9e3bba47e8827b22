"""Arguments that mix folders and postgresql:// URLs wrongly are refused before anything is
opened (exit 2, nothing written, the URL's password never shown); no server is needed."""

from __future__ import annotations

import os

from click.testing import CliRunner

from kroniko_ops.cli import cli

URL = "postgresql://app:hunter2-secret@127.0.0.1:1/db"


def run(*args: str):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, list(args))
    assert "hunter2-secret" not in result.output
    return result


def test_migrate_between_two_urls_is_refused() -> None:
    res = run("migrate", URL, URL + "?schema=other")
    assert res.exit_code == 2 and "between a folder and a database" in res.output


def test_mirror_needs_a_folder_then_a_url(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for args in (("mirror", str(tmp_path), str(tmp_path / "x")), ("mirror", URL, URL)):
        res = run(*args)
        assert res.exit_code == 2 and "mirror STORE URL" in res.output
    assert os.listdir(tmp_path) == []


def test_fsck_repair_of_a_url_is_refused() -> None:
    res = run("fsck", URL, "--repair")
    assert res.exit_code == 2 and "only checked" in res.output


def test_power_loss_torture_of_a_url_is_refused(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    res = run("torture", URL, "--power-loss")
    assert res.exit_code == 2 and os.listdir(tmp_path) == []


def test_a_bad_schema_name_is_refused_with_the_password_hidden() -> None:
    res = run("read", URL + "?schema=Robert';DROP")
    assert res.exit_code == 2 and "schema name" in res.output


def test_file_only_commands_refuse_a_postgres_store_without_showing_its_password(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    keywords = "host=127.0.0.1 port=1 dbname=db password=hunter2-secret"
    for args in (("recover", URL), ("reindex", URL), ("compact", URL), ("backup", URL, "bk"),
                 ("replicate", URL, "rep", "--once"), ("compact", keywords), ("recover", URL, "--json")):
        res = run(*args)
        assert res.exit_code == 2 and "works on store folders only" in res.output, (args, res.output)
    assert os.listdir(tmp_path) == []
