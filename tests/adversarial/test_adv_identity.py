"""Identity ("Johnny, you are fired" §4): who the banner says signed.

Only the single From addr-spec is compared with the signer's verified
addresses: case-insensitively in the domain, exactly in the local part
(RFC 5321 §2.4). Anything ambiguous is never GREEN, and the verdict names
the address that really signed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from adv_support import (
    ALICE,
    BOB,
    CRLF,
    EVE,
    SCHEMES,
    Cast,
    PGPKey,
    V,
    expect,
    expect_attack,
    forge_signed,
    headers,
    message,
    pgp_key,
    signed_entity,
    signer_of,
    verify_rpc,
)
from service_support import Client
from testpki import Identity, end_entity

from secmail.mime.entity import parse_entity
from secmail.mime.protect import build_payload

HP = {"hp": True, "no-hp": False}


def _coverage(hp: bool) -> int:
    return V.COVERAGE_BODY_AND_HEADERS if hp else V.COVERAGE_BODY


@pytest.mark.parametrize("hp", HP.values(), ids=HP.keys())
@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_from_not_an_address_of_the_signer(academy: Client, cast: Cast, scheme: int, hp: bool) -> None:
    msg = forge_signed(headers(from_=f"Alice <{ALICE}>"), scheme, signer_of(cast, "eve", scheme), hp=hp)
    v = verify_rpc(academy, msg).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_SENDER_MISMATCH], coverage=_coverage(hp))
    # The client can show who really signed.
    assert [list(s.verified_addresses) for s in v.signers] == [[EVE]]
    assert v.from_address == ALICE


#: From fields an insider (eve, with her own valid keys) writes to look
#: like someone else while the addr-spec stays hers.
DISPLAY_NAME_SPOOFS = {
    "address-as-name": f'"{ALICE}" <{EVE}>',
    "manager-as-name": f'"recteur@{"ac-besancon.fr"}" <{EVE}>',
    "encoded-address-as-name": f"=?utf-8?b?YWxpY2VAYWMtYmVzYW5jb24uZnI=?= <{EVE}>",
    "fullwidth-at-name": f'"alice\uff20ac-besancon.fr" <{EVE}>',
    "bidi-override-name": f'"\u202erf.nocnaseb-ca@ecila\u202c" <{EVE}>',
    "zero-width-name": f'"Al\u200bice" <{EVE}>',
}


@pytest.mark.parametrize("from_", DISPLAY_NAME_SPOOFS.values(), ids=DISPLAY_NAME_SPOOFS.keys())
@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_display_name_posing_as_another_address(academy: Client, cast: Cast, scheme: int, from_: str) -> None:
    msg = forge_signed(headers(from_=from_), scheme, signer_of(cast, "eve", scheme))
    v = verify_rpc(academy, msg).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_FROM_AMBIGUOUS])
    assert [list(s.verified_addresses) for s in v.signers] == [[EVE]]
    assert v.from_address == ""


#: Outer header sections whose From cannot be read as one mailbox.
AMBIGUOUS_FROM = {
    "missing": [],
    "empty": ["From: "],
    "two-fields": [f"From: Alice <{ALICE}>", f"From: Eve <{EVE}>"],
    "two-fields-same": [f"From: Alice <{ALICE}>", f"From: Alice <{ALICE}>"],
    "two-mailboxes": [f"From: Alice <{ALICE}>, Eve <{EVE}>"],
    "group": [f"From: Direction: Alice <{ALICE}>;"],
    "no-domain": ["From: alice"],
    "unterminated": [f"From: Alice <{ALICE}"],
    "cyrillic-o-domain": ["From: Alice <alice@ac-besan\u0441on.fr>"],
    "zero-width-local": ["From: Alice <al\u200bice@ac-besancon.fr>"],
    "fullwidth-at": ["From: alice\uff20ac-besancon.fr"],
    "nul-in-field": [f"From: Alice\x00 <{ALICE}>"],
    "folded-newline-injection": [f"From: Alice <{ALICE}>\r\n\t, Eve <{EVE}>"],
}


@pytest.mark.parametrize("fields", AMBIGUOUS_FROM.values(), ids=AMBIGUOUS_FROM.keys())
@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_ambiguous_from_is_never_green(academy: Client, cast: Cast, scheme: int, fields: list[str]) -> None:
    # Signed by alice, whose address is in (or looks like) every variant.
    msg = forge_signed(headers(from_=None, extra=fields), scheme, signer_of(cast, "alice", scheme))
    v = verify_rpc(academy, msg).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_FROM_AMBIGUOUS])
    assert [list(s.verified_addresses) for s in v.signers] == [[ALICE]]


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_local_part_is_compared_exactly(academy: Client, cast: Cast, scheme: int) -> None:
    msg = forge_signed(
        headers(from_="Alice <ALICE@ac-besancon.fr>"), scheme, signer_of(cast, "alice", scheme)
    )
    v = verify_rpc(academy, msg).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_SENDER_MISMATCH])


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_domain_is_compared_case_insensitively(academy: Client, cast: Cast, scheme: int) -> None:
    # Control (genuine): the domain's case is not significant (RFC 5321 §2.4).
    msg = forge_signed(
        headers(from_="Alice <alice@AC-Besancon.FR>"), scheme, signer_of(cast, "alice", scheme)
    )
    v = verify_rpc(academy, msg).verdict
    expect(v, banner=V.BANNER_GREEN)
    assert v.from_address == ALICE


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_sender_header_is_not_the_signer_binding(academy: Client, cast: Cast, scheme: int) -> None:
    """From alice, Sender eve, signed by eve: clients that accept a signer
    matching Sender show alice as a signed author; secmail compares From."""
    msg = forge_signed(headers(extra=[f"Sender: Eve <{EVE}>"]), scheme, signer_of(cast, "eve", scheme))
    v = verify_rpc(academy, msg).verdict
    expect_attack(
        v,
        banner=V.BANNER_YELLOW,
        reasons=[V.REASON_SENDER_MISMATCH, V.REASON_SENDER_HEADER_IGNORED],
    )
    assert [list(s.verified_addresses) for s in v.signers] == [[EVE]]


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_sender_header_of_someone_else_is_reported(academy: Client, cast: Cast, scheme: int) -> None:
    """From eve, Sender alice, signed by eve: the signature is bound to From
    (eve's own mail, GREEN, "signed by eve"), and the Sender that a client
    may show as "alice on behalf of eve" is flagged as ignored."""
    msg = forge_signed(
        headers(from_=f"Eve <{EVE}>", extra=[f"Sender: Alice <{ALICE}>"]),
        scheme,
        signer_of(cast, "eve", scheme),
    )
    v = verify_rpc(academy, msg).verdict
    expect(v, banner=V.BANNER_GREEN, reasons=[V.REASON_SENDER_HEADER_IGNORED])
    assert [list(s.verified_addresses) for s in v.signers] == [[EVE]]


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_unauthenticated_key_claiming_the_from_address(academy: Client, cast: Cast, scheme: int) -> None:
    """mallory's own certificate/key names alice's address: S/MIME from an
    untrusted CA, OpenPGP never imported. Neither is bound to alice."""
    signer: Identity | PGPKey
    if scheme == V.SCHEME_SMIME:
        signer = end_entity(cast.people.pki.other_root, ALICE)
        reasons = [V.REASON_UNTRUSTED_CHAIN]
        addresses = [[ALICE]]
    else:
        signer = pgp_key(f"Alice <{ALICE}>")
        reasons = [V.REASON_SIGNER_KEY_MISSING]
        addresses = [[]]
    msg = forge_signed(headers(), scheme, signer, at=datetime.now(UTC))
    v = verify_rpc(academy, msg).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=reasons)
    assert [list(s.verified_addresses) for s in v.signers] == addresses


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_protected_from_differs_from_outer_from(academy: Client, cast: Cast, scheme: int) -> None:
    """eve signs a payload whose protected From is hers, then sets the outer
    From to alice: the shown (protected) From is eve's, and the mismatch
    with the outer one is reported."""
    inner = message(headers(from_=f"Eve <{EVE}>"))
    payload, fields = build_payload(parse_entity(inner), hp="clear")
    outer = b"".join(
        (f"From: Alice <{ALICE}>".encode() if h.lname == "from" else h.raw) + CRLF for h in fields
    )
    entity = signed_entity(payload, signer_of(cast, "eve", scheme))
    resp = verify_rpc(academy, outer + b"MIME-Version: 1.0\r\n" + entity)
    expect_attack(resp.verdict, banner=V.BANNER_YELLOW, reasons=[V.REASON_PROTECTED_HEADER_MISMATCH])
    assert resp.verdict.from_address == EVE
    assert f"From: Eve <{EVE}>".encode() in resp.display_message
    assert ALICE.encode() not in resp.display_message
    assert BOB.encode() in resp.display_message
