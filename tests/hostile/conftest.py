"""Fixtures of the hostile-store tests: one template store per session, copied per test."""

from __future__ import annotations

import pytest
from hostile_helpers import Template


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """A store with a pack, sealed and active segments, an index, and a backup of it."""
    return Template(tmp_path_factory.mktemp("hostile-template"))
