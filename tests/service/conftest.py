"""Fixtures for the gRPC tests (helpers live in tests/support/service_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from service_support import Client, People, client_fixture, make_people, setup_academy


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    yield from client_fixture(tmp_path)


@pytest.fixture(scope="session")
def people() -> People:
    return make_people()


@pytest.fixture
def academy(client: Client, people: People) -> Client:
    return setup_academy(client, people)
