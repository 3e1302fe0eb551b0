"""MIME wrapping ("Johnny, you are fired" §5, "Re: What's up Johnny"):
a validly signed part placed where it is not the whole message.

Whatever the packaging, the message as a whole is not signed: no banner,
REASON_ERRANT_CRYPTO_LAYER, no signer, and display_message is the
received message byte for byte, never the signed part dressed as the whole.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from adv_support import (
    ALICE,
    BOB,
    MARKER,
    SCHEMES,
    Cast,
    GnuPG,
    V,
    decrypt_rpc,
    entity_of,
    expect,
    expect_attack,
    headers,
    message,
    multipart,
    rfc822_part,
    sign_rpc,
    text_part,
    verify_rpc,
)
from service_support import Client

#: Genuine alice-signed message -> the wrapped attack entity.
Wrapper = Callable[[bytes], bytes]

FAKE = b"Sanction disciplinaire: vous etes renvoye.\r\n"


def _prepended_text(signed: bytes) -> bytes:
    # The attacker's text comes first; the signed part follows unseen below.
    return multipart("mixed", text_part(FAKE), entity_of(signed))


def _hidden_by_css(signed: bytes) -> bytes:
    html = (
        b"<html><body><p>Sanction disciplinaire.</p>"
        b'<div style="display:none;height:0;overflow:hidden">\r\n</div></body></html>\r\n'
    )
    return multipart("mixed", text_part(html, subtype="html"), entity_of(signed))


def _cid_related(signed: bytes) -> bytes:
    html = b'<html><body><p>Sanction.</p><iframe src="cid:signed@adv" width="0" height="0"></iframe></body></html>\r\n'
    inner = entity_of(signed)
    inner = inner.replace(b"Content-Type:", b"Content-ID: <signed@adv>\r\nContent-Type:", 1)
    return multipart("related", text_part(html, subtype="html"), inner, params='; type="text/html"')


def _forwarded_attachment(signed: bytes) -> bytes:
    return multipart("mixed", text_part(FAKE), rfc822_part(signed))


def _signed_part_as_attachment(signed: bytes) -> bytes:
    inner = entity_of(signed).replace(
        b"Content-Type:", b'Content-Disposition: attachment; filename="original.eml"\r\nContent-Type:', 1
    )
    return multipart("mixed", text_part(FAKE), inner)


def _list_footer(signed: bytes) -> bytes:
    # What Mailman does to a signed post when it adds a footer.
    footer = text_part(b"_______________________________________________\r\nliste-profs mailing list\r\n")
    return multipart("mixed", entity_of(signed), footer)


WRAPPERS: dict[str, Wrapper] = {
    "prepended-text": _prepended_text,
    "hidden-by-css": _hidden_by_css,
    "cid-related": _cid_related,
    "forwarded-attachment": _forwarded_attachment,
    "signed-part-attachment": _signed_part_as_attachment,
    "list-footer": _list_footer,
}


@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=WRAPPERS.keys())
@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_wrapped_signed_part_confers_nothing(academy: Client, scheme: int, wrap: Wrapper) -> None:
    signed = sign_rpc(academy, ALICE, message(), scheme)
    assert verify_rpc(academy, signed).verdict.banner == V.BANNER_GREEN
    # The attacker reuses alice's From (and her genuine signed part).
    attack = message(headers(subject="Re: Conseil de classe"), wrap(signed))
    for call in (verify_rpc, decrypt_rpc):
        resp = call(academy, attack)
        v = resp.verdict
        expect_attack(v, banner=V.BANNER_NONE, reasons=[V.REASON_ERRANT_CRYPTO_LAYER])
        assert not v.signers
        assert v.scheme == V.SCHEME_UNSPECIFIED
        assert resp.display_message == attack


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_wrapped_signed_part_under_root_encryption(academy: Client, cast: Cast, scheme: int) -> None:
    """Encrypted to bob by anyone, holding prepended text + alice's signed part:
    the lock is genuine, the signature confers nothing."""
    from datetime import UTC, datetime

    from secmail.message import Recipients, encrypt_message
    from secmail.verdict import Scheme

    signed = sign_rpc(academy, ALICE, message(), scheme)
    wrapped = message(headers(), _prepended_text(signed))
    recipients = (
        Recipients(smime=(cast.bob.cert,))
        if scheme == V.SCHEME_SMIME
        else Recipients(pgp=(cast.pgp_bob.cert,))
    )
    attack = encrypt_message(
        wrapped,
        Scheme.SMIME if scheme == V.SCHEME_SMIME else Scheme.OPENPGP,
        recipients,
        signer=None,
        at=datetime.now(UTC),
    )
    resp = decrypt_rpc(academy, attack)
    v = resp.verdict
    expect_attack(v, banner=V.BANNER_NONE, lock=True, reasons=[V.REASON_ERRANT_CRYPTO_LAYER])
    assert v.integrity_protected
    assert not v.signers
    # The decrypted content is shown whole: the fake text and the signed part.
    assert FAKE in resp.display_message and MARKER in resp.display_message


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_signed_message_forwarded_inside_a_signed_message(academy: Client, scheme: int) -> None:
    """A genuine forward: bob signs a message carrying alice's signed message.
    The banner is bob's, and the inner signature is reported as errant."""
    signed = sign_rpc(academy, ALICE, message(), scheme)
    fwd = message(headers(from_=f"Bob <{BOB}>", to=f"Alice <{ALICE}>"), _forwarded_attachment(signed))
    outer = sign_rpc(academy, BOB, fwd, scheme)
    resp = verify_rpc(academy, outer, user=ALICE)
    v = resp.verdict
    expect(v, banner=V.BANNER_GREEN, reasons=[V.REASON_ERRANT_CRYPTO_LAYER])
    assert [list(s.verified_addresses) for s in v.signers] == [[BOB]]


