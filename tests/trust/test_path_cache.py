"""The per-process caches of S/MIME path validation give the uncached answers.

``validate_email_signer`` keeps accepted paths (``secmail.trust._pathcache``)
and shares one CRL checker per set of CRL objects; ``secmail.trust.interned``
hands out one object per trust-store DER. Each must give exactly what a
fresh validation gives, be keyed by everything that can change the answer,
and stay bounded.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from trust_pki import AT, NOT_AFTER, NOT_BEFORE, CertSpec, Hierarchy, ec_key, hierarchy, issue, make_crl, name

from secmail._lru import BoundedLRU, CertificateMemo
from secmail.context import TrustContext
from secmail.policy import DEFAULT_POLICY, AlgorithmPolicy, RevocationMode
from secmail.trust import _engine, _pathcache, interned
from secmail.trust import path as trust_path
from secmail.trust.path import PathResult, validate_email_signer
from secmail.trust.revocation import RevocationStatus, shared_crl_checker
from secmail.verdict import Reason

ALICE = CertSpec(name("Alice"), emails=("alice@ac-besancon.fr",))


@pytest.fixture(scope="module")
def pki() -> Hierarchy:
    return hierarchy()


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[datetime]]:
    """The instants at which cryptography's verifier is asked (cache misses)."""
    seen: list[datetime] = []
    real = _engine._attempt

    def counting(request: _engine.Request, store: object, at: datetime, policies: object) -> object:
        seen.append(at)
        return real(request, store, at, policies)  # type: ignore[arg-type]

    monkeypatch.setattr(_engine, "_attempt", counting)
    trust_path.SIGNER_PATHS.clear()
    yield seen
    trust_path.SIGNER_PATHS.clear()


