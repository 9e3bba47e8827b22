"""The DCB value types: events, queries and append conditions (the public API of the README)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import FrozenInstanceError, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .errors import InvalidArgument

JSON = Any


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def property_tag(key: str, value: JSON) -> str:
    """The tag that stands for a kroniko data property: ``key:value``.

    Strings are used as they are; other scalars by their JSON text (``2``, ``2.5``, ``true``,
    ``null``). So ``2`` and ``"2"`` give the same tag, as they shared one index file in the
    Ruby store: a property query may match more events, never fewer, which keeps an append
    condition built from it safe.
    """
    if not isinstance(key, str):
        raise InvalidArgument(f"property name must be a string, got {type(key).__name__}")
    if isinstance(value, str):
        return f"{key}:{value}"
    if value is None or isinstance(value, (bool, int, float)):
        return f"{key}:{orjson.dumps(value).decode()}"
    raise InvalidArgument(
        f"property {key!r} must be a scalar (string, number, boolean or null), "
        f"got {type(value).__name__}"
    )


def _frozen_slots(cls: type) -> type:
    """Mend what ``dataclass(frozen=True, slots=True)`` generates on Python 3.11: its
    ``__setattr__``/``__delattr__`` refer to the class as it was before the slots were added, so
    setting a name that is no field raised TypeError, not :class:`FrozenInstanceError`; and its
    ``__setstate__`` would read the attribute dict of a pickle made before the slots as a
    tuple, silently giving each field a key's name."""
    names = tuple(f.name for f in fields(cls))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    def __setstate__(self: Any, state: Any) -> None:
        if isinstance(state, dict):  # pickled by a version whose instances had a __dict__
            values = [state[name] for name in names]
        else:
            values = list(state)
        for name, value in zip(names, values, strict=True):
            object.__setattr__(self, name, value)

    cls.__setattr__ = __setattr__  # type: ignore[method-assign,assignment]
    cls.__delattr__ = __delattr__  # type: ignore[method-assign,assignment]
    cls.__setstate__ = __setstate__  # type: ignore[attr-defined]
    return cls


@_frozen_slots
@dataclass(frozen=True, eq=True, slots=True, weakref_slot=True)
class Event:
    """An event to append, or one read back.

    ``data`` is any JSON value; ``tags`` are strings; ``id`` is generated at append time when
    None (1-64 characters of ``[A-Za-z0-9._-]`` otherwise).

    Slotted, like :class:`SequencedEvent`: an application that keeps the events it read holds one
    object per event here, not an object and its attribute dict, which halves what Python's
    cyclic garbage collector scans at every collection while they age. So neither has a
    ``__dict__`` (``vars()``); both take weak references and pickle, pickles of earlier versions
    included.
    """

    type: str
    data: JSON = None
    tags: Sequence[str] = ()
    metadata: dict[str, JSON] | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        # A list passed as tags is frozen to a tuple so that an Event compares equal to its read-back.
        if isinstance(self.tags, list):
            object.__setattr__(self, "tags", tuple(self.tags))

    __hash__ = None  # type: ignore[assignment]  # data may be a dict


@_frozen_slots
@dataclass(frozen=True, slots=True, weakref_slot=True)
class SequencedEvent:
    """An event together with the position the store gave it.

    ``commit_us`` is when its batch was committed (microseconds since the Unix epoch, UTC; 0 for
    events stored before commit times were recorded), ``batch_end`` whether it is the last event
    of its batch (a valid point for ``restore --to-position``). Neither takes part in equality.
    """

    position: int
    event: Event
    commit_us: int = field(default=0, compare=False)
    batch_end: bool = field(default=False, compare=False)

    @property
    def committed_at(self) -> datetime | None:
        """When the event's batch was committed (UTC), or None when the store did not record it."""
        if not self.commit_us:
            return None
        return _EPOCH + timedelta(microseconds=self.commit_us)

    @property
    def type(self) -> str:
        """The event's type."""
        return self.event.type

    @property
    def data(self) -> JSON:
        """The event's data."""
        return self.event.data

    @property
    def tags(self) -> Sequence[str]:
        """The event's tags, in the order they were appended."""
        return self.event.tags

    @property
    def id(self) -> str:
        """The event's id (always set on a stored event)."""
        assert self.event.id is not None
        return self.event.id

    @property
    def metadata(self) -> dict[str, JSON] | None:
        """The event's metadata."""
        return self.event.metadata

    __hash__ = None  # type: ignore[assignment]


