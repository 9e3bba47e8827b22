"""Helpers shared by the harness tests."""

from __future__ import annotations

from typing import Any


def rendered(found: list[tuple[str, Any]], limit: int = 10) -> str:
    """The first violations of a sweep, each under the label of its case."""
    return "\n".join(f"{label}\n{v.render()}" for label, v in found[:limit])
