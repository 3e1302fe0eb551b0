"""secmail.smime.mime: byte-level S/MIME framing."""

from __future__ import annotations

import base64
import email
import email.policy
import re

import pytest

from secmail.errors import InputError
from secmail.smime.mime import build_multipart_signed, build_pkcs7_mime

ENTITY = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nline one\r\nline two  \r\n\r\n"
SIGNATURE = bytes(range(256)) * 3


def _parts(message: bytes) -> tuple[bytes, bytes, list[bytes]]:
    header, _, body = message.partition(b"\r\n\r\n")
    boundary = re.search(rb'boundary="([^"]+)"', header)
    assert boundary is not None
    delimiter = b"\r\n--" + boundary.group(1)
    # RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter.
    pieces = (b"\r\n" + body).split(delimiter)
    return header, boundary.group(1), pieces


def test_multipart_signed_first_part_is_byte_exact() -> None:
    message = build_multipart_signed(ENTITY, SIGNATURE, "sha-256")
    header, _boundary, pieces = _parts(message)
    assert header.startswith(b"Content-Type: multipart/signed;")
    assert b'protocol="application/pkcs7-signature"' in header
    assert b"micalg=sha-256" in header
    # preamble, part 1, part 2, closing "--\r\n"
    assert len(pieces) == 4
    assert pieces[1] == b"\r\n" + ENTITY
    assert pieces[3] == b"--\r\n"
    assert b"\n" not in message.replace(b"\r\n", b"")  # CRLF only

    sig_head, _, sig_body = pieces[2][2:].partition(b"\r\n\r\n")
    assert b'Content-Type: application/pkcs7-signature; name="smime.p7s"' in sig_head
    assert b"Content-Transfer-Encoding: base64" in sig_head
    assert b'Content-Disposition: attachment; filename="smime.p7s"' in sig_head
    lines = sig_body.split(b"\r\n")
    assert all(len(line) <= 76 for line in lines)
    assert max(len(line) for line in lines) == 76
    assert base64.b64decode(b"".join(lines)) == SIGNATURE


def test_multipart_signed_parses_with_the_stdlib() -> None:
    message = email.message_from_bytes(
        build_multipart_signed(ENTITY, SIGNATURE, "sha-512"), policy=email.policy.default
    )
    assert message.get_content_type() == "multipart/signed"
    assert message.get_param("micalg") == "sha-512"
    first, second = message.iter_parts()  # type: ignore[attr-defined]
    assert first.get_content_type() == "text/plain"
    assert second.get_content_type() == "application/pkcs7-signature"
    assert second.get_content() == SIGNATURE


def test_entity_ending_without_crlf_is_kept() -> None:
    entity = b"Content-Type: text/plain\r\n\r\nno final newline"
    _, _, pieces = _parts(build_multipart_signed(entity, SIGNATURE, "sha-256"))
    assert pieces[1] == b"\r\n" + entity


def test_given_boundary() -> None:
    message = build_multipart_signed(ENTITY, SIGNATURE, "sha-256", boundary="simple-boundary")
    assert b'boundary="simple-boundary"' in message
    assert b"\r\n--simple-boundary--\r\n" in message


def test_boundary_found_in_entity_is_refused() -> None:
    with pytest.raises(InputError):
        build_multipart_signed(b"x\r\n--abc\r\n", SIGNATURE, "sha-256", boundary="abc")


def test_random_boundary_avoids_entity() -> None:
    message = build_multipart_signed(ENTITY, SIGNATURE, "sha-256")
    boundary = re.search(rb'boundary="([^"]+)"', message)
    assert boundary is not None and boundary.group(1) not in ENTITY


@pytest.mark.parametrize("bad", ["sha 256", "sha-256;x=1", ""])
def test_bad_micalg_is_refused(bad: str) -> None:
    with pytest.raises(InputError):
        build_multipart_signed(ENTITY, SIGNATURE, bad)


def test_bare_lf_entity_is_refused() -> None:
    with pytest.raises(InputError):
        build_multipart_signed(b"Content-Type: text/plain\n\nx\n", SIGNATURE, "sha-256")


@pytest.mark.parametrize("smime_type", ["signed-data", "enveloped-data", "authEnveloped-data"])
def test_pkcs7_mime(smime_type: str) -> None:
    entity = build_pkcs7_mime(SIGNATURE, smime_type)
    head, _, body = entity.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        f'Content-Type: application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"'.encode(),
        b"Content-Transfer-Encoding: base64",
        b'Content-Disposition: attachment; filename="smime.p7m"',
    ]
    lines = body.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) <= 76 for line in lines)
    assert base64.b64decode(body) == SIGNATURE


def test_pkcs7_mime_unknown_type() -> None:
    with pytest.raises(InputError):
        build_pkcs7_mime(SIGNATURE, "evil\r\nX-Injected: 1")


def test_framing_five_megabytes_is_fast() -> None:
    import time

    big = (b"x" * 998 + b"\r\n") * 5000
    start = time.perf_counter()
    build_multipart_signed(big, SIGNATURE, "sha-256")
    build_pkcs7_mime(big, "enveloped-data")
    assert time.perf_counter() - start < 0.5
