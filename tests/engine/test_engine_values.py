"""The value types a reader gets back: read events are frozen, compare equal to what was
appended, take weak references, and pickle, pickles made before they were slotted included."""

from __future__ import annotations

import copyreg
import dataclasses
import io
import pickle
import weakref
from typing import Any

import pytest

from kroniko_ops import Event, EventStore, SequencedEvent


@pytest.fixture
def read_back(store_path: str) -> SequencedEvent:
    """An event appended and read back through the bulk builder (a run of several events)."""
    with EventStore(store_path, durable=False) as store:
        store.append([Event("Placed", {"n": k, "items": [1, 2]}, ["order:1"], {"by": "me"}, f"e-{k}")
                      for k in range(40)])
        return list(store.read())[7]


def test_a_read_event_is_frozen_field_or_not(read_back: SequencedEvent) -> None:
    for target, name in ((read_back, "position"), (read_back, "data"), (read_back.event, "type"),
                         (read_back.event, "anything")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(target, name, 1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(target, name)


def test_a_read_event_equals_its_append_and_takes_weak_references(read_back: SequencedEvent) -> None:
    assert read_back.event == Event("Placed", {"n": 7, "items": [1, 2]}, ["order:1"], {"by": "me"}, "e-7")
    assert weakref.ref(read_back)() is read_back
    assert weakref.ref(read_back.event)() is read_back.event


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_read_event_pickles(read_back: SequencedEvent, protocol: int) -> None:
    again = pickle.loads(pickle.dumps(read_back, protocol))
    assert again == read_back
    assert (again.commit_us, again.batch_end) == (read_back.commit_us, read_back.batch_end)


class _PicklerBeforeSlots(pickle.Pickler):
    """Pickles events as every version before the slotted classes did: the class, then its
    instance's attribute dict as the state."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) in (Event, SequencedEvent):
            return copyreg.__newobj__, (type(obj),), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return NotImplemented


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_made_before_the_slots_loads_as_it_was(read_back: SequencedEvent, protocol: int) -> None:
    out = io.BytesIO()
    _PicklerBeforeSlots(out, protocol).dump(read_back)
    again = pickle.loads(out.getvalue())
    assert type(again) is SequencedEvent and type(again.event) is Event
    assert again == read_back
    assert (again.commit_us, again.batch_end) == (read_back.commit_us, read_back.batch_end)
