"""The generator of legacy stores writes what the Ruby gem writes."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from kroniko_ops.layout import is_legacy
from kroniko_ops.legacy.reader import RUBY_ID_RE
from kroniko_ops.legacy.rubyindex import ruby_float, ruby_inspect, ruby_to_s
from kroniko_ops.legacy.synth import LegacyWriter, pretty, write_shop_store


def test_pretty_is_byte_identical_to_the_gems_event_files(legacy_clean: str) -> None:
    folder = os.path.join(legacy_clean, "events")
    names = sorted(os.listdir(folder))
    assert len(names) == 400
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            raw = f.read()
        assert pretty(json.loads(raw)) == raw


def test_generated_store_has_the_gems_layout(tmp_path: Path, legacy_clean: str) -> None:
    root = str(tmp_path / "g")
    ids = write_shop_store(root, 500, seed=3)
    assert is_legacy(root)
    assert all(RUBY_ID_RE.match(i) for i in ids) and len(set(ids)) == 500
    with open(os.path.join(root, "log", "append.log")) as f:
        assert f.read().splitlines() == ids
    assert sorted(os.listdir(os.path.join(root, "index"))) == sorted(os.listdir(os.path.join(legacy_clean, "index")))
    for rel in ("data.code/WINTER/25.jsonl", "data.code/.jsonl", "data.code/2.jsonl", 'data.tags/["x", "y"].jsonl',
                "data.plan/.jsonl", "type/Shop::CouponApplied.jsonl"):
        assert os.path.exists(os.path.join(root, "index", rel)), rel


def test_ruby_to_s_matches_the_fixture_file_names(legacy_clean: str) -> None:
    """Every data index file of the fixture is named by ruby_to_s of the values it lists."""
    with open(os.path.join(legacy_clean, "log", "append.log")) as f:
        ids = f.read().splitlines()
    seen = 0
    for eid in ids:
        with open(os.path.join(legacy_clean, "events", eid + ".json")) as f:
            doc = json.load(f)
        for key, value in doc["data"].items():
            path = os.path.join(legacy_clean, "index", f"data.{key}", ruby_to_s(value) + ".jsonl")
            with open(path) as f:
                assert eid in f.read().splitlines()
            seen += 1
    assert seen > 1000


def test_ruby_formatting_rules() -> None:
    assert [ruby_float(x) for x in (89.0, 1e20, 1e16, 1e15, 1e-5, 0.0001, -0.0)] == [
        "89.0", "1.0e+20", "1.0e+16", "1000000000000000.0", "1.0e-05", "0.0001", "-0.0"]
    assert [ruby_to_s(v) for v in (None, True, 2, "2", ["x", "y"], {"a": None})] == [
        "", "true", "2", "2", '["x", "y"]', '{"a"=>nil}']
    assert ruby_inspect('say "hi"\n#{x}') == '"say \\"hi\\"\\n\\#{x}"'


def test_writer_can_stop_where_a_crash_would(tmp_path: Path) -> None:
    with LegacyWriter(str(tmp_path / "c"), rng=random.Random(2)) as w:
        a = w.append("A", {"k": 1}, index=False)
        b = w.append("B", {"k": 2}, log=False)
    with open(os.path.join(w.root, "log", "append.log")) as f:
        assert f.read() == a + "\n"
    assert os.path.exists(os.path.join(w.root, "events", b + ".json"))
    assert not os.path.exists(os.path.join(w.root, "index", "type", "A.jsonl"))
