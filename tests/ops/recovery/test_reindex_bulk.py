"""reindex builds the index in bulk (term ids from a counter, bodies parsed a run at a time): the
index it builds holds exactly the rows the engine writes while appending, whatever the tags."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kroniko_ops import Event, EventStore, fsck, reindex
from kroniko_ops.index import TAG, TYPE, Index
from kroniko_ops.indexdb import generations

_tag = st.sampled_from(["a", "b", "c", "cart:1", "é", "x y"])
_event = st.tuples(st.sampled_from(["T", "U"]), st.lists(_tag, max_size=4))


def _rows(path: str) -> tuple[set[tuple[int, str, int]], set[tuple[str, int]], int]:
    folder = os.path.join(path, "index")
    con = sqlite3.connect(os.path.join(folder, f"{generations(folder)[-1]:06d}.sqlite3"))
    try:
        post = set(con.execute("SELECT t.kind, t.name, p.position FROM postings p JOIN terms t ON t.id = p.term"))
        ids = set(con.execute("SELECT eid, position FROM ids"))
        dup = con.execute("SELECT count(*) - count(DISTINCT kind || ':' || name) FROM terms").fetchone()[0]
        return post, ids, dup
    finally:
        con.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_event, min_size=1, max_size=5), min_size=1, max_size=6))
def test_reindex_rebuilds_what_the_engine_wrote(tmp_path: Path, batches: list[list[tuple[str, list[str]]]]) -> None:
    path = str(tmp_path / f"s{len(os.listdir(tmp_path))}")
    with EventStore(path, durable=False, segment_bytes=4096) as store:
        for batch in batches:
            store.append([Event(t, {"n": i}, tags) for i, (t, tags) in enumerate(batch)])
        store.sync_idle()
        with store.locked():
            store.flush_index()
    before = _rows(path)
    assert reindex(path).exit_code == 0
    assert _rows(path) == before
    assert before[2] == 0
    assert fsck(path).exit_code == 0


def test_handles_with_stale_caches_share_term_ids(tmp_path: Path) -> None:
    folder = str(tmp_path / "index")
    os.makedirs(folder)
    a = Index(folder)
    b = Index(folder)
    try:
        a.add([(1, "e1", "T", ["x", "y"])], (1, b"\x01" * 32))
        b.add([(2, "e2", "T", ["y", "z"])], (2, b"\x02" * 32))  # b never saw T or y: it finds them
        terms = dict(((k, n), i) for i, k, n in a.con.execute("SELECT id, kind, name FROM terms"))
        assert sorted(terms) == [(TYPE, "T"), (TAG, "x"), (TAG, "y"), (TAG, "z")]
        post = set(a.con.execute("SELECT term, position FROM postings"))
        assert post == {(terms[(TYPE, "T")], 1), (terms[(TAG, "x")], 1), (terms[(TAG, "y")], 1),
                        (terms[(TYPE, "T")], 2), (terms[(TAG, "y")], 2), (terms[(TAG, "z")], 2)}
    finally:
        a.close()
        b.close()


def test_a_built_database_is_a_private_handle(tmp_path: Path) -> None:
    built = Index.at(str(tmp_path / ".tmp-1-000002.sqlite3"))
    try:
        built.add([(1, "e1", "T", ["x"]), (2, "e2", "T", ["x"])], (2, b"\x02" * 32))
        assert built.checkpoint() == (2, b"\x02" * 32)
        assert not built.stale()
    finally:
        built.close()
    again = Index.at(str(tmp_path / ".tmp-1-000002.sqlite3"))  # reopened: its terms are looked up
    try:
        again.add([(3, "e3", "T", ["x", "w"])], (3, b"\x03" * 32))
        assert again.counts() == {"terms": 3, "postings": 7, "ids": 3}
    finally:
        again.close()
