"""Envelope encryption (seal.py)."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from secmail.errors import SecmailError
from secmail.keystore import seal
from secmail.keystore.seal import SealedBlob, Sealer, UnsealError, master_key_id

SECRET = b"-----PKCS#8 stand-in----- " + secrets.token_bytes(64)
AAD = b"secmail/v1|5:alice|00ff"


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(secrets.token_bytes(32))


def test_round_trip(sealer: Sealer) -> None:
    blob = sealer.seal(SECRET, aad=AAD)
    assert sealer.unseal(blob, aad=AAD) == SECRET
    assert blob.master_key_id == sealer.master_key_id
    assert blob.version == seal.SEAL_VERSION


def test_blob_layout(sealer: Sealer) -> None:
    blob = sealer.seal(SECRET, aad=AAD)
    # 96-bit nonce + ciphertext + 128-bit tag; RFC 3394 wrap of 32 bytes is 40.
    assert len(blob.sealed) == 12 + len(SECRET) + 16
    assert len(blob.wrapped_key) == 40
    assert SECRET not in blob.sealed and SECRET[30:50] not in blob.sealed


def test_each_seal_uses_a_fresh_data_key_and_nonce(sealer: Sealer) -> None:
    a, b = sealer.seal(SECRET, aad=AAD), sealer.seal(SECRET, aad=AAD)
    assert a.wrapped_key != b.wrapped_key
    assert a.sealed[:12] != b.sealed[:12]
    assert a.sealed != b.sealed


def test_data_key_is_wrapped_under_a_derived_kek_not_the_master(sealer: Sealer) -> None:
    master = secrets.token_bytes(32)
    blob = Sealer(master).seal(SECRET, aad=AAD)
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidUnwrap
        aes_key_unwrap(master, blob.wrapped_key)


def test_wrong_aad_fails(sealer: Sealer) -> None:
    blob = sealer.seal(SECRET, aad=AAD)
    with pytest.raises(UnsealError) as info:
        sealer.unseal(blob, aad=b"secmail/v1|3:bob|00ff")
    assert SECRET.hex() not in str(info.value)


def test_wrong_master_key_fails(sealer: Sealer) -> None:
    blob = sealer.seal(SECRET, aad=AAD)
    other = Sealer(secrets.token_bytes(32))
    with pytest.raises(UnsealError, match="not loaded"):
        other.unseal(blob, aad=AAD)
    # Even when the blob claims the other key's id, the unwrap check fails.
    with pytest.raises(UnsealError, match="wrong master key"):
        other.unseal(replace(blob, master_key_id=other.master_key_id), aad=AAD)


@pytest.mark.parametrize("field", ["sealed", "wrapped_key"])
def test_tampering_fails(sealer: Sealer, field: str) -> None:
    blob = sealer.seal(SECRET, aad=AAD)
    value = bytearray(getattr(blob, field))
    value[len(value) // 2] ^= 1
    with pytest.raises(UnsealError):
        tampered = (
            replace(blob, sealed=bytes(value))
            if field == "sealed"
            else replace(blob, wrapped_key=bytes(value))
        )
        sealer.unseal(tampered, aad=AAD)


def test_truncated_and_unknown_version(sealer: Sealer) -> None:
    blob = sealer.seal(SECRET, aad=AAD)
    with pytest.raises(UnsealError):
        sealer.unseal(replace(blob, sealed=blob.sealed[:20]), aad=AAD)
    with pytest.raises(UnsealError, match="version"):
        sealer.unseal(replace(blob, version=99), aad=AAD)


def test_unseal_error_is_a_secmail_error() -> None:
    assert issubclass(UnsealError, SecmailError)


def test_previous_keys_still_unseal() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    blob = Sealer(old).seal(SECRET, aad=AAD)
    rotated = Sealer(new, previous_keys=[old])
    assert rotated.unseal(blob, aad=AAD) == SECRET
    assert rotated.seal(SECRET, aad=AAD).master_key_id == master_key_id(new)


def test_master_key_id_is_stable_and_reveals_nothing_obvious() -> None:
    master = bytes(range(32))
    kid = master_key_id(master)
    assert kid == master_key_id(bytes(range(32)))
    assert len(kid) == 16 and int(kid, 16) >= 0
    assert kid not in master.hex()
    assert kid != master_key_id(bytes(range(1, 33)))


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_master_key_length_enforced(length: int) -> None:
    with pytest.raises(SecmailError):
        Sealer(b"k" * length)


def test_repr_shows_no_key_material() -> None:
    master = secrets.token_bytes(32)
    s = Sealer(master)
    blob = s.seal(SECRET, aad=AAD)
    assert master.hex() not in repr(s)
    assert blob.sealed.hex() not in repr(blob)
    assert isinstance(blob, SealedBlob)
