"""Session-wide OpenPGP keys: generated once, used by every pgp test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pgp_support import GnuPG, KeyPair

from secmail.pgp import _backend
from secmail.pgp.keys import parse_openpgp_keys


def _pair_from_tsk(tsk: bytes, address: str) -> KeyPair:
    parsed = parse_openpgp_keys(tsk, None)[0]
    assert parsed.private_data is not None
    return KeyPair(parsed.private_data, parsed.public_data, parsed.key_id, address)


@pytest.fixture(scope="session")
def alice() -> KeyPair:
    """v4, Ed25519 + Cv25519 (Sequoia-generated)."""
    tsk = _backend.generate_tsk(["Alice <alice@Example.ORG>"])
    return _pair_from_tsk(tsk, "alice@example.org")


@pytest.fixture(scope="session")
def carol_v6() -> KeyPair:
    """v6 (RFC 9580), Ed25519 + X25519."""
    tsk = _backend.generate_tsk(["Carol <carol@example.org>"], v6=True)
    return _pair_from_tsk(tsk, "carol@example.org")


@pytest.fixture(scope="session")
def dave_p256() -> KeyPair:
    tsk = _backend.generate_tsk(["Dave <dave@example.org>"], suite="p256")
    return _pair_from_tsk(tsk, "dave@example.org")


@pytest.fixture(scope="session")
def erin_448() -> KeyPair:
    tsk = _backend.generate_tsk(["Erin <erin@example.org>"], suite="cv448", v6=True)
    return _pair_from_tsk(tsk, "erin@example.org")


@pytest.fixture(scope="session")
def gpg() -> Iterator[GnuPG]:
    g = GnuPG()
    yield g
    g.close()


@pytest.fixture(scope="session")
def bob_rsa(gpg: GnuPG) -> KeyPair:
    """v4 RSA-3072 (sign primary, RSA-3072 encryption subkey), made by
    GnuPG, so that it advertises SEIPDv1 only and senders use v3 PKESKs."""
    fpr = gpg.gen_key("Bob <bob@example.org>", "rsa3072", "rsa3072")
    return _pair_from_tsk(gpg.export_secret(fpr), "bob@example.org")


@pytest.fixture(scope="session")
def gpg_ed(gpg: GnuPG) -> KeyPair:
    """v4 Ed25519/Cv25519 made by GnuPG (EdDSALegacy + ECDH Curve25519)."""
    fpr = gpg.gen_key("Gina <gina@example.org>", "ed25519", "cv25519")
    return _pair_from_tsk(gpg.export_secret(fpr), "gina@example.org")


@pytest.fixture(scope="session")
def rsa_sequoia() -> KeyPair:
    """v4 RSA-3072 made by Sequoia: its certificate advertises SEIPDv2, so
    Sequoia 2 senders write v6 PKESKs to it (which GnuPG 2.2 cannot open)."""
    tsk = _backend.generate_tsk(["Rob <rob@example.org>"], suite="rsa3k")
    return _pair_from_tsk(tsk, "rob@example.org")
