"""The DCB contract suite: tests any store implementing the kroniko-ops API must pass.

Subclass :class:`DCBContract`, override :meth:`~DCBContract.make_store`, and name the subclass
``Test...`` so pytest collects it::

    from kroniko_ops import EventStore
    from kroniko_ops.testing import DCBContract

    class TestMyStore(DCBContract):
        def make_store(self, path):
            return EventStore(path)

Needs the ``test`` extra (pytest and hypothesis). Importing ``kroniko_ops`` never imports this.
"""

from .contract import DCBContract

__all__ = ["DCBContract"]
