"""PostgreSQL URLs: split off kroniko's own ``schema`` parameter and redact the password.

A URL's password never appears in output or errors: every message names a store through
:func:`redact`, and :func:`scrub` removes the password from text a driver produced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import InvalidArgument

SCHEMES = ("postgresql", "postgres")
_SCHEMA_RE = re.compile(r"\A[a-z_][a-z0-9_]{0,62}\Z")
DEFAULT_SCHEMA = "kroniko"


def is_url(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL store rather than a folder."""
    return target.split("://", 1)[0].lower() in SCHEMES and "://" in target


@dataclass(frozen=True)
class PgUrl:
    """A parsed URL: ``conninfo`` for libpq (password included), ``schema`` for our tables,
    ``shown`` the URL with its password replaced by ``***``, ``password`` to scrub from messages."""

    conninfo: str
    schema: str
    shown: str
    password: str | None


def parse(url: str, schema: str | None = None) -> PgUrl:
    """Parse ``postgresql://user:pw@host:port/db?schema=name&...`` (``schema`` defaults to
    ``kroniko``); raise :class:`InvalidArgument` (with the password redacted) when malformed."""
    if not isinstance(url, str) or not is_url(url):
        raise InvalidArgument(f"not a postgresql:// URL: {redact(str(url))}")
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    chosen = schema or next((v for k, v in query if k == "schema"), None) or DEFAULT_SCHEMA
    if not _SCHEMA_RE.match(chosen):
        raise InvalidArgument(f"schema name {chosen!r} must be lower-case letters, digits and _")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, ""))
    try:
        password = parts.password
    except ValueError:
        password = None
    return PgUrl(conninfo, chosen, redact(url), password)


def display(target: str) -> str:
    """How a report names a target: a URL without its password, a folder as given."""
    return redact(target) if is_url(target) else target


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def scrub(text: str, password: str | None) -> str:
    """``text`` without ``password`` (driver messages may quote a conninfo)."""
    text = re.sub(r"(://[^:/@\s]*:)[^@/\s]*@", r"\1***@", text)
    text = re.sub(r"password=\S+", "password=***", text)
    return text.replace(password, "***") if password else text
