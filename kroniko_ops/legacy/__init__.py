"""Stores written by the original Ruby kroniko (format 1): read, check and migrate them.

Format 1 is never written. :mod:`.check` reports what is wrong with such a store (``fsck`` calls
:func:`~kroniko_ops.legacy.check.check_legacy` for a legacy path) and :mod:`.migrate` copies it
into a new format-3 store. Underneath: :mod:`.reader` (the format-1 files, streamed),
:mod:`.rubyindex` (where the gem put index entries), :mod:`.convert` (one log line to one event
or placeholder), :mod:`.target` (the new store, built under a temporary name and published
whole), and :mod:`.synth`, which writes stores in the Ruby layout for tests and benchmarks. See
``docs/LEGACY.md``.
"""
