from __future__ import annotations

import email
import email.policy
from email.message import Message

import pytest
from pgp_support import KeyPair, ctx_with

from secmail.errors import InputError
from secmail.pgp.decrypt import decrypt
from secmail.pgp.encrypt import encrypt
from secmail.pgp.mime import build_multipart_encrypted, build_multipart_signed
from secmail.pgp.sign import sign_detached
from secmail.pgp.verify import verify_detached

ENTITY = b"Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour --smpgp- boundary-like text\r\n"


def test_multipart_signed_round_trip(alice: KeyPair) -> None:
    sig, micalg = sign_detached(ENTITY, alice.tsk)
    mime = build_multipart_signed(ENTITY, sig, micalg)
    assert b"\n" not in mime.replace(b"\r\n", b"")  # CRLF only
    msg = email.message_from_bytes(mime, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/signed"
    assert msg.get_param("protocol") == "application/pgp-signature"
    assert msg.get_param("micalg") == micalg
    boundary = msg.get_boundary()
    assert boundary is not None
    # RFC 3156 §5: the first part is exactly the signed bytes.
    first = mime.split(b"--" + boundary.encode() + b"\r\n")[1]
    assert first[: -len(b"\r\n")] == ENTITY
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) == 2
    sig_part = parts[1]
    assert isinstance(sig_part, Message)
    assert sig_part.get_content_type() == "application/pgp-signature"
    sig_bytes = sig_part.get_payload(decode=True)
    assert isinstance(sig_bytes, bytes)
    (res,) = verify_detached(first[:-2], sig_bytes, ctx_with([alice.cert]))
    assert res.crypto_valid


def test_multipart_encrypted_round_trip(alice: KeyPair) -> None:
    armored = encrypt(ENTITY, [alice.cert])
    mime = build_multipart_encrypted(armored)
    msg = email.message_from_bytes(mime, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/encrypted"
    assert msg.get_param("protocol") == "application/pgp-encrypted"
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) == 2
    control, body = parts
    assert isinstance(control, Message) and isinstance(body, Message)
    assert control.get_content_type() == "application/pgp-encrypted"
    assert str(control.get_payload()).strip() == "Version: 1"
    assert body.get_content_type() == "application/octet-stream"
    payload = body.get_payload(decode=True)
    assert isinstance(payload, bytes)
    out = decrypt(payload, [alice.tsk], ctx_with([]))
    assert out.content == ENTITY


def test_builders_refuse_non_armored_input() -> None:
    with pytest.raises(InputError):
        build_multipart_signed(ENTITY, b"\x88\x00", "pgp-sha256")
    with pytest.raises(InputError):
        build_multipart_signed(ENTITY, b"-----BEGIN PGP SIGNATURE-----", 'sha256"; x=')
    with pytest.raises(InputError):
        build_multipart_encrypted(b"\x85\x01")
