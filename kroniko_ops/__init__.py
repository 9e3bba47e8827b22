"""kroniko-ops: a file-based, append-only DCB event store and the tools that keep it healthy."""

from .errors import (
    AccessDenied,
    AppendConditionFailed,
    DurabilityError,
    InvalidArgument,
    InvalidEvent,
    KronikoError,
    LegacyStore,
    StoreClosed,
    StoreCorrupted,
    StoreLocked,
    StoreNotFound,
)
from .model import AppendCondition, Event, Query, QueryItem, SequencedEvent, property_tag
from .store import EventStore, ReadResult

__version__ = "0.1.0"

# Maintenance entry points (the README's Python API), imported on first use so that ``import kroniko_ops``
# stays cheap for applications that only append and read.
_OPERATIONS = {
    "fsck": "kroniko_ops.ops.fsck",
    "recover": "kroniko_ops.ops.recovery",
    "reindex": "kroniko_ops.ops.recovery",
    "compact": "kroniko_ops.ops.compact",
    "backup": "kroniko_ops.ops.backup",
    "verify_backup": "kroniko_ops.ops.backup",
    "restore": "kroniko_ops.ops.backup",
    "migrate": "kroniko_ops.legacy.migrate",
}


def __getattr__(name: str) -> object:
    if name in _OPERATIONS:
        import importlib

        return getattr(importlib.import_module(_OPERATIONS[name]), name)
    raise AttributeError(f"module 'kroniko_ops' has no attribute {name!r}")


__all__ = [
    "AccessDenied",
    "AppendCondition",
    "AppendConditionFailed",
    "DurabilityError",
    "Event",
    "EventStore",
    "InvalidArgument",
    "InvalidEvent",
    "KronikoError",
    "LegacyStore",
    "Query",
    "QueryItem",
    "ReadResult",
    "backup",
    "compact",
    "fsck",
    "migrate",
    "recover",
    "reindex",
    "restore",
    "verify_backup",
    "SequencedEvent",
    "StoreClosed",
    "StoreCorrupted",
    "StoreLocked",
    "StoreNotFound",
    "property_tag",
]
