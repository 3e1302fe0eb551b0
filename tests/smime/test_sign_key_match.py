"""sign_content refuses a private key that is not the certificate's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from testpki import end_entity, make_pki

from secmail.errors import InvalidKeyError
from secmail.smime.sign import sign_content

AT = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "kind",
    [
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        lambda: ec.generate_private_key(ec.SECP256R1()),
        ed25519.Ed25519PrivateKey.generate,
    ],
    ids=["rsa", "p256", "ed25519"],
)
def test_only_the_certificates_own_key_signs(kind: Callable[[], PrivateKeyTypes]) -> None:
    pki = make_pki()
    key = kind()
    owner = end_entity(pki.intermediate, "alice@ac-besancon.fr", key)
    assert sign_content(b"x", private_key=key, cert=owner.cert, signing_time=AT)
    for other in (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
        ed25519.Ed25519PrivateKey.generate(),
    ):
        with pytest.raises(InvalidKeyError):
            sign_content(b"x", private_key=other, cert=owner.cert, signing_time=AT)