def _uncached(
    leaf: x509.Certificate,
    extra: tuple[x509.Certificate, ...],
    trust: TrustContext,
    at: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> PathResult:
    with monkeypatch.context() as patch:
        patch.setattr(trust_path, "SIGNER_PATHS", None)
        return validate_email_signer(leaf, extra, trust, at=at, policy=DEFAULT_POLICY)


def _validate(
    leaf: x509.Certificate, extra: tuple[x509.Certificate, ...], trust: TrustContext, at: datetime
) -> PathResult:
    return validate_email_signer(leaf, extra, trust, at=at, policy=DEFAULT_POLICY)


def test_a_hit_gives_the_uncached_result_without_asking_the_verifier(
    pki: Hierarchy, attempts: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = TrustContext(anchors=(pki.root.cert,))
    extra = (pki.intermediate.cert,)
    first = _validate(pki.ee.cert, extra, trust, AT)
    assert len(attempts) == 1
    later = AT + timedelta(days=100, microseconds=1234)
    second = _validate(pki.ee.cert, extra, trust, later)
    assert len(attempts) == 1  # served from the cache
    assert first == second == _uncached(pki.ee.cert, extra, trust, later, monkeypatch)
    assert second.reasons == ()
    assert second.chain == (pki.ee.cert, pki.intermediate.cert, pki.root.cert)


def test_a_time_outside_the_window_validates_again_and_finds_the_expiry(
    pki: Hierarchy, attempts: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The intermediate expires before the end entity: the window of the
    # cached path ends with the intermediate, not with the end entity.
    short = issue(
        replace(CertSpec(name("Short CA"), ca=True), not_after=AT + timedelta(days=30)), ec_key(), pki.root
    )
    ee = issue(ALICE, ec_key(), short).cert
    trust = TrustContext(anchors=(pki.root.cert,))
    assert _validate(ee, (short.cert,), trust, AT).reasons == ()
    assert len(attempts) == 1
    assert _validate(ee, (short.cert,), trust, AT + timedelta(days=29)).reasons == ()
    assert len(attempts) == 1
    late = AT + timedelta(days=31)
    expired = _validate(ee, (short.cert,), trust, late)
    assert len(attempts) > 1  # the verifier was asked again
    assert expired.reasons == (Reason.CERT_EXPIRED,)
    assert expired == _uncached(ee, (short.cert,), trust, late, monkeypatch)
    # Before every certificate's validity too.
    early = NOT_BEFORE - timedelta(days=1)
    assert _validate(ee, (short.cert,), trust, early) == _uncached(
        ee, (short.cert,), trust, early, monkeypatch
    )
    assert Reason.CERT_NOT_YET_VALID in _validate(ee, (short.cert,), trust, early).reasons


def test_a_certificate_outside_the_chain_bounds_the_window_too(
    pki: Hierarchy, attempts: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unrelated message certificate that expires: the verifier sees it,
    # so the cached answer is only reused while its status is unchanged.
    stray = issue(replace(CertSpec(name("Stray")), not_after=AT + timedelta(days=5)), ec_key(), pki.root).cert
    trust = TrustContext(anchors=(pki.root.cert,))
    extra = (pki.intermediate.cert, stray)
    _validate(pki.ee.cert, extra, trust, AT)
    _validate(pki.ee.cert, extra, trust, AT + timedelta(days=4))
    assert len(attempts) == 1
    later = AT + timedelta(days=6)
    result = _validate(pki.ee.cert, extra, trust, later)
    assert len(attempts) == 2
    assert result == _uncached(pki.ee.cert, extra, trust, later, monkeypatch)


def test_the_last_second_of_validity_is_not_served_from_the_cache(
    pki: Hierarchy, attempts: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # cryptography's verifier ignores the sub-second part of the time; the
    # cache must never decide differently from it.
    trust = TrustContext(anchors=(pki.root.cert,))
    extra = (pki.intermediate.cert,)
    _validate(pki.ee.cert, extra, trust, AT)
    for at in (NOT_AFTER, NOT_AFTER + timedelta(microseconds=500_000), NOT_AFTER + timedelta(seconds=1)):
        assert _validate(pki.ee.cert, extra, trust, at) == _uncached(
            pki.ee.cert, extra, trust, at, monkeypatch
        )


def test_another_trust_snapshot_validates_again(
    pki: Hierarchy, attempts: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = (pki.intermediate.cert,)
    assert _validate(pki.ee.cert, extra, TrustContext(anchors=(pki.root.cert,)), AT).reasons == ()
    stranger = hierarchy()
    other = TrustContext(anchors=(stranger.root.cert,))
    assert _validate(pki.ee.cert, extra, other, AT) == PathResult((), (Reason.UNTRUSTED_CHAIN,))
    # The same anchor parsed again (a reloaded snapshot) is a new snapshot:
    # validated afresh, with the same answer.
    reparsed = x509.load_der_x509_certificate(pki.root.cert.public_bytes(Encoding.DER))
    count = len(attempts)
    again = _validate(pki.ee.cert, extra, TrustContext(anchors=(reparsed,)), AT)
    assert len(attempts) == count + 1
    assert again.reasons == ()
    # Intermediates of the trust store belong to the key as well (they are
    # candidates for the path, like the message's certificates)...
    count = len(attempts)
    more = TrustContext(anchors=(pki.root.cert,), intermediates=(stranger.intermediate.cert,))
    assert _validate(pki.ee.cert, extra, more, AT).reasons == ()
    assert len(attempts) == count + 1
    # ...and what counts is the candidates the verifier is given: the same
    # intermediate from the trust store instead of the message is a hit.
    _validate(pki.ee.cert, (), TrustContext(anchors=(pki.root.cert,), intermediates=extra), AT)
    assert len(attempts) == count + 1


def test_the_policy_is_part_of_the_key(pki: Hierarchy, attempts: list[datetime]) -> None:
    trust = TrustContext(anchors=(pki.root.cert,))
    extra = (pki.intermediate.cert,)
    assert _validate(pki.ee.cert, extra, trust, AT).reasons == ()
    strict = replace(DEFAULT_POLICY, algorithms=AlgorithmPolicy(signature_digests=frozenset({"sha512"})))
    result = validate_email_signer(pki.ee.cert, extra, trust, at=AT, policy=strict)
    assert result.reasons == (Reason.WEAK_ALGORITHM,)


def test_failures_are_not_cached(pki: Hierarchy, attempts: list[datetime]) -> None:
    trust = TrustContext(anchors=(pki.root.cert,))
    for _ in range(2):
        assert _validate(pki.ee.cert, (), trust, AT).reasons == (Reason.UNTRUSTED_CHAIN,)
    assert len(trust_path.SIGNER_PATHS) == 0
    wrong_usage = issue(replace(ALICE, ekus=(ExtendedKeyUsageOID.SERVER_AUTH,)), ec_key(), pki.intermediate)
    for _ in range(2):
        result = _validate(wrong_usage.cert, (pki.intermediate.cert,), trust, AT)
        assert result.reasons == (Reason.KEY_USAGE,)
    assert len(trust_path.SIGNER_PATHS) == 0


def test_revocation_is_judged_at_each_request_time(pki: Hierarchy, attempts: list[datetime]) -> None:
    # The CRL listing the end entity is current from AT + 10 days only.
    crl = make_crl(pki.intermediate, [pki.ee.cert], this_update=AT + timedelta(days=10))
    trust = TrustContext(anchors=(pki.root.cert,), crls=(crl,))
    extra = (pki.intermediate.cert,)
    assert _validate(pki.ee.cert, extra, trust, AT).reasons == ()
    revoked = _validate(pki.ee.cert, extra, trust, AT + timedelta(days=11))
    assert len(attempts) == 1  # the path came from the cache, its revocation did not
    assert revoked.reasons == (Reason.CERT_REVOKED,)
    hard = TrustContext(anchors=(pki.root.cert,), revocation=RevocationMode.HARD_FAIL)
    assert _validate(pki.ee.cert, extra, hard, AT).reasons == (Reason.REVOCATION_UNKNOWN,)


def test_checkers_are_asked_on_every_hit(pki: Hierarchy, attempts: list[datetime]) -> None:
    asked: list[datetime] = []

    class Recording:
        def status(
            self, cert: x509.Certificate, issuer: x509.Certificate, *, at: datetime
        ) -> RevocationStatus:
            asked.append(at)
            return RevocationStatus.GOOD

    trust = TrustContext(anchors=(pki.root.cert,), checkers=(Recording(),))
    for day in range(3):
        _validate(pki.ee.cert, (pki.intermediate.cert,), trust, AT + timedelta(days=day))
    assert len(attempts) == 1
    assert asked == [AT + timedelta(days=day) for day in range(3) for _ in range(2)]


def test_the_cache_is_bounded(pki: Hierarchy) -> None:
    cache = _pathcache.PathCache(maxsize=2)
    chain = (pki.ee.cert, pki.intermediate.cert, pki.root.cert)
    for key in ("a", "b", "c"):
        cache.put(key, chain, chain, AT, pins=())
    assert len(cache) == 2
    assert cache.get("a", AT) is None
    assert cache.get("b", AT) == chain
    assert cache.get("c", AT) == chain
    assert cache.get("c", NOT_AFTER + timedelta(seconds=1)) is None


def test_status_window_matches_each_certificate_status(pki: Hierarchy) -> None:
    soon = issue(replace(CertSpec(name("Soon")), not_before=AT + timedelta(days=3)), ec_key(), pki.root).cert
    gone = issue(replace(CertSpec(name("Gone")), not_after=AT - timedelta(days=3)), ec_key(), pki.root).cert
    certs = (pki.ee.cert, soon, gone)
    low, high = _pathcache.status_window(certs, AT)
    assert low == gone.not_valid_after_utc + timedelta(microseconds=1)
    assert high == soon.not_valid_before_utc

    def statuses(at: datetime) -> tuple[bool, ...]:
        return tuple(c.not_valid_before_utc <= at <= c.not_valid_after_utc for c in certs)

    rng = random.Random(5)
    for _ in range(200):
        at = AT + timedelta(seconds=rng.uniform(-10, 10) * 86400)
        inside = (low is None or low <= at) and (high is None or at < high)
        assert inside == (statuses(at) == statuses(AT))


def test_shared_crl_checker_is_one_per_crl_objects(pki: Hierarchy) -> None:
    crl = make_crl(pki.intermediate)
    same = shared_crl_checker((crl,))
    assert shared_crl_checker((crl,)) is same
    assert shared_crl_checker([crl]) is same
    assert shared_crl_checker(()) is not same
    copy = x509.load_der_x509_crl(crl.public_bytes(Encoding.DER))
    assert shared_crl_checker((copy,)) is not same
    # Bounded: enough other sets push it out.
    for _ in range(20):
        shared_crl_checker((make_crl(pki.intermediate),))
    assert shared_crl_checker((crl,)) is not same


def _distinct_objects(cert: x509.Certificate) -> x509.Certificate:
    return x509.load_der_x509_certificate(cert.public_bytes(Encoding.DER))


def test_signer_pool_is_the_plain_pool(pki: Hierarchy) -> None:
    other = hierarchy()
    base = [pki.ee.cert, pki.intermediate.cert, pki.root.cert, other.intermediate.cert, other.ee.cert]
    # Equal certificates as distinct objects, repeats, the leaf among them.
    pool = base + [_distinct_objects(c) for c in base]
    rng = random.Random(7)
    for _ in range(300):
        message = tuple(rng.choice(pool) for _ in range(rng.randrange(4)))
        trusted = tuple(rng.choice(pool) for _ in range(rng.randrange(5)))
        leaf = rng.choice(pool)
        expected = trust_path._pool(leaf, (*message, *trusted))
        got = trust_path._signer_pool(leaf, message, trusted)
        assert got == expected
        # The same objects, not only equal ones: path results show them.
        assert all(a is b for a, b in zip(got, expected, strict=True))
        anchors = trust_path._distinct(trusted).certs
        assert list(anchors) == list(dict.fromkeys(trusted))
        assert all(a is b for a, b in zip(anchors, dict.fromkeys(trusted), strict=True))


def test_interned_objects_are_one_per_der(pki: Hierarchy) -> None:
    der = pki.ee.cert.public_bytes(Encoding.DER)
    assert interned.certificate(der) is interned.certificate(bytearray(der))
    assert interned.certificate(der) == pki.ee.cert
    crl_der = make_crl(pki.intermediate).public_bytes(Encoding.DER)
    assert interned.crl(crl_der) is interned.crl(crl_der)
    with pytest.raises(ValueError):
        interned.certificate(b"\x30\x00")


def test_interned_is_bounded(monkeypatch: pytest.MonkeyPatch, pki: Hierarchy) -> None:
    monkeypatch.setattr(interned, "_certificates", BoundedLRU(2, 1 << 20))
    ders = [c.public_bytes(Encoding.DER) for c in (pki.ee.cert, pki.intermediate.cert, pki.root.cert)]
    first = interned.certificate(ders[0])
    for der in itertools.islice(itertools.cycle(ders[1:]), 4):
        interned.certificate(der)
    assert len(interned._certificates) == 2
    assert interned.certificate(ders[0]) is not first  # parsed again after eviction
    assert interned.certificate(ders[0]) == first


def test_bounded_lru_bounds_entries_and_weight() -> None:
    lru: BoundedLRU[int] = BoundedLRU(3, 100, max_entry_weight=60)
    for key in range(5):
        lru.put(key, key, 10)
    assert len(lru) == 3 and lru.weight == 30
    assert lru.get(0) is None and lru.get(4) == 4
    lru.put("heavy", 1, 61)  # heavier than one entry may be: not kept
    assert lru.get("heavy") is None
    lru.put("a", 1, 50)
    lru.put("b", 2, 50)  # the total would exceed 100: the oldest go
    assert lru.weight <= 100 and lru.get("b") == 2
    assert lru.put("b", 3, 1) == 2  # the first stored wins...
    assert lru.put("b", 3, 1, replace=True) == 3  # ...unless replaced
    assert lru.get("b") == 3


def test_certificate_memo_reads_each_certificate_object_once(pki: Hierarchy) -> None:
    memo: CertificateMemo[str] = CertificateMemo(2, 1 << 20)
    calls: list[x509.Certificate] = []

    def subject(cert: x509.Certificate) -> str:
        calls.append(cert)
        return cert.subject.rfc4514_string()

    ee = pki.ee.cert
    assert memo.read(ee, subject) == memo.read(ee, subject) == ee.subject.rfc4514_string()
    assert calls == [ee]
    # An equal certificate that is another object is read again (keyed by
    # object: the entry pins the object its id belongs to).
    twin = x509.load_der_x509_certificate(ee.public_bytes(Encoding.DER))
    assert memo.read(twin, subject) == ee.subject.rfc4514_string()
    assert len(calls) == 2
    memo.read(pki.root.cert, subject)  # bounded: the oldest entry goes
    assert len(memo) == 2
    memo.read(ee, subject)
    assert len(calls) == 4
