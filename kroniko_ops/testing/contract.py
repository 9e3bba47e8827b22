"""The DCB contract suite as one class to subclass (like eventsourcing's ``DCBRecorderTestCase``)."""

from __future__ import annotations

from ._base import SAMPLE, DCBStore, ReadResultLike, positions, q
from .appends import AppendContract
from .model import ModelContract
from .reads import ReadContract


class DCBContract(ReadContract, AppendContract, ModelContract):
    """Every rule of the DCB API that any kroniko-ops-compatible store must follow.

    Override :meth:`make_store` to return a new empty store in the folder it is given (a store
    that needs no folder may ignore it), and :meth:`close_store` if closing is not ``close()``.
    Subclass under a ``Test...`` name for pytest to collect it; mixing in
    ``unittest.TestCase`` works too. The tests use only the public API the README documents.
    """


__all__ = ["SAMPLE", "DCBContract", "DCBStore", "ReadResultLike", "positions", "q"]