def _strings(values: Iterable[str] | str | None, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        raise InvalidArgument(f"{what} must be a list of strings, not one string: {values!r}")
    out = tuple(values)
    for v in out:
        if not isinstance(v, str):
            raise InvalidArgument(f"{what} must be strings, got {type(v).__name__}: {v!r}")
    return out


@dataclass(frozen=True, init=False)
class QueryItem:
    """One clause of a query: the event's type is any of ``types`` (or any type when empty) and
    it carries all of ``tags``. ``properties={"cart_id": "7"}`` adds the tag ``cart_id:7``."""

    types: tuple[str, ...]
    tags: tuple[str, ...]

    def __init__(
        self,
        types: Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        properties: Mapping[str, JSON] | None = None,
    ) -> None:
        tag_list = list(_strings(tags, "QueryItem tags"))
        if properties:
            tag_list.extend(property_tag(k, v) for k, v in properties.items())
        object.__setattr__(self, "types", _strings(types, "QueryItem types"))
        object.__setattr__(self, "tags", tuple(dict.fromkeys(tag_list)))

    def matches(self, type_: str, tags: Iterable[str]) -> bool:
        """Whether an event of this type with these tags matches this item."""
        if self.types and type_ not in self.types:
            return False
        if self.tags:
            have = set(tags)
            return all(t in have for t in self.tags)
        return True


@dataclass(frozen=True, init=False)
class Query:
    """Items OR'ed together; ``Query.all()`` (no items) matches every event."""

    items: tuple[QueryItem, ...] = field(default=())

    def __init__(self, items: Iterable[QueryItem] = ()) -> None:
        out = tuple(items)
        for it in out:
            if not isinstance(it, QueryItem):
                raise InvalidArgument(f"Query items must be QueryItem, got {type(it).__name__}")
        object.__setattr__(self, "items", out)

    @classmethod
    def all(cls) -> Query:
        """The query that matches every event."""
        return cls(())

    @property
    def is_all(self) -> bool:
        """True when the query matches every event (no items, or an item with no constraint)."""
        return not self.items or any(not it.types and not it.tags for it in self.items)

    def matches(self, type_: str, tags: Iterable[str]) -> bool:
        """Whether an event of this type with these tags matches the query."""
        if self.is_all:
            return True
        tags = tuple(tags)
        return any(it.matches(type_, tags) for it in self.items)


@dataclass(frozen=True)
class AppendCondition:
    """Fail the append if an event matching ``fail_if_events_match`` exists after ``after``.

    ``after=None`` means: fail if any matching event exists at all.
    """

    fail_if_events_match: Query
    after: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.fail_if_events_match, Query):
            raise InvalidArgument("AppendCondition.fail_if_events_match must be a Query")
        if self.after is not None and (
            isinstance(self.after, bool) or not isinstance(self.after, int) or self.after < 0
        ):
            raise InvalidArgument(f"AppendCondition.after must be an int >= 0, got {self.after!r}")


def read_arguments(query: Query | None, start: int | None, limit: int | None) -> Query:
    """The query a read runs (every event when None), once ``query``, ``start`` and ``limit``
    are checked (:class:`InvalidArgument` naming the bad one): shared by every store's ``read``."""
    query = Query.all() if query is None else query
    if not isinstance(query, Query):
        raise InvalidArgument(f"query must be a Query, got {type(query).__name__}")
    for name, value in (("start", start), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidArgument(f"{name} must be an int >= 0, got {value!r}")
    return query


def read_bounds(head: int, start: int | None, backwards: bool) -> tuple[int, int]:
    """The positions ``lo..hi`` a read up to ``head`` covers: ``start`` is inclusive, the first
    position going forwards and the last going backwards (``lo > hi`` when nothing is left)."""
    lo, hi = 1, head
    if start is not None:
        if backwards:
            hi = min(hi, start)
        else:
            lo = max(lo, start)
    return lo, hi
