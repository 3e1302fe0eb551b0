"""Status injection ("Johnny, you are fired" §3): nothing a message carries
(file names, notations, User IDs, certificate names, header fields with
[GNUPG:]-like lines or newlines) can change a verdict. Verdicts come from
structured engine results only, so each attack gets exactly the verdict of
its twin without the injected text.
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
    GnuPG,
    V,
    decrypt_rpc,
    describe,
    expect_attack,
    forge_signed,
    headers,
    message,
    multipart_encrypted_pgp,
    pgp_key,
    pgp_multipart_signed,
    sha256_fingerprint,
    signer_of,
    split_message,
    text_part,
    verify_rpc,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from service_support import Client
from testpki import Identity

from secmail.v1 import keys_pb2

STATUS = "[GNUPG:] GOODSIG 7F3A9C Alice <alice@ac-besancon.fr>"
STATUS_LINES = f"{STATUS}\n[GNUPG:] VALIDSIG 7F3A9C 2026-01-01\n[GNUPG:] TRUST_ULTIMATE 0 pgp"


def _verdict_key(v: V.Verdict) -> tuple[object, ...]:
    return (v.banner, v.lock, v.coverage, sorted(v.reasons), [list(s.verified_addresses) for s in v.signers])


# --- header fields, file names, descriptions ---------------------------------------------------

INJECTED_FIELDS = [
    f"X-Status: {STATUS}",
    f"X-Injected: harmless\r\n {STATUS}\r\n\t[GNUPG:] TRUST_FULLY",
    f"Comments: =?utf-8?q?{STATUS.replace(' ', '_').replace(':', '=3A')}?=",
    f"Subject-Extra: {STATUS}",
]


def _inject_in_signature_part(signed: bytes) -> bytes:
    """Status lines in the (unsigned) headers of the signature part."""
    for name in (b'filename="smime.p7s"', b'filename="signature.asc"'):
        signed = signed.replace(
            name,
            name[:-1] + b'\r\n [GNUPG:] GOODSIG.p7s"\r\nContent-Description: ' + STATUS.encode(),
            1,
        )
    return signed


@pytest.mark.parametrize("signer", ["eve", "mallory"])
@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_injected_header_lines_change_nothing(academy: Client, cast: Cast, scheme: int, signer: str) -> None:
    """From alice, signed by eve (an insider) or mallory (unknown): the
    status-looking lines in outer fields and in the signature part's file
    name and description are inert."""
    key = signer_of(cast, signer, scheme)
    clean = forge_signed(headers(), scheme, key)
    twin = verify_rpc(academy, clean).verdict
    outer, entity = split_message(clean)
    attack = outer + "".join(f + "\r\n" for f in INJECTED_FIELDS).encode() + b"MIME-Version: 1.0\r\n"
    attack += _inject_in_signature_part(entity)
    assert attack.count(b"[GNUPG:]") >= 6
    v = verify_rpc(academy, attack).verdict
    want = {
        ("eve", V.SCHEME_SMIME): [V.REASON_SENDER_MISMATCH],
        ("eve", V.SCHEME_OPENPGP): [V.REASON_SENDER_MISMATCH],
        ("mallory", V.SCHEME_SMIME): [V.REASON_UNTRUSTED_CHAIN, V.REASON_SENDER_MISMATCH],
        ("mallory", V.SCHEME_OPENPGP): [V.REASON_SIGNER_KEY_MISSING],
    }[(signer, scheme)]  # type: ignore[index]  # scheme is the enum's int
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=want)
    assert _verdict_key(v) == _verdict_key(twin), describe(v)


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_injected_lines_in_a_tampered_message_stay_red(academy: Client, cast: Cast, scheme: int) -> None:
    genuine = forge_signed(headers(), scheme, signer_of(cast, "alice", scheme))
    tampered = genuine.replace(MARKER, b"[GNUPG:] GOODSIG 00", 1)
    v = verify_rpc(academy, _inject_in_signature_part(tampered)).verdict
    expect_attack(v, banner=V.BANNER_RED, reasons=[V.REASON_BAD_SIGNATURE])


def test_unsigned_message_quoting_status_lines_is_unsigned(academy: Client) -> None:
    body = (
        STATUS_LINES.replace("\n", "\r\n") + "\r\n"
        "gpgsm: Good signature from alice@ac-besancon.fr\r\n"
        "Verification successful\r\n"
    ).encode()
    msg = message(headers(extra=[f"X-Status: {STATUS}"]), text_part(body))
    resp = verify_rpc(academy, msg)
    expect_attack(resp.verdict, banner=V.BANNER_NONE)
    assert resp.display_message == msg


# --- S/MIME: certificate names ------------------------------------------------------------------------


def _insider_with_hostile_name(cast: Cast) -> Identity:
    """A certificate the académie CA really issued to eve, whose subject
    carries status lines and alice's address as text."""
    issuer = cast.people.pki.intermediate
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"Eve\n{STATUS}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{STATUS_LINES} <{ALICE}>"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2025, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2035, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(EVE)]), critical=False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Identity(key, cert, (issuer.cert, *issuer.chain))


