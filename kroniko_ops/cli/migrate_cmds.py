"""Commands of this group (being ported to format 3)."""

from . import cli  # noqa: F401
