"""The banner rules and the verdict assembler, exhaustively."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from secmail.policy import DEFAULT_POLICY
from secmail.verdict import (
    Banner,
    Coverage,
    FromCheck,
    LayerFacts,
    Reason,
    Scheme,
    Severity,
    SignatureStatus,
    SignerResult,
    address_matches,
    assemble_verdict,
    decide_banner,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)


def expected_banner(
    signed: bool, invalid: bool, indeterminate: bool, bound: bool, coverage: Coverage
) -> Banner:
    # The rules as the issue states them, written independently of decide_banner.
    if not signed:
        return Banner.NONE
    if invalid:
        return Banner.RED
    if not indeterminate and bound and coverage >= Coverage.BODY:
        return Banner.GREEN
    return Banner.YELLOW


@pytest.mark.parametrize(
    ("signed", "invalid", "indeterminate", "bound", "coverage"),
    list(itertools.product([False, True], [False, True], [False, True], [False, True], list(Coverage))),
)
def test_decide_banner_table(
    signed: bool, invalid: bool, indeterminate: bool, bound: bool, coverage: Coverage
) -> None:
    got = decide_banner(
        signed=signed,
        any_invalid=invalid,
        any_indeterminate=indeterminate,
        sender_bound=bound,
        coverage=coverage,
    )
    assert got is expected_banner(signed, invalid, indeterminate, bound, coverage)


def test_green_needs_every_condition() -> None:
    greens = [
        combo
        for combo in itertools.product(
            [False, True], [False, True], [False, True], [False, True], list(Coverage)
        )
        if decide_banner(
            signed=combo[0],
            any_invalid=combo[1],
            any_indeterminate=combo[2],
            sender_bound=combo[3],
            coverage=combo[4],
        )
        is Banner.GREEN
    ]
    assert sorted(greens) == sorted(
        [(True, False, False, True, Coverage.BODY), (True, False, False, True, Coverage.BODY_AND_HEADERS)]
    )


def good_signer(*addresses: str) -> SignerResult:
    return SignerResult(
        scheme=Scheme.SMIME, crypto_valid=True, verified_addresses=addresses, fingerprint="aa"
    )


def facts(
    signers: tuple[SignerResult, ...], sender: str | None = "alice@example.org", **kw: object
) -> LayerFacts:
    base: dict[str, object] = {
        "scheme": Scheme.SMIME,
        "lock": False,
        "integrity_protected": False,
        "signed_at_root": True,
        "signers": signers,
        "coverage": Coverage.BODY,
        "from_check": FromCheck(sender) if sender else FromCheck(None, Reason.FROM_AMBIGUOUS),
        "reasons": (),
    }
    base.update(kw)
    return LayerFacts(**base)  # type: ignore[arg-type]


def assemble(f: LayerFacts):  # type: ignore[no-untyped-def]
    return assemble_verdict(f, policy=DEFAULT_POLICY, evaluated_at=AT)


def test_valid_bound_signer_is_green() -> None:
    v = assemble(facts((good_signer("alice@example.org"),)))
    assert (v.banner, v.signature, v.coverage, v.reasons) == (
        Banner.GREEN,
        SignatureStatus.VALID,
        Coverage.BODY,
        (),
    )
    assert v.policy == DEFAULT_POLICY.name


def test_sender_mismatch_is_yellow() -> None:
    v = assemble(facts((good_signer("bob@example.org"),)))
    assert v.banner is Banner.YELLOW
    assert v.reasons == (Reason.SENDER_MISMATCH,)


def test_domain_case_insensitive_local_part_exact() -> None:
    assert address_matches("alice@example.org", ["alice@EXAMPLE.org"])
    assert not address_matches("Alice@example.org", ["alice@example.org"])
    assert not address_matches("alice@example.org", ["alice@example.org.evil"])


def test_one_bad_signer_among_good_ones_is_red() -> None:
    bad = SignerResult(scheme=Scheme.SMIME, crypto_valid=False, reasons=(Reason.BAD_SIGNATURE,))
    v = assemble(facts((good_signer("alice@example.org"), bad)))
    assert v.banner is Banner.RED
    assert len(v.signers) == 2
    assert Reason.BAD_SIGNATURE in v.reasons


def test_missing_key_signer_is_yellow() -> None:
    missing = SignerResult(scheme=Scheme.OPENPGP, crypto_valid=False, reasons=(Reason.SIGNER_KEY_MISSING,))
    v = assemble(facts((missing,)))
    assert v.banner is Banner.YELLOW
    assert Reason.SENDER_MISMATCH not in v.reasons


def test_zero_signers_is_not_signed() -> None:
    v = assemble(facts(()))
    assert v.banner is Banner.NONE
    assert v.signature is SignatureStatus.UNSIGNED
    assert v.reasons == (Reason.MALFORMED_SIGNATURE,)


def test_ambiguous_from_never_green() -> None:
    v = assemble(facts((good_signer("alice@example.org"),), sender=None))
    assert v.banner is Banner.YELLOW
    assert Reason.FROM_AMBIGUOUS in v.reasons


def test_not_at_root_confers_nothing() -> None:
    v = assemble(
        facts(
            (),
            signed_at_root=False,
            coverage=Coverage.BODY,
            reasons=(Reason.ERRANT_CRYPTO_LAYER,),
        )
    )
    assert (v.banner, v.coverage, v.reasons) == (Banner.NONE, Coverage.NONE, (Reason.ERRANT_CRYPTO_LAYER,))


@pytest.mark.parametrize("reason", list(Reason), ids=lambda r: r.code)
def test_each_reason_on_a_valid_signer(reason: Reason) -> None:
    signer = SignerResult(
        scheme=Scheme.SMIME,
        crypto_valid=True,
        verified_addresses=("alice@example.org",),
        reasons=(reason,),
    )
    v = assemble(facts((signer,)))
    expected = {
        Severity.INVALID: Banner.RED,
        Severity.INDETERMINATE: Banner.YELLOW,
        Severity.INFO: Banner.GREEN,
    }[reason.severity]
    assert v.banner is expected


def test_unverified_signer_cannot_claim_addresses() -> None:
    with pytest.raises(ValueError):
        SignerResult(
            scheme=Scheme.SMIME,
            crypto_valid=False,
            reasons=(Reason.BAD_SIGNATURE,),
            verified_addresses=("alice@example.org",),
        )
    with pytest.raises(ValueError):
        SignerResult(scheme=Scheme.SMIME, crypto_valid=False, reasons=(Reason.SIGNING_TIME_SUSPICIOUS,))


def test_reason_codes_are_stable_and_match_proto() -> None:
    from secmail.v1 import verdict_pb2

    for reason in Reason:
        assert verdict_pb2.Reason.Value("REASON_" + reason.code) > 0
    assert len({r.code for r in Reason}) == len(Reason)
