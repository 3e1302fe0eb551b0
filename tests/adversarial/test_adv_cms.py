"""CMS confusion (S/MIME) and its OpenPGP analogues.

- a multipart/signed whose SignedData also carries an eContent that is not
  the displayed part;
- several signers, only some of which verify: every signer is reported,
  GREEN needs all of them to verify and the From-bound one to be valid;
- no signer at all, with or without certificates: never signed;
- malformed structures that crashed clients: a clean INVALID_ARGUMENT.
"""

from __future__ import annotations

import grpc
import pytest
from adv_support import (
    ALICE,
    MARKER,
    Cast,
    V,
    chain_of,
    cms_signed_data,
    cms_signer_info,
    dearmor,
    error_info,
    expect,
    expect_attack,
    headers,
    message,
    pgp_detached,
    pgp_multipart_signed,
    sha256_fingerprint,
    smime_detached_with,
    text_part,
    verify_rpc,
)
from service_support import Client
from testpki import Identity

from secmail.pgp import _backend

DISPLAYED = text_part(b"Le conseil de classe est annule.\r\n" + MARKER + b"\r\n")
HIDDEN = text_part(b"Le conseil de classe est jeudi.\r\n")


def _statuses(v: V.Verdict) -> list[str]:
    return [V.SignatureStatus.Name(s.status) for s in v.signers]


def _status_by_cert(v: V.Verdict, *idents: Identity) -> dict[str, str]:
    """Status per signer, keyed by CN. SignerInfos are a DER SET OF, sorted
    by encoding, so their order in the message is not the order given."""
    names = {sha256_fingerprint(i.cert): i.cert.subject.rfc4514_string() for i in idents}
    out: dict[str, str] = {}
    for s in v.signers:
        name = names.get(s.fingerprint) or s.claimed_key_id
        out[name] = V.SignatureStatus.Name(s.status)
    return out


# --- eContent next to a detached part ------------------------------------------------


@pytest.mark.parametrize("signed_over", ["econtent", "displayed"])
def test_smime_econtent_differs_from_displayed_part(academy: Client, cast: Cast, signed_over: str) -> None:
    """Whichever content alice really signed, the other one must not be
    shown as signed: two contents for one signature is BAD_SIGNATURE."""
    content = HIDDEN if signed_over == "econtent" else DISPLAYED
    si = cms_signer_info(cast.alice.key, cast.alice.cert, content)
    der = cms_signed_data([si], chain_of(cast.alice), econtent=HIDDEN)
    attack = message(headers(), smime_detached_with(DISPLAYED, der))
    v = verify_rpc(academy, attack).verdict
    expect_attack(v, banner=V.BANNER_RED, reasons=[V.REASON_BAD_SIGNATURE], coverage=V.COVERAGE_BODY)
    assert _statuses(v) == ["SIGNATURE_STATUS_INVALID"]
    assert not v.signers[0].verified_addresses


def test_smime_identical_econtent_and_detached_part_is_accepted(academy: Client, cast: Cast) -> None:
    # Control: the same bytes twice is not a confusion (some agents do this).
    si = cms_signer_info(cast.alice.key, cast.alice.cert, DISPLAYED)
    der = cms_signed_data([si], chain_of(cast.alice), econtent=DISPLAYED)
    v = verify_rpc(academy, message(headers(), smime_detached_with(DISPLAYED, der))).verdict
    expect(v, banner=V.BANNER_GREEN, coverage=V.COVERAGE_BODY)


def test_pgp_signature_part_carrying_a_signed_message_is_refused(academy: Client, cast: Cast) -> None:
    """The OpenPGP analogue: the signature part holds a whole signed message
    (literal data + signature) instead of a detached signature."""
    inline = _backend.inline_sign(cast.pgp_alice.tsk, HIDDEN)
    attack = message(headers(), pgp_multipart_signed(DISPLAYED, inline.replace(b"MESSAGE", b"SIGNATURE")))
    with pytest.raises(grpc.RpcError) as err:
        verify_rpc(academy, attack)
    assert error_info(err.value) == ("INVALID_ARGUMENT", "INVALID_MESSAGE")