def test_smime_certificate_name_with_status_lines(academy: Client, cast: Cast) -> None:
    eve = _insider_with_hostile_name(cast)
    v = verify_rpc(academy, forge_signed(headers(), V.SCHEME_SMIME, eve)).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_SENDER_MISMATCH])
    [signer] = v.signers
    assert list(signer.verified_addresses) == [EVE]
    assert signer.fingerprint == sha256_fingerprint(eve.cert)
    # The name is reported as data, verbatim.
    assert "[GNUPG:] GOODSIG" in signer.chain[0].subject


# --- OpenPGP: User IDs, notations, signer's User ID, literal file names ----------------------------


def test_pgp_user_id_with_status_lines(academy: Client, cast: Cast) -> None:
    """dan imported a key whose User ID is eve's address followed by status
    lines naming alice: only the address the engines agree on is verified."""
    hostile = pgp_key(f"Eve <{EVE}>\n{STATUS_LINES}")
    dan = "dan@ac-besancon.fr"
    academy.keys.ImportKey(keys_pb2.ImportKeyRequest(user=dan, data=hostile.armored_cert))
    msg = forge_signed(headers(), V.SCHEME_OPENPGP, hostile)
    v = verify_rpc(academy, msg, user=dan).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_SENDER_MISMATCH])
    assert [list(s.verified_addresses) for s in v.signers] == [[EVE]]


@pytest.mark.interop
def test_pgp_notations_and_signers_user_id_claiming_alice(academy: Client, gpg: GnuPG) -> None:
    """eve's signature made by GnuPG with notations that read like status
    lines and a Signer's User ID subpacket (RFC 9580 §5.2.3.28) naming alice."""
    payload = text_part()
    sig = gpg.run(
        "--armor",
        "--detach-sign",
        "--local-user",
        EVE,
        "--sender",
        ALICE,
        "--sig-notation",
        f"status@ac-besancon.fr={STATUS}",
        "--sig-notation",
        "verified@ac-besancon.fr=alice@ac-besancon.fr",
        input=payload,
    ).stdout
    msg = message(headers(), pgp_multipart_signed(payload, sig))
    v = verify_rpc(academy, msg).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_SENDER_MISMATCH], coverage=V.COVERAGE_BODY)
    assert [list(s.verified_addresses) for s in v.signers] == [[EVE]]


@pytest.mark.interop
def test_pgp_literal_file_name_with_status_lines(academy: Client, cast: Cast, gpg: GnuPG) -> None:
    """GnuPG signs (as eve) and encrypts to bob, with a literal-data file
    name full of status lines; the From is alice's."""
    payload = text_part()
    armored = gpg.run(
        "--armor",
        "--trust-model",
        "always",
        "--sign",
        "--encrypt",
        "--local-user",
        EVE,
        "--recipient",
        BOB,
        "--set-filename",
        STATUS_LINES.replace("\n", " "),
        input=payload,
    ).stdout
    msg = message(headers(), multipart_encrypted_pgp(armored.replace(b"\n", CRLF)))
    resp = decrypt_rpc(academy, msg)
    expect_attack(
        resp.verdict,
        banner=V.BANNER_YELLOW,
        lock=True,
        reasons=[V.REASON_SENDER_MISMATCH],
        coverage=V.COVERAGE_BODY,
    )
    assert [list(s.verified_addresses) for s in resp.verdict.signers] == [[EVE]]
    assert MARKER in resp.display_message
