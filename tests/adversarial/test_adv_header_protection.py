"""Header protection (RFC 9788, and the older protected-headers="v1"),
written and read, for both schemes.

Writing: Sign/Encrypt copy the user-facing fields into the Cryptographic
Payload with the hp parameter; an encrypted message's outer Subject is
"[...]". Reading: protected fields replace the outer ones in
display_message, coverage is COVERAGE_BODY_AND_HEADERS, and a protected
From that differs from the outer one is reported.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from adv_support import (
    ALICE,
    BOB,
    CRLF,
    EVE,
    MARKER,
    SCHEMES,
    Cast,
    V,
    decrypt_rpc,
    encrypt_rpc,
    expect,
    expect_attack,
    headers,
    message,
    multipart,
    multipart_encrypted_pgp,
    pgp_encrypted_blob,
    pkcs7_der,
    sign_rpc,
    smime_encrypted_entity,
    smime_signed_entity,
    split_message,
    text_part,
    verify_rpc,
)
from service_support import Client

from secmail.context import VerifyContext
from secmail.mime.entity import children, parse_entity
from secmail.policy import DEFAULT_POLICY

FIELDS = {
    "from": f"Alice <{ALICE}>",
    "to": f"Bob <{BOB}>",
    "cc": f"Eve <{EVE}>",
    "subject": "Conseil de classe du 3e B",
    "message-id": "<hp-1@ac-besancon.fr>",
    "references": "<earlier@ac-besancon.fr>",
    "in-reply-to": "<earlier@ac-besancon.fr>",
}


def _full_message() -> bytes:
    extra = [
        f"Cc: {FIELDS['cc']}",
        f"References: {FIELDS['references']}",
        f"In-Reply-To: {FIELDS['in-reply-to']}",
        "Received: from mx.ac-besancon.fr by webmail",
    ]
    outer = (
        headers(subject=FIELDS["subject"], extra=extra).replace(b"Message-ID: <", b"X-Old-Id: <", 1)
        + f"Message-ID: {FIELDS['message-id']}\r\n".encode()
    )
    return message(outer)


def _assert_protected(entity_bytes: bytes, hp: str) -> None:
    entity = parse_entity(entity_bytes)
    assert entity.content_type.param("hp") == hp
    for name, value in FIELDS.items():
        assert entity.get(name) == value, name
    assert entity.get("date") is not None
    # Transport fields stay outside.
    assert entity.get("received") is None


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_sign_writes_protected_headers(academy: Client, scheme: int) -> None:
    signed = sign_rpc(academy, ALICE, _full_message(), scheme)
    outer, entity = split_message(signed)
    assert f"Subject: {FIELDS['subject']}".encode() in outer  # hp="clear" keeps it outside
    [signed_part, _sig] = children(parse_entity(entity))
    _assert_protected(signed_part.raw, "clear")
    v = verify_rpc(academy, signed).verdict
    expect(v, banner=V.BANNER_GREEN)


def _decrypt_payload(cast: Cast, scheme: int, enc: bytes) -> bytes:
    """The decrypted Cryptographic Payload, by the engines directly."""
    _, entity = split_message(enc)
    if scheme == V.SCHEME_SMIME:
        from secmail.smime.envelope import decrypt_content

        plain = decrypt_content(pkcs7_der(entity), [(cast.bob.cert, cast.bob.key)]).content
    else:
        from secmail.pgp.decrypt import decrypt

        ctx = VerifyContext(at=datetime.now(UTC), policy=DEFAULT_POLICY)
        plain = decrypt(pgp_encrypted_blob(entity), [cast.pgp_bob.tsk], ctx).content
    return plain


@pytest.mark.parametrize("signed", [False, True], ids=["encrypted", "signed+encrypted"])
@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_encrypt_writes_protected_headers(academy: Client, cast: Cast, scheme: int, signed: bool) -> None:
    enc = encrypt_rpc(academy, ALICE, _full_message(), scheme, sign=signed)
    outer, _ = split_message(enc)
    assert b"Subject: [...]\r\n" in outer
    assert FIELDS["subject"].encode() not in enc
    payload = _decrypt_payload(cast, scheme, enc)
    if signed and scheme == V.SCHEME_SMIME:
        payload = children(parse_entity(payload))[0].raw  # the signed part
    _assert_protected(payload, "cipher")
    assert b"HP-Outer: Subject: [...]" in payload
    resp = decrypt_rpc(academy, enc)
    expect(
        resp.verdict,
        banner=V.BANNER_GREEN if signed else V.BANNER_NONE,
        lock=True,
        coverage=V.COVERAGE_BODY_AND_HEADERS if signed else V.COVERAGE_NONE,
    )
    head = resp.display_message.partition(b"\r\n\r\n")[0]
    assert f"Subject: {FIELDS['subject']}".encode() in head
    assert b"[...]" not in head and b"HP-Outer" not in head
    assert b"Received: from mx.ac-besancon.fr" in head


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_edited_outer_subject_is_not_shown(academy: Client, scheme: int) -> None:
    signed = sign_rpc(academy, ALICE, message(), scheme)
    edited = signed.replace(b"Subject: Conseil de classe", b"Subject: URGENT: virement a effectuer", 1)
    resp = verify_rpc(academy, edited)
    expect(resp.verdict, banner=V.BANNER_GREEN)
    assert b"Subject: Conseil de classe\r\n" in resp.display_message
    assert b"URGENT" not in resp.display_message


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_edited_outer_from_is_reported(academy: Client, scheme: int) -> None:
    signed = sign_rpc(academy, ALICE, message(), scheme)
    edited = signed.replace(f"From: Alice <{ALICE}>".encode(), f"From: Eve <{EVE}>".encode(), 1)
    resp = verify_rpc(academy, edited)
    expect_attack(resp.verdict, banner=V.BANNER_YELLOW, reasons=[V.REASON_PROTECTED_HEADER_MISMATCH])
    assert resp.verdict.from_address == ALICE
    assert f"From: Alice <{ALICE}>".encode() in resp.display_message
    assert EVE.encode() not in resp.display_message


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_without_header_protection_only_the_body_is_covered(academy: Client, scheme: int) -> None:
    signed = sign_rpc(academy, ALICE, message(), scheme, no_header_protection=True)
    assert b"hp=" not in signed
    edited = signed.replace(b"Subject: Conseil de classe", b"Subject: URGENT", 1)
    resp = verify_rpc(academy, edited)
    # The signature holds over the body; COVERAGE_BODY tells the client the
    # Subject it shows is not protected.
    expect(resp.verdict, banner=V.BANNER_GREEN, coverage=V.COVERAGE_BODY)
    assert b"Subject: URGENT" in resp.display_message


# --- reading what other clients write ------------------------------------------------------------


def _legacy_payload(form: str) -> bytes:
    """A Cryptographic Payload as older clients write it: protected fields
    on a multipart/mixed, whose first part is a legacy display copy."""
    fields = f"From: Alice <{ALICE}>\r\nTo: Bob <{BOB}>\r\nSubject: {FIELDS['subject']}\r\n".encode()
    if form == "v1":
        param = '; protected-headers="v1"'
        legacy = b'Content-Type: text/rfc822-headers; protected-headers="v1"\r\n\r\n'
    else:  # RFC 9788 §2.1.2 legacy display element
        param = '; hp="cipher"'
        legacy = b'Content-Type: text/plain; charset="utf-8"; hp-legacy-display="1"\r\n\r\n'
    legacy += f"Subject: {FIELDS['subject']}\r\n".encode()
    body = multipart("mixed", legacy, text_part(), params=param)
    head, _, rest = body.partition(b"\r\n\r\n")
    return head + CRLF + fields + CRLF + rest


@pytest.mark.parametrize("form", ["v1", "rfc9788-legacy-display"])
@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_reads_legacy_protected_headers(academy: Client, cast: Cast, scheme: int, form: str) -> None:
    payload = _legacy_payload(form)
    if scheme == V.SCHEME_SMIME:
        entity = smime_encrypted_entity(
            smime_signed_entity(payload, cast.alice), [cast.bob.cert], authenticated=True
        )
    else:
        from secmail.pgp.encrypt import encrypt

        armored = encrypt(payload, [cast.pgp_bob.cert], signer_tsk=cast.pgp_alice.tsk)
        entity = multipart_encrypted_pgp(armored)
    msg = message(headers(subject="..."), entity)
    resp = decrypt_rpc(academy, msg)
    expect(resp.verdict, banner=V.BANNER_GREEN, lock=True)
    head, _, body = resp.display_message.partition(b"\r\n\r\n")
    assert f"Subject: {FIELDS['subject']}".encode() in head
    assert b"Subject: ..." not in head
    assert b"rfc822-headers" not in resp.display_message and b"hp-legacy-display" not in resp.display_message
    assert body.count(b"Subject:") == 0
    assert MARKER in body