# --- several signers ---------------------------------------------------------------------


def test_smime_one_good_one_bad_signer_is_red(academy: Client, cast: Cast) -> None:
    good = cms_signer_info(cast.alice.key, cast.alice.cert, DISPLAYED)
    bad = cms_signer_info(cast.eve.key, cast.eve.cert, DISPLAYED, corrupt=True)
    der = cms_signed_data([good, bad], chain_of(cast.alice, cast.eve))
    v = verify_rpc(academy, message(headers(), smime_detached_with(DISPLAYED, der))).verdict
    expect_attack(v, banner=V.BANNER_RED, reasons=[V.REASON_BAD_SIGNATURE], coverage=V.COVERAGE_BODY)
    assert _status_by_cert(v, cast.alice, cast.eve) == {
        cast.alice.cert.subject.rfc4514_string(): "SIGNATURE_STATUS_VALID",
        cast.eve.cert.subject.rfc4514_string(): "SIGNATURE_STATUS_INVALID",
    }
    assert sorted(list(s.verified_addresses) for s in v.signers) == [[], [ALICE]]


def test_smime_from_bound_signer_bad_other_good_is_red(academy: Client, cast: Cast) -> None:
    # eve's signature holds, alice's (the From) is forged.
    forged = cms_signer_info(cast.alice.key, cast.alice.cert, DISPLAYED, corrupt=True)
    eve = cms_signer_info(cast.eve.key, cast.eve.cert, DISPLAYED)
    der = cms_signed_data([forged, eve], chain_of(cast.alice, cast.eve))
    v = verify_rpc(academy, message(headers(), smime_detached_with(DISPLAYED, der))).verdict
    expect_attack(v, banner=V.BANNER_RED, reasons=[V.REASON_BAD_SIGNATURE], coverage=V.COVERAGE_BODY)
    assert _status_by_cert(v, cast.alice, cast.eve) == {
        cast.alice.cert.subject.rfc4514_string(): "SIGNATURE_STATUS_INVALID",
        cast.eve.cert.subject.rfc4514_string(): "SIGNATURE_STATUS_VALID",
    }


def test_smime_good_signer_plus_untrusted_signer_is_yellow(academy: Client, cast: Cast) -> None:
    good = cms_signer_info(cast.alice.key, cast.alice.cert, DISPLAYED)
    other = cms_signer_info(cast.mallory.key, cast.mallory.cert, DISPLAYED)
    der = cms_signed_data([good, other], chain_of(cast.alice, cast.mallory))
    v = verify_rpc(academy, message(headers(), smime_detached_with(DISPLAYED, der))).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_UNTRUSTED_CHAIN], coverage=V.COVERAGE_BODY)
    assert _status_by_cert(v, cast.alice, cast.mallory) == {
        cast.alice.cert.subject.rfc4514_string(): "SIGNATURE_STATUS_VALID",
        cast.mallory.cert.subject.rfc4514_string(): "SIGNATURE_STATUS_INDETERMINATE",
    }


def test_smime_good_signer_plus_signer_without_certificate_is_yellow(academy: Client, cast: Cast) -> None:
    good = cms_signer_info(cast.alice.key, cast.alice.cert, DISPLAYED)
    hidden = cms_signer_info(cast.eve.key, cast.eve.cert, DISPLAYED)
    der = cms_signed_data([good, hidden], chain_of(cast.alice))  # eve's certificate left out
    v = verify_rpc(academy, message(headers(), smime_detached_with(DISPLAYED, der))).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_SIGNER_KEY_MISSING], coverage=V.COVERAGE_BODY)
    assert sorted(_statuses(v)) == ["SIGNATURE_STATUS_INDETERMINATE", "SIGNATURE_STATUS_VALID"]
    missing = [s for s in v.signers if s.status == V.SIGNATURE_STATUS_INDETERMINATE]
    assert missing[0].claimed_key_id.startswith("issuer=") and not missing[0].fingerprint


