"""Format 3's byte layouts, one module per kind of file: :mod:`.record` (one event's line),
:mod:`.segment` (a log segment and its sealed offset index) and :mod:`.pack` (compressed, merged
segments). Each module is the only code that writes or slices its bytes; see ``docs/FORMAT.md``."""
