"""The verdict assembler against an independent statement of the rules,
over arbitrary facts (hypothesis): GREEN exactly when every condition of
the README's banner table holds, whatever else the facts say."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

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
)

ADDRESSES = ["alice@ac-besancon.fr", "eve@ac-besancon.fr", "ALICE@ac-besancon.fr", "alice@AC-BESANCON.FR"]
reasons = st.lists(st.sampled_from(list(Reason)), max_size=3)


@st.composite
def signer_results(draw: st.DrawFn) -> SignerResult:
    valid = draw(st.booleans())
    why = draw(reasons)
    if not valid and all(r.severity is Severity.INFO for r in why):
        why.append(draw(st.sampled_from([r for r in Reason if r.severity is not Severity.INFO])))
    addresses = tuple(draw(st.lists(st.sampled_from(ADDRESSES), max_size=2, unique=True))) if valid else ()
    return SignerResult(
        scheme=draw(st.sampled_from(list(Scheme))),
        crypto_valid=valid,
        reasons=tuple(why),
        verified_addresses=addresses,
    )


from_checks = st.one_of(
    st.builds(FromCheck, st.sampled_from(ADDRESSES)),
    st.just(FromCheck(None, Reason.FROM_AMBIGUOUS)),
    st.just(FromCheck(None)),
)

facts_strategy = st.builds(
    LayerFacts,
    scheme=st.sampled_from([None, *Scheme]),
    lock=st.booleans(),
    integrity_protected=st.booleans(),
    signed_at_root=st.booleans(),
    signers=st.lists(signer_results(), max_size=3).map(tuple),
    coverage=st.sampled_from(list(Coverage)),
    from_check=from_checks,
    reasons=reasons.map(tuple),
)


def _green_by_the_rules(facts: LayerFacts) -> bool:
    everything = [*facts.reasons, *(r for s in facts.signers for r in s.reasons)]
    address = facts.from_check.address
    return (
        facts.signed_at_root
        and bool(facts.signers)
        and all(s.crypto_valid for s in facts.signers)
        and all(r.severity is Severity.INFO for r in everything)
        and facts.from_check.problem is None
        and address is not None
        and any(address_matches(address, s.verified_addresses) for s in facts.signers)
        and facts.coverage >= Coverage.BODY
    )


@settings(max_examples=600, deadline=None)
@given(facts=facts_strategy)
def test_assembler_follows_the_rules(facts: LayerFacts) -> None:
    v = assemble_verdict(facts, policy=DEFAULT_POLICY, evaluated_at=datetime(2026, 6, 1, tzinfo=UTC))
    signed = facts.signed_at_root and bool(facts.signers)
    assert (v.banner is Banner.GREEN) == _green_by_the_rules(facts)
    assert (v.banner is Banner.NONE) == (not signed)
    everything = [*facts.reasons, *(r for s in facts.signers for r in s.reasons)]
    if signed:
        # RED exactly when something is cryptographically broken or revoked.
        broken = any(r.severity is Severity.INVALID for r in everything)
        assert (v.banner is Banner.RED) == broken
    # Fields that are facts pass through; derived ones agree with the banner.
    assert v.lock is facts.lock and v.integrity_protected is facts.integrity_protected
    assert v.signers == facts.signers and v.policy == DEFAULT_POLICY.name
    assert v.coverage is (facts.coverage if signed else Coverage.NONE)
    status_of_banner = {
        Banner.NONE: SignatureStatus.UNSIGNED,
        Banner.GREEN: SignatureStatus.VALID,
        Banner.YELLOW: SignatureStatus.INDETERMINATE,
        Banner.RED: SignatureStatus.INVALID,
    }
    assert v.signature is status_of_banner[v.banner]
    # Every reason of the facts is reported, once.
    assert len(set(v.reasons)) == len(v.reasons)
    assert set(everything) <= set(v.reasons)
    if facts.signed_at_root and not facts.signers:
        assert Reason.MALFORMED_SIGNATURE in v.reasons
