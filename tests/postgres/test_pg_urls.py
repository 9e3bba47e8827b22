"""Every connection string libpq accepts names a PostgreSQL store (issue 16 item 10): the
Unix-socket URL ``postgresql:///db?host=/run/postgresql`` (before: refused, ``urlunsplit``
dropped the ``//`` of an empty host), ``postgresql://user@/db?host=...``, ``postgres://...``,
and a keyword string ``host=... dbname=...`` (before: taken for a folder path and created as
nested folders). Tested against the session's real server over its Unix socket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kroniko_ops import Event
from kroniko_ops.postgres import PostgresEventStore, is_url
from kroniko_ops.postgres.server import Server

CLI = [sys.executable, "-c", "from kroniko_ops.cli import main; main()"]


def _forms(server: Server, url: str) -> dict[str, str]:
    db = urlsplit(url).path.lstrip("/")
    sock, port = server.folder, server.port
    return {
        "socket, user in the query": f"postgresql:///{db}?host={sock}&port={port}&user=postgres",
        "socket, user before @": f"postgresql://postgres@/{db}?host={sock}&port={port}",
        "socket, port in the netloc": f"postgresql://postgres@:{port}/{db}?host={sock}",
        "postgres:// scheme": f"postgres://postgres@/{db}?host={sock}&port={port}",
        "percent-encoded socket": f"postgresql://postgres@/{db}?host={sock.replace('/', '%2F')}&port={port}",
        "keywords": f"host={sock} port={port} dbname={db} user=postgres",
        "keywords, quoted": f"host='{sock}' port={port} dbname='{db}' user=postgres",
        "tcp with password": url,
    }


def test_every_form_opens_the_same_store(pg_server: Server, pg_url: str) -> None:
    forms = _forms(pg_server, pg_url)
    for k, (name, target) in enumerate(forms.items()):
        assert is_url(target), name
        with PostgresEventStore(target) as store:
            assert store.append(Event("Seen", {"form": name})) == k + 1, name
            assert [e.data["form"] for e in store.read()] == list(forms)[:k + 1], name


def test_a_schema_parameter_is_kept_out_of_libpq(pg_server: Server, pg_url: str) -> None:
    forms = _forms(pg_server, pg_url)
    with PostgresEventStore(forms["socket, user in the query"] + "&schema=other") as s:
        s.append(Event("Other", 1))
    with PostgresEventStore(forms["keywords"] + " schema=other") as s:
        assert [e.type for e in s.read()] == ["Other"]
    with PostgresEventStore(pg_url) as s:
        assert s.head() == 0  # the default schema is another store


def test_the_command_line_takes_them_and_creates_no_folder(pg_server: Server, pg_url: str, tmp_path: Path) -> None:
    forms = _forms(pg_server, pg_url)
    env = {**os.environ, "PGUSER": "postgres"}
    bare = forms["socket, user in the query"].replace("&user=postgres", "")  # the user from PGUSER
    done = subprocess.run([*CLI, "init", forms["keywords"]], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    for name, target in [*forms.items(), ("socket, user from PGUSER", bare)]:
        done = subprocess.run([*CLI, "append", target], input='{"type":"A","data":1}\n', capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=60)
        assert done.returncode == 0, (name, done.stderr)
        checked = name in ("keywords", "socket, user from PGUSER")
        more = (["fsck", target], ["read", target, "--limit", "1"]) if checked else ()
        for args in (["head", target], *more):
            done = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
            assert done.returncode == 0, (name, args, done.stderr)
    assert os.listdir(tmp_path) == [], "a connection string was taken for a folder"
    with PostgresEventStore(pg_url) as s:
        assert s.head() == len(forms) + 1


@pytest.mark.parametrize("path", ["./store", "store", "/tmp/x/host=y", "hosts=1", "data/dbname=x"])
def test_folders_stay_folders(path: str) -> None:
    assert not is_url(path)
