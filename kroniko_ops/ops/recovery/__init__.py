"""Recovery operations: ``recover`` (crash recovery, on demand) and ``reindex`` (a new index
generation built online). ``fsck --repair`` uses both (see :mod:`kroniko_ops.ops.fsck`)."""

from .recover import recover
from .reindex import reindex

__all__ = ["recover", "reindex"]
