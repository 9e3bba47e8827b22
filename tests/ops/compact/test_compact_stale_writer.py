"""A handle that last appended before other handles rolled the log past its segment, and before
compaction packed that segment, must still append to the active segment: its acknowledged events
must be stored. (An engine bug found while porting compaction: the writer noticed a roll only
by the ``.idx`` of its segment appearing, and compaction removes that ``.idx`` with the segment;
it now also notices that its segment file has no name left.)"""

from __future__ import annotations

from kroniko_ops import Event, EventStore
from kroniko_ops.ops.compact import compact


def test_an_idle_handle_appends_after_its_segment_was_packed(store_path: str) -> None:
    with EventStore(store_path, durable=False, segment_bytes=4096) as a, EventStore(store_path, durable=False) as b:
        b.append(Event("T", {"who": "b"}, [], id="b-1"))  # b's writer now holds log/000000000001.seg
        for i in range(40):  # a rolls the log past segment 1
            a.append(Event("T", {"i": i, "pad": "x" * 200}, [], id=f"a-{i}"))
        assert compact(store_path).exit_code == 0  # packs segment 1 and removes it
        position = b.append(Event("T", {"who": "b"}, [], id="b-2"))
    with EventStore(store_path, create=False) as fresh:
        stored = {e.event.id: e.position for e in fresh.read()}
    assert stored.get("b-2") == position == 42