def test_smime_two_valid_trusted_signers_is_green(academy: Client, cast: Cast) -> None:
    # Control: co-signing is legal; the From-bound signer is alice.
    a = cms_signer_info(cast.alice.key, cast.alice.cert, DISPLAYED)
    e = cms_signer_info(cast.eve.key, cast.eve.cert, DISPLAYED)
    der = cms_signed_data([a, e], chain_of(cast.alice, cast.eve))
    v = verify_rpc(academy, message(headers(), smime_detached_with(DISPLAYED, der))).verdict
    expect(v, banner=V.BANNER_GREEN, coverage=V.COVERAGE_BODY)
    assert len(v.signers) == 2


def _two_sigs(first: bytes, second: bytes) -> bytes:
    return _backend.armor(dearmor(first) + dearmor(second), "signature")


def _flip_last_mpi_byte(armored: bytes) -> bytes:
    raw = bytearray(dearmor(armored))
    raw[-3] ^= 0x01
    return _backend.armor(bytes(raw), "signature")


def test_pgp_one_good_one_forged_signature_is_red(academy: Client, cast: Cast) -> None:
    good = pgp_detached(DISPLAYED, cast.pgp_alice)
    forged = _flip_last_mpi_byte(pgp_detached(DISPLAYED, cast.pgp_alice))
    v = verify_rpc(
        academy, message(headers(), pgp_multipart_signed(DISPLAYED, _two_sigs(good, forged)))
    ).verdict
    expect_attack(v, banner=V.BANNER_RED, reasons=[V.REASON_BAD_SIGNATURE], coverage=V.COVERAGE_BODY)
    assert _statuses(v) == ["SIGNATURE_STATUS_VALID", "SIGNATURE_STATUS_INVALID"]


def test_pgp_good_signature_plus_unknown_signer_is_yellow(academy: Client, cast: Cast) -> None:
    good = pgp_detached(DISPLAYED, cast.pgp_alice)
    unknown = pgp_detached(DISPLAYED, cast.pgp_mallory)
    v = verify_rpc(
        academy, message(headers(), pgp_multipart_signed(DISPLAYED, _two_sigs(good, unknown)))
    ).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_SIGNER_KEY_MISSING], coverage=V.COVERAGE_BODY)
    assert _statuses(v) == ["SIGNATURE_STATUS_VALID", "SIGNATURE_STATUS_INDETERMINATE"]
    assert [list(s.verified_addresses) for s in v.signers] == [[ALICE], []]


# --- no signer ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_certs", [True, False], ids=["with-certs", "no-certs"])
def test_smime_zero_signer_infos_is_never_signed(academy: Client, cast: Cast, with_certs: bool) -> None:
    der = cms_signed_data([], chain_of(cast.alice) if with_certs else [])
    v = verify_rpc(academy, message(headers(), smime_detached_with(DISPLAYED, der))).verdict
    expect_attack(v, banner=V.BANNER_NONE, reasons=[V.REASON_MALFORMED_SIGNATURE])
    assert not v.signers


@pytest.mark.parametrize("with_certs", [True, False], ids=["with-certs", "no-certs"])
def test_smime_opaque_zero_signer_infos_is_never_signed(
    academy: Client, cast: Cast, with_certs: bool
) -> None:
    from adv_support import build_pkcs7_mime

    der = cms_signed_data([], chain_of(cast.alice) if with_certs else [], econtent=DISPLAYED)
    v = verify_rpc(academy, message(headers(), build_pkcs7_mime(der, "signed-data"))).verdict
    expect_attack(v, banner=V.BANNER_NONE, reasons=[V.REASON_MALFORMED_SIGNATURE])
    assert not v.signers


def test_pgp_signature_part_without_signature_packet_is_never_signed(academy: Client) -> None:
    marker_only = _backend.armor(b"\xca\x03PGP", "signature")
    v = verify_rpc(academy, message(headers(), pgp_multipart_signed(DISPLAYED, marker_only))).verdict
    expect_attack(v, banner=V.BANNER_NONE, reasons=[V.REASON_MALFORMED_SIGNATURE])
    assert not v.signers


# --- malformed structures ------------------------------------------------------------------


