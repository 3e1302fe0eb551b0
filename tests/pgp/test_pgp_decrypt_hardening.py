"""Regression tests from the end-of-session review of secmail/pgp/decrypt.py."""

from __future__ import annotations

import pytest

from secmail.errors import DecryptionError, IntegrityError
from secmail.pgp import decrypt as d
from secmail.pgp import packets as pk


def test_seipd_v1_failures_share_one_message() -> None:
    # A short body and a wrong MDC must read the same: which one it was
    # would tell whether a forged RSA session key opened (RFC 3218 §2.3.2).
    key = bytes(32)
    messages = set()
    for body in (b"\x01" + bytes(20), b"\x01" + bytes(200)):
        with pytest.raises(IntegrityError) as err:
            d._decrypt_seipd_v1(body, 9, key)  # AES-256
        messages.add(err.value.message)
    assert len(messages) == 1


@pytest.mark.parametrize("algorithm", [pk.PK_X25519, pk.PK_X448])
def test_empty_x_pkesk_is_a_clean_decryption_error(algorithm: int) -> None:
    size = 56 if algorithm == pk.PK_X448 else 32
    # v3 PKESK material: ephemeral key, then a zero-length session-key field
    # that has no room for the cipher octet.
    pkesk = pk.PKESK(version=3, recipient="", algorithm=algorithm, material=bytes(size) + b"\x00", raw=b"")
    key = pk.KeyPacket.__new__(pk.KeyPacket)
    object.__setattr__(key, "algorithm", algorithm)
    with pytest.raises(DecryptionError):
        d._unwrap_x(pkesk, key)
