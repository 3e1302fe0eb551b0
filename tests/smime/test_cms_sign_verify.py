"""sign_content / verify_signed_data: round trips, attacks, malformed input."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import cms_builder as cb
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from smime_pki import SIGNING_TIME, VALIDATION_TIME, SmimePKI, end_entity, sign_as

from secmail.context import TrustContext, VerifyContext
from secmail.errors import InputError, InvalidKeyError, UnsupportedAlgorithmError
from secmail.policy import DEFAULT_POLICY
from secmail.smime import algorithms as alg
from secmail.smime.envelope import encrypt_content
from secmail.smime.sign import micalg_for, sign_content
from secmail.smime.verify import verify_signed_data
from secmail.trust import path as trust_path
from secmail.verdict import Reason, Scheme

CONTENT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour, ceci est sign\xc3\xa9.\r\n"

# (person, digest, rsa_pss, expected algorithm string)
SIGNERS = [
    ("alice", "sha256", False, "rsa-pkcs1v15-sha256"),
    ("alice", "sha384", False, "rsa-pkcs1v15-sha384"),
    ("alice", "sha512", False, "rsa-pkcs1v15-sha512"),
    ("alice", "sha256", True, "rsa-pss-sha256"),
    ("alice", "sha512", True, "rsa-pss-sha512"),
    ("bob", "sha256", False, "ecdsa-p256-sha256"),
    ("erin", "sha384", False, "ecdsa-p384-sha384"),
    ("carol", "sha256", False, "ed25519"),  # RFC 8419: the digest becomes SHA-512
]


def _sign(pki: SmimePKI, who: str = "alice", content: bytes = CONTENT, **kw: object) -> bytes:
    return sign_as(pki, who, content, **kw)


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
@pytest.mark.parametrize(
    ("who", "digest", "pss", "algorithm"), SIGNERS, ids=[s[3] + "-" + s[1] for s in SIGNERS]
)
def test_round_trip(
    pki: SmimePKI, ctx: VerifyContext, who: str, digest: str, pss: bool, algorithm: str, detached: bool
) -> None:
    der = _sign(pki, who, digest=digest, rsa_pss=pss, detached=detached)
    result = verify_signed_data(der, detached_content=CONTENT if detached else None, ctx=ctx)

    assert result.encap_content == (None if detached else CONTENT)
    assert len(result.signers) == 1
    signer = result.signers[0]
    person = pki[who]
    assert signer.scheme is Scheme.SMIME
    assert signer.crypto_valid
    assert signer.reasons == ()
    assert signer.algorithm == algorithm
    assert signer.fingerprint == person.cert.fingerprint(hashes.SHA256()).hex()
    assert signer.verified_addresses == (f"{who}@example.org",)
    assert signer.claimed_signing_time == SIGNING_TIME
    assert signer.claimed_key_id == (
        f"issuer=CN=secmail test intermediate CA,O=secmail tests,C=FR;serial={person.cert.serial_number:x}"
    )
    assert [c.subject for c in signer.chain] == [
        person.cert.subject.rfc4514_string(),
        pki.intermediate.subject.rfc4514_string(),
        pki.root.subject.rfc4514_string(),
    ]
    assert signer.chain[-1].fingerprint == pki.root.fingerprint(hashes.SHA256()).hex()
    assert {c.serial_number for c in result.certificates} == {
        person.cert.serial_number,
        pki.intermediate.serial_number,
    }


def test_micalg(pki: SmimePKI) -> None:
    assert micalg_for(pki["alice"].key, "sha256") == "sha-256"
    assert micalg_for(pki["erin"].key, "sha384") == "sha-384"
    assert micalg_for(pki["carol"].key, "sha256") == "sha-512"  # RFC 8419 §3.1


def test_subject_email_address_is_verified_too(pki: SmimePKI, ctx: VerifyContext) -> None:
    issuer = (pki.intermediate, pki.intermediate_key)
    cert = end_entity(
        issuer,
        "Mallory",
        "mallory@example.org",
        pki["alice"].key.public_key(),  # type: ignore[union-attr]
        0x2001,
        sign=True,
        encipher=False,
        agree=False,
        emails_in_subject=True,
        extra_sans=["Second@Sub.Example.ORG "],
    )
    der = sign_content(
        CONTENT, private_key=pki["alice"].key, cert=cert, chain=pki.chain, signing_time=SIGNING_TIME
    )
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert signer.verified_addresses == ("mallory@example.org", "Second@sub.example.org")


# --- tampering and attacks ----------------------------------------------------------------------
def test_one_flipped_content_byte_is_bad_signature(pki: SmimePKI, ctx: VerifyContext) -> None:
    der = _sign(pki)
    tampered = CONTENT[:-3] + b"!" + CONTENT[-2:]
    signer = verify_signed_data(der, detached_content=tampered, ctx=ctx).signers[0]
    assert not signer.crypto_valid
    assert signer.reasons == (Reason.BAD_SIGNATURE,)
    assert signer.verified_addresses == ()
    assert signer.chain == ()


@pytest.mark.parametrize("who", ["alice", "bob", "carol"])
def test_flipped_signature_byte_is_bad_signature(pki: SmimePKI, ctx: VerifyContext, who: str) -> None:
    person = pki[who]
    info = cb.signer_info(person.key, person.cert, CONTENT, when=SIGNING_TIME, corrupt_signature=True)
    der = cb.signed_data([info], [person.cert], econtent=None)
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert (signer.crypto_valid, signer.reasons) == (False, (Reason.BAD_SIGNATURE,))
    # The certificate the signer named is still reported, for the reader.
    assert signer.fingerprint == person.cert.fingerprint(hashes.SHA256()).hex()


def test_flipping_any_byte_of_opaque_content_is_caught(pki: SmimePKI, ctx: VerifyContext) -> None:
    der = _sign(pki, detached=False)
    start = der.index(CONTENT)
    for offset in (0, len(CONTENT) // 2, len(CONTENT) - 1):
        tampered = bytearray(der)
        tampered[start + offset] ^= 0x20
        signer = verify_signed_data(bytes(tampered), detached_content=None, ctx=ctx).signers[0]
        assert signer.reasons == (Reason.BAD_SIGNATURE,), offset


def test_econtent_and_different_detached_content_is_bad_signature(pki: SmimePKI, ctx: VerifyContext) -> None:
    """CMS content confusion: the signature is valid over eContent, while a
    different detached content would be displayed."""
    der = _sign(pki, detached=False)
    assert verify_signed_data(der, detached_content=None, ctx=ctx).signers[0].crypto_valid
    other = CONTENT.replace(b"Bonjour", b"Virez-le")
    signer = verify_signed_data(der, detached_content=other, ctx=ctx).signers[0]
    assert (signer.crypto_valid, signer.reasons) == (False, (Reason.BAD_SIGNATURE,))
    # The same content given twice is not confusing.
    assert verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0].crypto_valid


def test_detached_signature_without_content_is_malformed(pki: SmimePKI, ctx: VerifyContext) -> None:
    signer = verify_signed_data(_sign(pki), detached_content=None, ctx=ctx).signers[0]
    assert (signer.crypto_valid, signer.reasons) == (False, (Reason.MALFORMED_SIGNATURE,))


def test_zero_signer_infos(pki: SmimePKI, ctx: VerifyContext) -> None:
    der = cb.signed_data([], [pki["alice"].cert], econtent=CONTENT)
    result = verify_signed_data(der, detached_content=None, ctx=ctx)
    assert result.signers == ()
    assert result.encap_content == CONTENT


def test_two_signers_one_bad_both_reported(pki: SmimePKI, ctx: VerifyContext) -> None:
    alice, bob = pki["alice"], pki["bob"]
    good = cb.signer_info(alice.key, alice.cert, CONTENT, when=SIGNING_TIME)
    bad = cb.signer_info(bob.key, bob.cert, CONTENT, when=SIGNING_TIME, corrupt_signature=True)
    der = cb.signed_data([good, bad], [alice.cert, bob.cert, pki.intermediate], econtent=None)
    signers = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers
    by_fpr = {s.fingerprint: s for s in signers}
    assert len(signers) == 2
    good_result = by_fpr[alice.cert.fingerprint(hashes.SHA256()).hex()]
    bad_result = by_fpr[bob.cert.fingerprint(hashes.SHA256()).hex()]
    assert (good_result.crypto_valid, good_result.reasons) == (True, ())
    assert (bad_result.crypto_valid, bad_result.reasons) == (False, (Reason.BAD_SIGNATURE,))


def test_signer_certificate_missing(pki: SmimePKI, ctx: VerifyContext) -> None:
    alice = pki["alice"]
    info = cb.signer_info(alice.key, alice.cert, CONTENT, when=SIGNING_TIME)
    der = cb.signed_data([info], [pki.intermediate], econtent=None)
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert (signer.crypto_valid, signer.reasons) == (False, (Reason.SIGNER_KEY_MISSING,))
    assert signer.fingerprint == ""
    # The claim is still reported, with the issuer read from the SignerInfo.
    assert signer.claimed_key_id == (
        f"issuer={pki.intermediate.subject.rfc4514_string()};serial={alice.cert.serial_number:x}"
    )


def test_forged_certificate_with_same_issuer_and_serial(pki: SmimePKI, ctx: VerifyContext) -> None:
    """A second certificate with the signer's issuer and serial but another
    key: the signature is matched to the real key, never to the forgery."""
    alice = pki["alice"]
    attacker_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = end_entity(
        (pki.intermediate, attacker_key),  # not really signed by the intermediate
        "Alice",
        alice.email,
        attacker_key.public_key(),
        alice.cert.serial_number,
        sign=True,
        encipher=False,
        agree=False,
    )
    info = cb.signer_info(attacker_key, forged, CONTENT, when=SIGNING_TIME)
    der = cb.signed_data([info], [alice.cert, forged, pki.intermediate], econtent=None)
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    # The mathematics hold for the forged certificate, which no CA issued.
    assert signer.crypto_valid
    assert signer.fingerprint == forged.fingerprint(hashes.SHA256()).hex()
    assert signer.reasons == (Reason.UNTRUSTED_CHAIN,)
    assert signer.chain == ()


def test_signer_named_by_subject_key_identifier(pki: SmimePKI, ctx: VerifyContext) -> None:
    bob = pki["bob"]
    info = cb.signer_info(bob.key, bob.cert, CONTENT, when=SIGNING_TIME, use_ski=True)
    der = cb.signed_data([info], [bob.cert, pki.intermediate], econtent=None, version=3)
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert (signer.crypto_valid, signer.reasons) == (True, ())
    assert signer.claimed_key_id == f"ski={cb.ski_of(bob.cert).hex()}"


def test_without_signed_attributes_signature_covers_content(pki: SmimePKI, ctx: VerifyContext) -> None:
    for who in ("alice", "bob", "carol"):
        person = pki[who]
        info = cb.signer_info(person.key, person.cert, CONTENT, signed_attrs=False)
        der = cb.signed_data([info], [person.cert, pki.intermediate], econtent=CONTENT)
        signer = verify_signed_data(der, detached_content=None, ctx=ctx).signers[0]
        assert (signer.crypto_valid, signer.reasons, signer.claimed_signing_time) == (True, (), None), who
        tampered = cb.signed_data([info], [person.cert], econtent=CONTENT + b"x")
        assert verify_signed_data(tampered, detached_content=None, ctx=ctx).signers[0].reasons == (
            Reason.BAD_SIGNATURE,
        )


def test_non_data_content_needs_signed_attributes(pki: SmimePKI, ctx: VerifyContext) -> None:
    alice = pki["alice"]
    info = cb.signer_info(alice.key, alice.cert, CONTENT, signed_attrs=False)
    der = cb.signed_data([info], [alice.cert], econtent=CONTENT, econtent_type=alg.OID_SIGNED_DATA, version=3)
    signer = verify_signed_data(der, detached_content=None, ctx=ctx).signers[0]
    assert signer.reasons == (Reason.MALFORMED_SIGNATURE,)


def test_content_type_attribute_must_match(pki: SmimePKI, ctx: VerifyContext) -> None:
    alice = pki["alice"]
    attrs = [
        cb.content_type_attr(alg.OID_ENVELOPED_DATA),
        cb.message_digest_attr(CONTENT),
        cb.signing_time_attr(SIGNING_TIME),
    ]
    info = cb.signer_info(alice.key, alice.cert, CONTENT, attrs=attrs)
    der = cb.signed_data([info], [alice.cert], econtent=None)
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert signer.reasons == (Reason.BAD_SIGNATURE,)


@pytest.mark.parametrize(
    "attrs",
    [
        pytest.param([cb.message_digest_attr(CONTENT)], id="no-content-type"),
        pytest.param([cb.content_type_attr()], id="no-message-digest"),
        pytest.param(
            [cb.content_type_attr(), cb.message_digest_attr(CONTENT), cb.message_digest_attr(b"other")],
            id="two-message-digests",
        ),
        pytest.param(
            [
                cb.content_type_attr(),
                cb.attribute(
                    alg.OID_MESSAGE_DIGEST,
                    alg.der_octet_string(alg.digest("sha256", CONTENT)),
                    alg.der_octet_string(b"\x00" * 32),
                ),
            ],
            id="two-digest-values",
        ),
        pytest.param(
            [
                cb.content_type_attr(),
                cb.message_digest_attr(CONTENT),
                cb.attribute(alg.OID_COUNTER_SIGNATURE, alg.der_sequence()),
            ],
            id="countersignature-in-signed-attrs",
        ),
    ],
)
def test_malformed_signed_attributes(pki: SmimePKI, ctx: VerifyContext, attrs: list[bytes]) -> None:
    alice = pki["alice"]
    info = cb.signer_info(alice.key, alice.cert, CONTENT, attrs=attrs)
    der = cb.signed_data([info], [alice.cert], econtent=None)
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert (signer.crypto_valid, signer.reasons) == (False, (Reason.MALFORMED_SIGNATURE,))


def test_signature_over_reordered_attributes_fails(pki: SmimePKI, ctx: VerifyContext) -> None:
    """RFC 5652 §5.4: the signature is over the attributes' DER as sent; a
    signer that signed another encoding does not verify."""
    alice = pki["alice"]
    attrs = cb.default_attrs(CONTENT, "sha256", SIGNING_TIME)
    unsorted = alg.der_tlv(0x31, b"".join(sorted(attrs, reverse=True)))
    signature = cb.raw_sign(alice.key, unsorted, "sha256")
    info = alg.der_sequence(
        alg.der_integer(1),
        alg.issuer_and_serial_number(alice.cert),
        alg.digest_algorithm_identifier("sha256"),
        alg.der_set_of(attrs, tag=0xA0),  # sorted: not what was signed
        cb.default_sig_alg(alice.key, "sha256"),
        alg.der_octet_string(signature),
    )
    der = cb.signed_data([info], [alice.cert], econtent=None)
    assert verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0].reasons == (
        Reason.BAD_SIGNATURE,
    )


# --- algorithms and policy ----------------------------------------------------------------------
@pytest.mark.parametrize("who", ["alice", "bob"])
def test_sha1_verifies_but_is_weak(pki: SmimePKI, ctx: VerifyContext, who: str) -> None:
    person = pki[who]
    info = cb.signer_info(person.key, person.cert, CONTENT, digest="sha1", when=SIGNING_TIME)
    der = cb.signed_data([info], [person.cert, pki.intermediate], econtent=None, digests=["sha1"])
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert signer.crypto_valid
    assert signer.reasons == (Reason.WEAK_ALGORITHM,)
    assert signer.algorithm.endswith("-sha1")


def test_sha1_accepted_when_the_policy_allows_it(pki: SmimePKI, ctx: VerifyContext) -> None:
    alice = pki["alice"]
    info = cb.signer_info(alice.key, alice.cert, CONTENT, digest="sha1", when=SIGNING_TIME)
    der = cb.signed_data([info], [alice.cert, pki.intermediate], econtent=None, digests=["sha1"])
    lenient = dataclasses.replace(
        DEFAULT_POLICY,
        algorithms=dataclasses.replace(
            DEFAULT_POLICY.algorithms,
            signature_digests=DEFAULT_POLICY.algorithms.signature_digests | {"sha1"},
        ),
    )
    lenient_ctx = dataclasses.replace(ctx, policy=lenient)
    assert verify_signed_data(der, detached_content=CONTENT, ctx=lenient_ctx).signers[0].reasons == ()


def test_md5_with_rsa_is_weak(pki: SmimePKI, ctx: VerifyContext) -> None:
    alice = pki["alice"]
    sig_alg = alg.algorithm_identifier(alg.OID_MD5_RSA, alg.DER_NULL)
    info = cb.signer_info(alice.key, alice.cert, CONTENT, digest="md5", when=SIGNING_TIME, sig_alg=sig_alg)
    der = cb.signed_data([info], [alice.cert, pki.intermediate], econtent=None, digests=["md5"])
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert (signer.crypto_valid, signer.algorithm) == (True, "rsa-pkcs1v15-md5")
    assert Reason.WEAK_ALGORITHM in signer.reasons


def test_rsa_encryption_oid_as_signature_algorithm(pki: SmimePKI, ctx: VerifyContext) -> None:
    """OpenSSL writes rsaEncryption in signatureAlgorithm (RFC 3370 §3.2)."""
    alice = pki["alice"]
    sig_alg = alg.algorithm_identifier(alg.OID_RSA_ENCRYPTION, alg.DER_NULL)
    info = cb.signer_info(alice.key, alice.cert, CONTENT, digest="sha384", when=SIGNING_TIME, sig_alg=sig_alg)
    der = cb.signed_data([info], [alice.cert, pki.intermediate], econtent=None, digests=["sha384"])
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert (signer.crypto_valid, signer.reasons, signer.algorithm) == (True, (), "rsa-pkcs1v15-sha384")


def test_small_rsa_key_is_weak(pki: SmimePKI, ctx: VerifyContext) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = end_entity(
        (pki.intermediate, pki.intermediate_key),
        "Small",
        "small@example.org",
        small.public_key(),
        0x3001,
        sign=True,
        encipher=False,
        agree=False,
    )
    der = sign_content(CONTENT, private_key=small, cert=cert, chain=pki.chain, signing_time=SIGNING_TIME)
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert signer.crypto_valid
    assert Reason.WEAK_ALGORITHM in signer.reasons


def test_unknown_signature_algorithm(pki: SmimePKI, ctx: VerifyContext) -> None:
    alice = pki["alice"]
    info = cb.signer_info(
        alice.key, alice.cert, CONTENT, when=SIGNING_TIME, sig_alg=alg.algorithm_identifier("1.2.3.4.5")
    )
    der = cb.signed_data([info], [alice.cert], econtent=None)
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert (signer.crypto_valid, signer.reasons) == (False, (Reason.UNSUPPORTED_ALGORITHM,))


def test_unknown_digest_algorithm(pki: SmimePKI, ctx: VerifyContext) -> None:
    alice = pki["alice"]
    info = bytearray(cb.signer_info(alice.key, alice.cert, CONTENT, when=SIGNING_TIME))
    sha256 = alg.der_oid(alg.OID_SHA256)
    at = bytes(info).index(sha256)
    info[at + len(sha256) - 1] = 0x7F  # 2.16.840.1.101.3.4.2.127
    der = cb.signed_data([bytes(info)], [alice.cert], econtent=None)
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert (signer.crypto_valid, signer.reasons) == (False, (Reason.UNSUPPORTED_ALGORITHM,))


def test_signature_algorithm_of_another_key_type(pki: SmimePKI, ctx: VerifyContext) -> None:
    alice = pki["alice"]
    sig_alg = alg.algorithm_identifier(alg.OID_ECDSA_SHA256)
    info = cb.signer_info(alice.key, alice.cert, CONTENT, when=SIGNING_TIME, sig_alg=sig_alg)
    der = cb.signed_data([info], [alice.cert], econtent=None)
    assert verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0].reasons == (
        Reason.BAD_SIGNATURE,
    )


def test_future_signing_time_is_reported(pki: SmimePKI, ctx: VerifyContext) -> None:
    alice = pki["alice"]
    future = VALIDATION_TIME + DEFAULT_POLICY.signing_time_tolerance + timedelta(minutes=5)
    der = sign_content(CONTENT, private_key=alice.key, cert=alice.cert, chain=pki.chain, signing_time=future)
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert signer.crypto_valid
    assert signer.reasons == (Reason.SIGNING_TIME_SUSPICIOUS,)
    assert signer.claimed_signing_time == future
    near = VALIDATION_TIME + timedelta(hours=1)
    der = sign_content(CONTENT, private_key=alice.key, cert=alice.cert, chain=pki.chain, signing_time=near)
    assert verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0].reasons == ()


def test_signing_time_after_2049_is_generalized_time(pki: SmimePKI, ctx: VerifyContext) -> None:
    alice = pki["alice"]
    when = datetime(2051, 3, 4, 5, 6, 7, tzinfo=UTC)
    der = sign_content(CONTENT, private_key=alice.key, cert=alice.cert, chain=pki.chain, signing_time=when)
    assert b"\x18\x0f20510304050607Z" in der
    late_ctx = dataclasses.replace(ctx, at=when)
    assert (
        verify_signed_data(der, detached_content=CONTENT, ctx=late_ctx).signers[0].claimed_signing_time
        == when
    )


# --- trust ------------------------------------------------------------------------------------
def test_unknown_root_is_untrusted(pki: SmimePKI) -> None:
    der = _sign(pki)
    ctx = VerifyContext(at=VALIDATION_TIME, policy=DEFAULT_POLICY, trust=TrustContext())
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=ctx).signers[0]
    assert signer.crypto_valid
    assert Reason.UNTRUSTED_CHAIN in signer.reasons
    assert signer.verified_addresses == ("alice@example.org",)


def test_expired_certificate_at_validation_time(pki: SmimePKI, ctx: VerifyContext) -> None:
    der = _sign(pki)
    late = dataclasses.replace(ctx, at=datetime(2037, 1, 1, tzinfo=UTC))
    signer = verify_signed_data(der, detached_content=CONTENT, ctx=late).signers[0]
    assert signer.crypto_valid
    assert Reason.CERT_EXPIRED in signer.reasons


def test_path_validator_receives_message_certificates(
    pki: SmimePKI, ctx: VerifyContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[x509.Certificate, list[x509.Certificate], datetime]] = []

    def fake(
        cert: x509.Certificate,
        extra: list[x509.Certificate],
        trust: TrustContext,
        *,
        at: datetime,
        policy: object,
    ) -> trust_path.PathResult:
        seen.append((cert, list(extra), at))
        return trust_path.PathResult(chain=(), reasons=(Reason.CERT_REVOKED,))

    monkeypatch.setattr(trust_path, "validate_email_signer", fake)
    signer = verify_signed_data(_sign(pki), detached_content=CONTENT, ctx=ctx).signers[0]
    assert signer.reasons == (Reason.CERT_REVOKED,)
    assert signer.chain == ()
    cert, extra, at = seen[0]
    assert cert == pki["alice"].cert
    assert set(extra) == {pki["alice"].cert, pki.intermediate}
    assert at == VALIDATION_TIME


def test_path_validator_crash_fails_closed(
    pki: SmimePKI, ctx: VerifyContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> trust_path.PathResult:
        raise RuntimeError("boom")

    monkeypatch.setattr(trust_path, "validate_email_signer", broken)
    signer = verify_signed_data(_sign(pki), detached_content=CONTENT, ctx=ctx).signers[0]
    assert signer.reasons == (Reason.UNTRUSTED_CHAIN,)


# --- unreadable input -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "der",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"garbage, not DER at all", id="garbage"),
        pytest.param(b"\x30\x03\x02\x01", id="short-sequence"),
        pytest.param(
            alg.der_sequence(alg.der_oid(alg.OID_DATA), alg.der_explicit(0, alg.der_octet_string(b"x"))),
            id="data",
        ),
    ],
)
def test_unreadable_input_is_input_error(der: bytes, ctx: VerifyContext) -> None:
    with pytest.raises(InputError):
        verify_signed_data(der, detached_content=CONTENT, ctx=ctx)


def test_truncated_der_is_input_error(pki: SmimePKI, ctx: VerifyContext) -> None:
    der = _sign(pki, detached=False)
    for cut in (1, 10, len(der) // 2, len(der) - 1):
        with pytest.raises(InputError):
            verify_signed_data(der[:cut], detached_content=None, ctx=ctx)


def test_trailing_garbage_is_input_error(pki: SmimePKI, ctx: VerifyContext) -> None:
    with pytest.raises(InputError):
        verify_signed_data(_sign(pki) + b"\x00\x00", detached_content=CONTENT, ctx=ctx)


def test_enveloped_data_is_not_signed_data(pki: SmimePKI, ctx: VerifyContext) -> None:
    der = encrypt_content(CONTENT, [pki["alice"].cert])
    with pytest.raises(InputError):
        verify_signed_data(der, detached_content=None, ctx=ctx)


def test_corrupted_inner_structure_is_input_error(pki: SmimePKI, ctx: VerifyContext) -> None:
    der = bytearray(_sign(pki))
    # Break the tag of the signer's digestAlgorithm SEQUENCE.
    at = bytes(der).rindex(alg.digest_algorithm_identifier("sha256"))
    der[at] = 0x05
    with pytest.raises(InputError):
        verify_signed_data(bytes(der), detached_content=CONTENT, ctx=ctx)


def test_ber_indefinite_lengths_are_read(pki: SmimePKI, ctx: VerifyContext) -> None:
    """gpgsm writes BER with indefinite lengths and chunked OCTET STRINGs."""
    alice = pki["alice"]
    info = cb.signer_info(alice.key, alice.cert, CONTENT, when=SIGNING_TIME)
    half = len(CONTENT) // 2
    chunked = (
        b"\x24\x80" + alg.der_octet_string(CONTENT[:half]) + alg.der_octet_string(CONTENT[half:]) + b"\0\0"
    )
    encap = b"\x30\x80" + alg.der_oid(alg.OID_DATA) + b"\xa0\x80" + chunked + b"\0\0" + b"\0\0"
    body = (
        b"\x30\x80"
        + alg.der_integer(1)
        + alg.der_set_of([alg.digest_algorithm_identifier("sha256")])
        + encap
        + alg.der_set_of(
            [alice.cert.public_bytes(Encoding.DER), pki.intermediate.public_bytes(Encoding.DER)], tag=0xA0
        )
        + alg.der_set_of([info])
        + b"\0\0"
    )
    ber = b"\x30\x80" + alg.der_oid(alg.OID_SIGNED_DATA) + b"\xa0\x80" + body + b"\0\0" + b"\0\0"
    result = verify_signed_data(ber, detached_content=None, ctx=ctx)
    assert result.encap_content == CONTENT
    assert (result.signers[0].crypto_valid, result.signers[0].reasons) == (True, ())


# --- signer-side misuse ---------------------------------------------------------------------------
def test_key_must_match_certificate(pki: SmimePKI) -> None:
    with pytest.raises(InvalidKeyError):
        sign_content(CONTENT, private_key=pki["bob"].key, cert=pki["alice"].cert, signing_time=SIGNING_TIME)


def test_naive_signing_time_is_refused(pki: SmimePKI) -> None:
    alice = pki["alice"]
    with pytest.raises(InputError):
        sign_content(CONTENT, private_key=alice.key, cert=alice.cert, signing_time=datetime(2026, 1, 1))


def test_unoffered_digest_is_refused(pki: SmimePKI) -> None:
    alice = pki["alice"]
    with pytest.raises(UnsupportedAlgorithmError):
        sign_content(
            CONTENT, private_key=alice.key, cert=alice.cert, signing_time=SIGNING_TIME, digest="sha1"
        )


def test_x25519_key_cannot_sign(pki: SmimePKI) -> None:
    dave = pki["dave"]
    with pytest.raises(UnsupportedAlgorithmError):
        sign_content(CONTENT, private_key=dave.key, cert=dave.cert, signing_time=SIGNING_TIME)


def test_large_content_is_fast_enough(pki: SmimePKI, ctx: VerifyContext) -> None:
    import time

    big = (b"0123456789abcdef" * 64 + b"\r\n") * 5000  # ~5 MB
    start = time.perf_counter()
    der = _sign(pki, content=big, detached=False)
    result = verify_signed_data(der, detached_content=None, ctx=ctx)
    elapsed = time.perf_counter() - start
    assert result.encap_content == big
    assert result.signers[0].crypto_valid
    assert elapsed < 2.0
