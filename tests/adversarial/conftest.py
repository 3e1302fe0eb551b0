"""Fixtures of the adversarial suite: one cast and one server per session.

The server is shared (populating it is the slow part); no test here
changes its state, except through its own ``world`` on a fresh directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from adv_support import Cast, GnuPG, make_cast, world
from service_support import Client


@pytest.fixture(scope="session")
def cast() -> Cast:
    return make_cast()


@pytest.fixture(scope="session")
def academy(cast: Cast, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    yield from world(Path(tmp_path_factory.mktemp("adv")) / "data", cast)


@pytest.fixture(scope="session")
def gpg(cast: Cast) -> Iterator[GnuPG]:
    """GnuPG holding alice's, bob's and eve's secret keys."""
    g = GnuPG()
    for key in (cast.pgp_alice, cast.pgp_bob, cast.pgp_eve):
        g.import_key(key.armored_tsk)
    yield g
    g.close()
