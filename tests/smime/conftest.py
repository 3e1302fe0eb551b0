"""Fixtures for the S/MIME tests: one generated PKI per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from smime_pki import VALIDATION_TIME, SmimePKI, build_pki, write_files

from secmail.context import TrustContext, VerifyContext
from secmail.policy import DEFAULT_POLICY


@pytest.fixture(scope="session")
def pki() -> SmimePKI:
    return build_pki()


@pytest.fixture(scope="session")
def pki_dir(pki: SmimePKI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("smime-pki")
    write_files(pki, directory)
    return directory


@pytest.fixture
def ctx(pki: SmimePKI) -> VerifyContext:
    """Judged at the pinned validation time, trusting the test root."""
    return VerifyContext(at=VALIDATION_TIME, policy=DEFAULT_POLICY, trust=TrustContext(anchors=(pki.root,)))
