"""One server and its genuine base messages for the whole property suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prop_support import World, make_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("prop") / "data")
