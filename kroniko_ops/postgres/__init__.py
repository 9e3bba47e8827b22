"""The DCB event store on PostgreSQL (``pip install 'kroniko-ops[postgres]'``; ``docs/POSTGRES.md``).

:func:`open_store` is the one place a command turns a target (folder or ``postgresql://`` URL)
into a store.
"""

from __future__ import annotations

from typing import Any

from .url import display, is_url

_PG_OPTIONS = ("create", "durable", "lock_timeout", "max_event_bytes")


def open_store(target: str, **kwargs: Any) -> Any:
    """An :class:`~kroniko_ops.EventStore` for a folder, a :class:`PostgresEventStore` for a URL
    (``create``, ``durable``, ``lock_timeout`` and ``max_event_bytes`` pass through; the file
    store's layout options, such as ``segment_bytes``, mean nothing to a database)."""
    if is_url(target):
        from .store import PostgresEventStore

        keep = {k: v for k, v in kwargs.items() if k in _PG_OPTIONS}
        return PostgresEventStore(target, **keep)
    from ..store import EventStore

    return EventStore(target, **kwargs)


def __getattr__(name: str) -> Any:
    # psycopg is an optional extra: imported when the store is first named, not with the package.
    if name == "PostgresEventStore":
        from .store import PostgresEventStore

        return PostgresEventStore
    raise AttributeError(name)


__all__ = ["PostgresEventStore", "display", "is_url", "open_store"]
