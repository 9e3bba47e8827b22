"""First checks of the engine: layout, log lines, and a CLI round trip."""

from __future__ import annotations

import os

from click.testing import CliRunner

from kroniko_ops import Event, EventStore
from kroniko_ops.cli import cli
from kroniko_ops.log import LINE_LEN, decode_line


def test_new_store_lays_out_format_2(store_path: str) -> None:
    with EventStore(store_path) as s:
        assert s.head() == 0
    assert open(os.path.join(store_path, "FORMAT")).readline().strip() == "kroniko-ops format 2"
    for d in ("events", "log", "index", "packs", "locks", "lost-found"):
        assert os.path.isdir(os.path.join(store_path, d))


def test_log_lines_are_fixed_width_and_chained(store_path: str) -> None:
    with EventStore(store_path) as s:
        s.append([Event("A", 1), Event("B", 2)])
        s.append(Event("C", 3))
    raw = open(os.path.join(store_path, "log", "append.log"), "rb").read()
    assert len(raw) == 3 * LINE_LEN
    lines = [decode_line(raw[i * LINE_LEN:(i + 1) * LINE_LEN]) for i in range(3)]
    assert [ln.position for ln in lines] == [1, 2, 3]
    assert [ln.commit for ln in lines] == [False, True, True]
    assert len({ln.chain for ln in lines}) == 3


def test_cli_append_then_read_json(store_path: str) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["init", store_path]).exit_code == 0
    res = runner.invoke(cli, ["append", store_path], input='{"type": "A", "data": {"x": 1}, "tags": ["t:1"]}\n')
    assert res.exit_code == 0, res.output
    assert res.output.strip() == "1"
    res = runner.invoke(cli, ["read", store_path, "--tag", "t:1", "--json"])
    assert '"position":1' in res.output and '"kind":"summary"' in res.output