# --- inline OpenPGP: the armored block is only part of the text ---------------------------------


def _inline_root(body: bytes) -> bytes:
    return message(headers(), text_part(body))


@pytest.fixture(scope="module")
def clearsigned(gpg: GnuPG) -> bytes:
    text = b"Bonjour Bob,\n\n" + MARKER + b"\n"
    return gpg.run("--clearsign", "--local-user", ALICE, input=text).stdout.replace(b"\n", b"\r\n")


@pytest.fixture(scope="module")
def inline_encrypted(gpg: GnuPG) -> bytes:
    text = b"Bonjour Bob,\n\n" + MARKER + b"\n"
    out = gpg.run("--armor", "--trust-model", "always", "--encrypt", "--recipient", BOB, input=text).stdout
    return out.replace(b"\n", b"\r\n")


@pytest.mark.interop
def test_whole_inline_signed_body_is_partial(academy: Client, clearsigned: bytes) -> None:
    # Control (genuine): inline signatures cover the text only.
    resp = verify_rpc(academy, _inline_root(clearsigned))
    expect_attack(
        resp.verdict, banner=V.BANNER_YELLOW, reasons=[V.REASON_PARTIAL_COVERAGE], coverage=V.COVERAGE_BODY
    )


@pytest.mark.interop
@pytest.mark.parametrize("where", ["prepended", "footer"])
def test_inline_signed_block_with_extra_text_is_errant(
    academy: Client, clearsigned: bytes, where: str
) -> None:
    body = FAKE + b"\r\n" + clearsigned if where == "prepended" else clearsigned + b"-- \r\nliste-profs\r\n"
    attack = _inline_root(body)
    resp = verify_rpc(academy, attack)
    expect_attack(resp.verdict, banner=V.BANNER_NONE, reasons=[V.REASON_ERRANT_CRYPTO_LAYER])
    assert resp.display_message == attack


@pytest.mark.interop
def test_whole_inline_encrypted_body_gets_the_lock(academy: Client, inline_encrypted: bytes) -> None:
    # Control (genuine).
    resp = decrypt_rpc(academy, _inline_root(inline_encrypted))
    expect_attack(resp.verdict, banner=V.BANNER_NONE, lock=True)
    assert MARKER in resp.display_message


@pytest.mark.interop
@pytest.mark.parametrize("where", ["prepended", "appended"])
def test_inline_encrypted_block_with_extra_text_is_not_decrypted(
    academy: Client, inline_encrypted: bytes, where: str
) -> None:
    """ "Re: What's up Johnny" (2019): an attacker's text around somebody
    else's inline-encrypted block, hoping for a quoted reply."""
    quote_me = b"Pouvez-vous me renvoyer ceci ? Merci.\r\n\r\n"
    body = quote_me + inline_encrypted if where == "prepended" else inline_encrypted + quote_me
    attack = _inline_root(body)
    resp = decrypt_rpc(academy, attack)
    expect_attack(resp.verdict, banner=V.BANNER_NONE, reasons=[V.REASON_ERRANT_CRYPTO_LAYER])
    assert resp.display_message == attack
    assert MARKER not in resp.display_message