def _ber_bomb(depth: int) -> bytes:
    # Indefinite-length constructed OCTET STRINGs nested ``depth`` deep.
    return b"\x24\x80" * depth + b"\x04\x01A" + b"\x00\x00" * depth


def _malformed_cms(cast: Cast) -> dict[str, bytes]:
    si = cms_signer_info(cast.alice.key, cast.alice.cert, DISPLAYED)
    good = cms_signed_data([si], chain_of(cast.alice))
    return {
        "truncated": good[: len(good) // 2],
        "trailing-garbage": good + b"\x00" * 8,
        "random": bytes(range(256)),
        "empty": b"",
        "huge-length": b"\x30\x84\x7f\xff\xff\xff" + good[2:],
        "enveloped-oid": good.replace(
            bytes.fromhex("2a864886f70d010702"), bytes.fromhex("2a864886f70d010703"), 1
        ),
        "ber-bomb": b"\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\xa0\x80"
        + _ber_bomb(5000)
        + b"\x00" * 4,
        "garbage-signer-info": cms_signed_data([b"\x30\x03\x02\x01\x63"], chain_of(cast.alice)),
        "garbage-certificate": good.replace(cast.alice.cert.tbs_certificate_bytes[4:40], b"\xff" * 36, 1),
    }


@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "trailing-garbage",
        "random",
        "empty",
        "huge-length",
        "enveloped-oid",
        "ber-bomb",
        "garbage-signer-info",
    ],
)
@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
def test_smime_malformed_cms_is_a_clean_error(academy: Client, cast: Cast, case: str, opaque: bool) -> None:
    from adv_support import build_pkcs7_mime

    der = _malformed_cms(cast)[case]
    entity = build_pkcs7_mime(der, "signed-data") if opaque else smime_detached_with(DISPLAYED, der)
    with pytest.raises(grpc.RpcError) as err:
        verify_rpc(academy, message(headers(), entity))
    assert error_info(err.value) == ("INVALID_ARGUMENT", "INVALID_MESSAGE")
    assert MARKER.decode() not in (err.value.details() or "")


def test_smime_garbled_embedded_certificate_leaves_signer_without_key(academy: Client, cast: Cast) -> None:
    der = _malformed_cms(cast)["garbage-certificate"]
    v = verify_rpc(academy, message(headers(), smime_detached_with(DISPLAYED, der))).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_SIGNER_KEY_MISSING], coverage=V.COVERAGE_BODY)


@pytest.mark.parametrize("case", ["truncated", "random", "bad-armor"])
def test_pgp_malformed_signature_is_a_clean_error(academy: Client, cast: Cast, case: str) -> None:
    raw = dearmor(pgp_detached(DISPLAYED, cast.pgp_alice))
    blocks = {
        "truncated": _backend.armor(raw[: len(raw) // 2], "signature"),
        "random": _backend.armor(bytes(range(1, 200)), "signature"),
        "bad-armor": b"-----BEGIN PGP SIGNATURE-----\r\n\r\n%%%%\r\n-----END PGP SIGNATURE-----\r\n",
    }
    with pytest.raises(grpc.RpcError) as err:
        verify_rpc(academy, message(headers(), pgp_multipart_signed(DISPLAYED, blocks[case])))
    assert error_info(err.value) == ("INVALID_ARGUMENT", "INVALID_MESSAGE")


def test_pgp_signature_of_the_wrong_type_is_malformed(academy: Client, cast: Cast) -> None:
    # A standalone signature (type 0x02) where a document signature belongs.
    raw = bytearray(dearmor(pgp_detached(DISPLAYED, cast.pgp_alice)))
    assert raw[0] == 0xC2 and raw[2] == 4 and raw[3] == 0x00
    raw[3] = 0x02
    sig = _backend.armor(bytes(raw), "signature")
    v = verify_rpc(academy, message(headers(), pgp_multipart_signed(DISPLAYED, sig))).verdict
    expect_attack(v, banner=V.BANNER_RED, reasons=[V.REASON_MALFORMED_SIGNATURE], coverage=V.COVERAGE_BODY)
