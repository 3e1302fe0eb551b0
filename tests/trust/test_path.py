"""S/MIME signer path validation on a generated PKI (pinned dates)."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from trust_pki import (
    AT,
    NOT_AFTER,
    NOT_BEFORE,
    CertSpec,
    Hierarchy,
    Issued,
    ec_key,
    hierarchy,
    issue,
    make_crl,
    name,
    resign_with_sha1,
)

from secmail.context import TrustContext
from secmail.policy import DEFAULT_POLICY, AlgorithmPolicy, RevocationMode
from secmail.trust.path import ChainOutcome, PathResult, validate_chain, validate_email_signer
from secmail.trust.revocation import RevocationStatus
from secmail.verdict import Reason

HARD = RevocationMode.HARD_FAIL
SOFT = RevocationMode.SOFT_FAIL


@pytest.fixture(scope="module")
def pki() -> Hierarchy:
    return hierarchy()


def trust_of(
    pki: Hierarchy,
    *,
    intermediates: tuple[x509.Certificate, ...] = (),
    crls: tuple[x509.CertificateRevocationList, ...] = (),
    revocation: RevocationMode = SOFT,
) -> TrustContext:
    return TrustContext(
        anchors=(pki.root.cert,),
        intermediates=intermediates,
        crls=crls,
        revocation=revocation,
    )


def check(
    pki: Hierarchy,
    ee: x509.Certificate | None = None,
    *,
    at: datetime = AT,
    extra: tuple[x509.Certificate, ...] | None = None,
    **trust: object,
) -> PathResult:
    return validate_email_signer(
        ee or pki.ee.cert,
        (pki.intermediate.cert,) if extra is None else extra,
        trust_of(pki, **trust),  # type: ignore[arg-type]
        at=at,
        policy=DEFAULT_POLICY,
    )


def ee_under(pki: Hierarchy, spec: CertSpec) -> x509.Certificate:
    return issue(spec, ec_key(), pki.intermediate).cert


ALICE = CertSpec(name("Alice"), emails=("alice@ac-besancon.fr",))


# --- chains ---------------------------------------------------------------


def test_valid_chain_has_no_reasons_and_is_ee_first(pki: Hierarchy) -> None:
    result = check(pki)
    assert result.reasons == ()
    assert result.chain == (pki.ee.cert, pki.intermediate.cert, pki.root.cert)


def test_intermediate_from_trust_context(pki: Hierarchy) -> None:
    result = check(pki, extra=(), intermediates=(pki.intermediate.cert,))
    assert result.reasons == ()
    assert result.chain[1] == pki.intermediate.cert


def test_missing_intermediate_is_untrusted(pki: Hierarchy) -> None:
    result = check(pki, extra=())
    assert result == PathResult((), (Reason.UNTRUSTED_CHAIN,))


def test_unknown_anchor_is_untrusted(pki: Hierarchy) -> None:
    stranger = hierarchy()
    result = validate_email_signer(
        pki.ee.cert,
        [pki.intermediate.cert],
        TrustContext(anchors=(stranger.root.cert,)),
        at=AT,
        policy=DEFAULT_POLICY,
    )
    assert result == PathResult((), (Reason.UNTRUSTED_CHAIN,))


def test_no_anchor_at_all_is_untrusted(pki: Hierarchy) -> None:
    result = validate_email_signer(
        pki.ee.cert, [pki.intermediate.cert], TrustContext(), at=AT, policy=DEFAULT_POLICY
    )
    assert result.reasons == (Reason.UNTRUSTED_CHAIN,)


def test_same_name_intermediate_with_another_key_is_untrusted(pki: Hierarchy) -> None:
    impostor = issue(CertSpec(pki.intermediate.cert.subject, ca=True), ec_key(), pki.root)
    result = check(pki, extra=(impostor.cert,))
    assert result.reasons == (Reason.UNTRUSTED_CHAIN,)


def test_naive_validation_time_is_taken_as_utc(pki: Hierarchy) -> None:
    assert check(pki, at=AT.replace(tzinfo=None)).reasons == ()


# --- time -----------------------------------------------------------------


def test_expired_ee_judged_at_validation_time(pki: Hierarchy) -> None:
    ee = ee_under(pki, replace(ALICE, not_after=AT - timedelta(days=30)))
    expired = check(pki, ee)
    assert expired.reasons == (Reason.CERT_EXPIRED,)
    # The path itself is fine, so it is reported for the reader.
    assert expired.chain == (ee, pki.intermediate.cert, pki.root.cert)
    # The same certificate was fine before it expired.
    assert check(pki, ee, at=AT - timedelta(days=60)).reasons == ()


def test_not_yet_valid_ee(pki: Hierarchy) -> None:
    ee = ee_under(pki, replace(ALICE, not_before=AT + timedelta(days=1)))
    assert check(pki, ee).reasons == (Reason.CERT_NOT_YET_VALID,)
    assert check(pki, ee, at=AT + timedelta(days=2)).reasons == ()


def test_expired_intermediate_with_valid_ee() -> None:
    short_ca = CertSpec(name("Short CA"), ca=True, not_after=AT - timedelta(days=1))
    pki = hierarchy(intermediate_spec=short_ca)
    result = check(pki)
    assert result.reasons == (Reason.CERT_EXPIRED,)
    assert result.chain[1] == pki.intermediate.cert


def test_expired_and_wrong_usage_reports_both(pki: Hierarchy) -> None:
    spec = replace(ALICE, not_after=AT - timedelta(days=1), ekus=(ExtendedKeyUsageOID.SERVER_AUTH,))
    result = check(pki, ee_under(pki, spec))
    assert set(result.reasons) == {Reason.KEY_USAGE, Reason.CERT_EXPIRED}


# --- key usage (RFC 8550 §4.4.2, §4.4.4) ------------------------------------


def test_missing_email_protection_eku_is_key_usage(pki: Hierarchy) -> None:
    ee = ee_under(pki, replace(ALICE, ekus=(ExtendedKeyUsageOID.SERVER_AUTH,)))
    result = check(pki, ee)
    assert result.reasons == (Reason.KEY_USAGE,)
    assert result.chain[0] == ee


@pytest.mark.parametrize(
    "ekus",
    [
        None,
        (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,),
        (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION),
    ],
    ids=["no-eku", "any-eku", "client-and-email"],
)
def test_acceptable_ekus(pki: Hierarchy, ekus: tuple[x509.ObjectIdentifier, ...] | None) -> None:
    assert check(pki, ee_under(pki, replace(ALICE, ekus=ekus))).reasons == ()


def test_key_usage_without_signature_bits_is_key_usage(pki: Hierarchy) -> None:
    encipher_only = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    ee = ee_under(pki, replace(ALICE, key_usage=encipher_only))
    assert check(pki, ee).reasons == (Reason.KEY_USAGE,)


def test_non_repudiation_alone_may_sign(pki: Hierarchy) -> None:
    non_repudiation = x509.KeyUsage(
        digital_signature=False,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    assert check(pki, ee_under(pki, replace(ALICE, key_usage=non_repudiation))).reasons == ()


def test_intermediate_eku_without_email_protection_is_key_usage() -> None:
    tls_ca = CertSpec(
        name("TLS-only CA"),
        ca=True,
        extra=((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),),
    )
    assert check(hierarchy(intermediate_spec=tls_ca)).reasons == (Reason.KEY_USAGE,)


# --- names ----------------------------------------------------------------


def _constrained_pki() -> Hierarchy:
    only_besancon = x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("ac-besancon.fr")], excluded_subtrees=None
    )
    return hierarchy(intermediate_spec=CertSpec(name("Besançon CA"), ca=True, name_constraints=only_besancon))


def test_name_constraints_refuse_foreign_email_san() -> None:
    pki = _constrained_pki()
    assert check(pki).reasons == ()
    evil = ee_under(pki, CertSpec(name("Mallory"), emails=("mallory@evil.example",)))
    assert check(pki, evil) == PathResult((), (Reason.UNTRUSTED_CHAIN,))


def test_name_constraints_apply_to_subject_email_address() -> None:
    # RFC 5280 §4.2.1.10: without a SAN the rfc822Name constraint applies to
    # the subject DN's emailAddress; cryptography does not do this itself.
    pki = _constrained_pki()
    inside = ee_under(pki, CertSpec(name("Alice", email="alice@ac-besancon.fr")))
    assert check(pki, inside).reasons == ()
    outside = ee_under(pki, CertSpec(name("Mallory", email="mallory@evil.example")))
    assert Reason.UNTRUSTED_CHAIN in check(pki, outside).reasons


def test_validate_chain_matches_expected_email(pki: Hierarchy) -> None:
    def for_address(email: str) -> ChainOutcome:
        return validate_chain(
            pki.ee.cert,
            [pki.intermediate.cert],
            [pki.root.cert],
            at=AT,
            purpose="email",
            email=email,
        )

    # RFC 5280 §7.5: the domain compares case-insensitively.
    good = for_address("alice@AC-Besancon.fr")
    assert good.ok and good.reasons == ()
    other = for_address("bob@ac-besancon.fr")
    assert not other.ok
    assert other.reasons == (Reason.SENDER_MISMATCH,)
    # The local part does not.
    assert for_address("Alice@ac-besancon.fr").reasons == (Reason.SENDER_MISMATCH,)


def test_validate_chain_server_name() -> None:
    root = issue(CertSpec(name("Root"), ca=True), ec_key(), None)
    tls = issue(
        CertSpec(
            name("www"),
            ekus=(ExtendedKeyUsageOID.SERVER_AUTH,),
            extra=((x509.SubjectAlternativeName([x509.DNSName("www.example.fr")]), False),),
        ),
        ec_key(),
        root,
    )
    ok = validate_chain(tls.cert, [], [root.cert], at=AT, purpose="server", dns_name="www.example.fr")
    assert ok.ok and ok.chain == (tls.cert, root.cert)
    wrong = validate_chain(tls.cert, [], [root.cert], at=AT, purpose="server", dns_name="example.fr")
    assert not wrong.ok
    bad = validate_chain(tls.cert, [], [root.cert], at=AT, purpose="server")
    assert not bad.ok and "bad request" in bad.detail


# --- algorithms -----------------------------------------------------------


def test_sha1_signed_intermediate_is_weak(pki: Hierarchy) -> None:
    sha1_intermediate = resign_with_sha1(pki.intermediate.cert, pki.root.key)
    result = check(pki, extra=(sha1_intermediate,))
    assert result.reasons == (Reason.WEAK_ALGORITHM,)
    assert result.chain == (pki.ee.cert, sha1_intermediate, pki.root.cert)


def test_sha1_self_signature_of_anchor_is_never_checked(pki: Hierarchy) -> None:
    sha1_root = resign_with_sha1(pki.root.cert, pki.root.key)
    result = validate_email_signer(
        pki.ee.cert,
        [pki.intermediate.cert],
        TrustContext(anchors=(sha1_root,)),
        at=AT,
        policy=DEFAULT_POLICY,
    )
    assert result.reasons == ()
    assert result.chain[-1] == sha1_root


def test_sha1_with_a_forged_signature_is_not_a_path(pki: Hierarchy) -> None:
    forged = resign_with_sha1(pki.intermediate.cert, ec_key())
    assert check(pki, extra=(forged,)).reasons == (Reason.UNTRUSTED_CHAIN,)


def test_short_rsa_ee_key_is_weak(pki: Hierarchy) -> None:
    # cryptography's verifier accepts a 1024-bit end-entity key; the policy
    # does not.
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ee = issue(ALICE, short, pki.intermediate).cert
    assert check(pki, ee).reasons == (Reason.WEAK_ALGORITHM,)


def test_rsa_floor_follows_the_policy(pki: Hierarchy) -> None:
    rsa2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ee = issue(ALICE, rsa2048, pki.intermediate).cert
    assert check(pki, ee).reasons == ()
    strict = replace(DEFAULT_POLICY, algorithms=AlgorithmPolicy(min_rsa_bits=3072))
    result = validate_email_signer(ee, [pki.intermediate.cert], trust_of(pki), at=AT, policy=strict)
    assert result.reasons == (Reason.WEAK_ALGORITHM,)


# --- revocation (RFC 5280 §6.3) ---------------------------------------------


def test_revoked_ee(pki: Hierarchy) -> None:
    crl = make_crl(pki.intermediate, [pki.ee.cert])
    result = check(pki, crls=(crl,))
    assert result.reasons == (Reason.CERT_REVOKED,)
    assert result.chain[0] == pki.ee.cert


def test_revoked_intermediate(pki: Hierarchy) -> None:
    root_crl = make_crl(pki.root, [pki.intermediate.cert])
    ca_crl = make_crl(pki.intermediate, [])
    assert check(pki, crls=(root_crl, ca_crl)).reasons == (Reason.CERT_REVOKED,)


def test_complete_fresh_crls_under_hard_fail(pki: Hierarchy) -> None:
    crls = (make_crl(pki.root, []), make_crl(pki.intermediate, []))
    assert check(pki, crls=crls, revocation=HARD).reasons == ()


def test_hard_fail_needs_status_for_every_non_anchor_cert(pki: Hierarchy) -> None:
    # Only the EE is covered; the intermediate's status is unknown.
    crls = (make_crl(pki.intermediate, []),)
    assert check(pki, crls=crls, revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)


def test_no_crl_soft_and_hard(pki: Hierarchy) -> None:
    assert check(pki).reasons == ()
    assert check(pki, revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)


def test_policy_hard_fail_also_counts(pki: Hierarchy) -> None:
    hard_policy = replace(DEFAULT_POLICY, revocation=HARD)
    result = validate_email_signer(
        pki.ee.cert, [pki.intermediate.cert], trust_of(pki), at=AT, policy=hard_policy
    )
    assert result.reasons == (Reason.REVOCATION_UNKNOWN,)


def test_stale_crl(pki: Hierarchy) -> None:
    stale = (
        make_crl(pki.root, [], next_update=AT - timedelta(days=1)),
        make_crl(pki.intermediate, [pki.ee.cert], next_update=AT - timedelta(days=1)),
    )
    # A stale CRL is no information at all, not even its revocations.
    assert check(pki, crls=stale, revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)
    assert check(pki, crls=stale, revocation=SOFT).reasons == ()


def test_crl_from_the_future_is_unusable(pki: Hierarchy) -> None:
    future = (
        make_crl(pki.root, [], this_update=AT + timedelta(days=1)),
        make_crl(pki.intermediate, [], this_update=AT + timedelta(days=1)),
    )
    assert check(pki, crls=future, revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)


def test_crl_without_next_update_is_unusable(pki: Hierarchy) -> None:
    crls = (make_crl(pki.root, []), make_crl(pki.intermediate, [], next_update=None))
    assert check(pki, crls=crls, revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)


def test_crl_signed_by_wrong_key_is_ignored(pki: Hierarchy) -> None:
    forged = make_crl(pki.intermediate, [pki.ee.cert], signing_key=ec_key())
    assert check(pki, crls=(forged,)).reasons == ()
    root_crl = make_crl(pki.root, [])
    hard = check(pki, crls=(forged, root_crl), revocation=HARD)
    assert hard.reasons == (Reason.REVOCATION_UNKNOWN,)


def test_crl_from_same_name_other_ca_is_ignored(pki: Hierarchy) -> None:
    twin = Issued(pki.intermediate.cert, ec_key())
    assert check(pki, crls=(make_crl(twin, [pki.ee.cert]),)).reasons == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"crl_number": None},
        {"crl_number_critical": True},
        {"extra": ((x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"), True),)},
        {"extra": ((x509.DeltaCRLIndicator(1), True),)},
    ],
    ids=["crl-number-missing", "crl-number-critical", "unknown-critical", "delta-crl"],
)
def test_malformed_crl_is_unusable(pki: Hierarchy, kwargs: dict[str, object]) -> None:
    root_crl = make_crl(pki.root, [])
    bad = make_crl(pki.intermediate, [pki.ee.cert], **kwargs)  # type: ignore[arg-type]
    # Neither its revocation is believed nor its silence.
    assert check(pki, crls=(root_crl, bad)).reasons == ()
    assert check(pki, crls=(root_crl, bad), revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)


def test_issuer_without_crl_sign_cannot_issue_crls() -> None:
    no_crl_sign = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    pki = hierarchy(intermediate_spec=CertSpec(name("CA"), ca=True, key_usage=no_crl_sign))
    crl = make_crl(pki.intermediate, [pki.ee.cert])
    root_crl = make_crl(pki.root, [])
    # §6.3.3 (f): the CRL is not believed, neither its listing nor its
    # coverage.
    assert check(pki, crls=(root_crl, crl)).reasons == ()
    assert check(pki, crls=(root_crl, crl), revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (x509.ReasonFlags.key_compromise, (Reason.CERT_REVOKED,)),
        (x509.ReasonFlags.certificate_hold, (Reason.CERT_REVOKED,)),
        (x509.ReasonFlags.remove_from_crl, ()),
    ],
)
def test_crl_reason_codes(pki: Hierarchy, reason: x509.ReasonFlags, expected: tuple[Reason, ...]) -> None:
    crls = (make_crl(pki.root, []), make_crl(pki.intermediate, [pki.ee.cert], reason=reason))
    assert check(pki, crls=crls, revocation=HARD).reasons == expected


def test_idp_for_ca_certs_only_does_not_cover_the_ee(pki: Hierarchy) -> None:
    ca_only = x509.IssuingDistributionPoint(
        full_name=None,
        relative_name=None,
        only_contains_user_certs=False,
        only_contains_ca_certs=True,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    crls = (
        make_crl(pki.root, []),
        make_crl(pki.intermediate, [pki.ee.cert], extra=((ca_only, True),)),
    )
    assert check(pki, crls=crls, revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)


def test_idp_only_some_reasons_revokes_but_never_clears(pki: Hierarchy) -> None:
    partial = x509.IssuingDistributionPoint(
        full_name=None,
        relative_name=None,
        only_contains_user_certs=False,
        only_contains_ca_certs=False,
        only_some_reasons=frozenset({x509.ReasonFlags.key_compromise}),
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    root_crl = make_crl(pki.root, [])
    silent = make_crl(pki.intermediate, [], extra=((partial, True),))
    assert check(pki, crls=(root_crl, silent), revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)
    listing = make_crl(pki.intermediate, [pki.ee.cert], extra=((partial, True),))
    assert check(pki, crls=(root_crl, listing)).reasons == (Reason.CERT_REVOKED,)


def test_custom_revocation_checker_plugs_in(pki: Hierarchy) -> None:
    class SaysRevoked:
        def status(
            self, cert: x509.Certificate, issuer: x509.Certificate, *, at: datetime
        ) -> RevocationStatus:
            return RevocationStatus.REVOKED if cert == pki.ee.cert else RevocationStatus.GOOD

    outcome = validate_chain(
        pki.ee.cert,
        [pki.intermediate.cert],
        [pki.root.cert],
        at=AT,
        purpose="email",
        revocation_checkers=[SaysRevoked()],
    )
    assert outcome.reasons == (Reason.CERT_REVOKED,)


# --- cost -----------------------------------------------------------------


def test_per_message_cost_is_small(pki: Hierarchy) -> None:
    crls = (make_crl(pki.root, []), make_crl(pki.intermediate, []))
    trust = trust_of(pki, crls=crls, revocation=HARD)
    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        result = validate_email_signer(
            pki.ee.cert, [pki.intermediate.cert], trust, at=AT, policy=DEFAULT_POLICY
        )
    per_call = (time.perf_counter() - start) / rounds
    assert result.reasons == ()
    # Measured around 1 ms on the development machine; generous bound.
    assert per_call < 0.02


def test_window_constants_are_consistent() -> None:
    assert NOT_BEFORE < AT < NOT_AFTER


# --- anchors ----------------------------------------------------------------


def test_directly_trusted_certificate_is_its_own_chain() -> None:
    # A correspondent's certificate imported as an anchor: the path is the
    # certificate alone, and nothing below an anchor needs revocation data.
    self_signed = issue(CertSpec(name("Self"), emails=("self@ac-besancon.fr",)), ec_key(), None)
    result = validate_email_signer(
        self_signed.cert,
        [],
        TrustContext(anchors=(self_signed.cert,), revocation=HARD),
        at=AT,
        policy=DEFAULT_POLICY,
    )
    assert result == PathResult((self_signed.cert,), ())


def test_intermediate_as_anchor(pki: Hierarchy) -> None:
    result = validate_email_signer(
        pki.ee.cert,
        [],
        TrustContext(anchors=(pki.intermediate.cert,)),
        at=AT,
        policy=DEFAULT_POLICY,
    )
    assert result == PathResult((pki.ee.cert, pki.intermediate.cert), ())


def test_expired_anchor_is_reported_as_expired(pki: Hierarchy) -> None:
    old_root = issue(
        CertSpec(pki.root.cert.subject, ca=True, not_after=AT - timedelta(days=1)),
        pki.root.key,
        None,
    )
    result = validate_email_signer(
        pki.ee.cert,
        [pki.intermediate.cert],
        TrustContext(anchors=(old_root.cert,)),
        at=AT,
        policy=DEFAULT_POLICY,
    )
    assert result.reasons == (Reason.CERT_EXPIRED,)
    assert result.chain[-1] == old_root.cert


def _without_key_usage(subject: str, issuer: Issued | None) -> Issued:
    key = ec_key()
    signer = issuer or Issued(None, key)  # type: ignore[arg-type]
    issuer_name = name(subject) if issuer is None else issuer.cert.subject
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()), False)
        .sign(signer.key, hashes.SHA256())
    )
    return Issued(cert, key)


def test_anchor_without_key_usage_is_accepted_but_intermediate_is_not() -> None:
    # RFC 5280 §6.1.1 (d): an anchor is an input (name and key); its own
    # extensions are not path processing. An intermediate is held to
    # §4.2.1.3 (keyUsage with keyCertSign), as cryptography does.
    root = _without_key_usage("Old Root", None)
    intermediate = issue(CertSpec(name("Issuing CA"), ca=True), ec_key(), root)
    ee = issue(ALICE, ec_key(), intermediate)
    trust = TrustContext(anchors=(root.cert,))
    ok = validate_email_signer(ee.cert, [intermediate.cert], trust, at=AT, policy=DEFAULT_POLICY)
    assert ok.reasons == ()

    good_root = issue(CertSpec(name("Root"), ca=True), ec_key(), None)
    sloppy = _without_key_usage("Sloppy CA", good_root)
    ee2 = issue(ALICE, ec_key(), sloppy)
    refused = validate_email_signer(
        ee2.cert,
        [sloppy.cert],
        TrustContext(anchors=(good_root.cert,)),
        at=AT,
        policy=DEFAULT_POLICY,
    )
    assert refused.reasons == (Reason.UNTRUSTED_CHAIN,)
    # The same intermediate is fine as an anchor itself.
    assert (
        validate_email_signer(
            ee2.cert, [], TrustContext(anchors=(sloppy.cert,)), at=AT, policy=DEFAULT_POLICY
        ).reasons
        == ()
    )


def test_validate_chain_eku_override(pki: Hierarchy) -> None:
    client = validate_chain(
        pki.ee.cert,
        [pki.intermediate.cert],
        [pki.root.cert],
        at=AT,
        purpose="client",
        extended_key_usages=["clientAuth"],
    )
    # Alice's certificate is for e-mail only.
    assert not client.ok and client.reasons == (Reason.KEY_USAGE,)
    anything = validate_chain(
        pki.ee.cert,
        [pki.intermediate.cert],
        [pki.root.cert],
        at=AT,
        purpose="client",
        extended_key_usages=[],
    )
    assert anything.ok
