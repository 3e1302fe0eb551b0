"""sign_message's transport-safe payload (RFC 8551 §3.1.2): 8-bit single
parts are base64-encoded before signing, everything else is signed as is."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from testpki import end_entity, make_pki

from secmail.message import SMIMESigningKey, sign_message
from secmail.mime.entity import children, parse_entity

AT = datetime(2026, 6, 1, 10, tzinfo=UTC)
BODY_8BIT = "Bonjour,\r\n\r\nLe conseil de classe est à 17 h.\r\n".encode()


@pytest.fixture(scope="module")
def key() -> SMIMESigningKey:
    pki = make_pki()
    alice = end_entity(pki.intermediate, "alice@ac-besancon.fr")
    return SMIMESigningKey(alice.cert, alice.key, (pki.intermediate.cert,), ("alice@ac-besancon.fr",))


def _message(content_fields: bytes, body: bytes) -> bytes:
    return (
        b"From: <alice@ac-besancon.fr>\r\nTo: <bob@ac-besancon.fr>\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        + content_fields
        + b"\r\n"
        + body
    )


def _signed_part(signed: bytes) -> bytes:
    return children(parse_entity(signed))[0].raw


def test_8bit_single_part_is_signed_as_base64(key: SMIMESigningKey) -> None:
    fields = b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n'
    part = parse_entity(_signed_part(sign_message(_message(fields, BODY_8BIT), key, at=AT)))
    assert part.get("content-transfer-encoding") == "base64"
    assert [h.lname for h in part.headers].count("content-transfer-encoding") == 1
    assert base64.b64decode(part.body) == BODY_8BIT


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        (
            b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n',
            b"plain ascii\r\n",
        ),
        (
            b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n',
            b"d=C3=A9j=C3=A0\r\n",
        ),
        (
            b'Content-Type: multipart/mixed; boundary="b"\r\n',
            b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + BODY_8BIT + b"\r\n--b--\r\n",
        ),
    ],
    ids=["7bit", "quoted-printable", "multipart"],
)
def test_other_payloads_are_signed_as_they_are(key: SMIMESigningKey, fields: bytes, body: bytes) -> None:
    part = parse_entity(_signed_part(sign_message(_message(fields, body), key, at=AT)))
    assert part.body == body
