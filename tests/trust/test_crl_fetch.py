"""CRLs fetched from the certificates' distribution points, served over
HTTP on loopback (pinned validation time; the checker's and the cache's
clocks are pinned to it too)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from revocation_peers import LOOPBACK, StaticHTTPServer, dead_port
from trust_pki import AT, CertSpec, Hierarchy, Issued, ec_key, issue, make_crl, name

from secmail.context import TrustContext
from secmail.policy import DEFAULT_POLICY, RevocationMode
from secmail.trust.cache import MemoryCache
from secmail.trust.fetch import HTTPFetcher
from secmail.trust.path import PathResult, validate_email_signer
from secmail.trust.revocation import FetchedCRLChecker, RevocationChecker, RevocationStatus, crl_urls
from secmail.verdict import Reason

HARD = RevocationMode.HARD_FAIL
SOFT = RevocationMode.SOFT_FAIL


class Clock:
    def __init__(self) -> None:
        self.now = AT

    def __call__(self) -> datetime:
        return self.now


def distribution_points(
    *urls: str, reasons: frozenset[x509.ReasonFlags] | None = None
) -> x509.CRLDistributionPoints:
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(u) for u in urls],
        relative_name=None,
        reasons=reasons,
        crl_issuer=None,
    )
    return x509.CRLDistributionPoints([point])


@dataclass
class Site:
    """root → intermediate (CDP /root.crl) → ee (CDP /ca.crl), with the
    HTTP server that serves the CRLs."""

    server: StaticHTTPServer
    pki: Hierarchy
    clock: Clock
    cache: MemoryCache
    fetcher: HTTPFetcher

    def checker(self, *, offline: bool = False) -> FetchedCRLChecker:
        return FetchedCRLChecker(None if offline else self.fetcher, self.cache, clock=self.clock)

    def ee(self, *urls: str, reasons: frozenset[x509.ReasonFlags] | None = None) -> x509.Certificate:
        spec = CertSpec(
            name("Alice"),
            emails=("alice@ac-besancon.fr",),
            extra=((distribution_points(*urls, reasons=reasons), False),),
        )
        return issue(spec, ec_key(), self.pki.intermediate).cert

    def serve(self, path: str, crl: x509.CertificateRevocationList, *, pem: bool = False) -> None:
        self.server.routes[path] = crl.public_bytes(Encoding.PEM if pem else Encoding.DER)

    def validate(
        self,
        checkers: Sequence[RevocationChecker],
        *,
        ee: x509.Certificate | None = None,
        revocation: RevocationMode = SOFT,
        crls: Sequence[x509.CertificateRevocationList] = (),
        at: datetime | None = None,
    ) -> PathResult:
        trust = TrustContext(
            anchors=(self.pki.root.cert,),
            crls=tuple(crls),
            revocation=revocation,
            checkers=tuple(checkers),
        )
        return validate_email_signer(
            ee or self.pki.ee.cert,
            [self.pki.intermediate.cert],
            trust,
            at=at or self.clock.now,
            policy=DEFAULT_POLICY,
        )


@pytest.fixture
def site() -> Iterator[Site]:
    with StaticHTTPServer() as server, HTTPFetcher(timeout=2) as fetcher:
        root = issue(CertSpec(name("Test Root CA"), ca=True), ec_key(), None)
        intermediate_spec = CertSpec(
            name("Test Issuing CA"),
            ca=True,
            extra=((distribution_points(server.url("/root.crl")), False),),
        )
        intermediate = issue(intermediate_spec, ec_key(), root)
        ee_spec = CertSpec(
            name("Alice"),
            emails=("alice@ac-besancon.fr",),
            extra=((distribution_points(server.url("/ca.crl")), False),),
        )
        ee = issue(ee_spec, ec_key(), intermediate)
        clock = Clock()
        server.routes["/root.crl"] = make_crl(root, []).public_bytes(Encoding.DER)
        yield Site(server, Hierarchy(root, intermediate, ee), clock, MemoryCache(clock=clock), fetcher)


def fresh_crl(issuer: Issued, revoked: Sequence[x509.Certificate] = ()) -> x509.CertificateRevocationList:
    return make_crl(issuer, revoked, this_update=AT - timedelta(hours=1), next_update=AT + timedelta(days=1))


def test_revoked_signer_via_fetched_crl(site: Site) -> None:
    site.serve("/ca.crl", fresh_crl(site.pki.intermediate, [site.pki.ee.cert]))
    result = site.validate((site.checker(),))
    assert result.reasons == (Reason.CERT_REVOKED,)
    assert result.chain[0] == site.pki.ee.cert
    assert site.server.hits["/ca.crl"] == 1


def test_good_signer_under_hard_fail_and_the_cache(site: Site) -> None:
    site.serve("/ca.crl", fresh_crl(site.pki.intermediate))
    checker = site.checker()
    assert site.validate((checker,), revocation=HARD).reasons == ()
    assert site.server.hits["/ca.crl"] == 1 and site.server.hits["/root.crl"] == 1

    # Cached until nextUpdate: a second validation fetches nothing, even
    # though the server now has a newer CRL.
    site.serve("/ca.crl", fresh_crl(site.pki.intermediate, [site.pki.ee.cert]))
    assert site.validate((checker,), revocation=HARD).reasons == ()
    assert site.server.total_hits == 2

    # After nextUpdate the CRL is fetched again (and now says revoked).
    site.clock.now = AT + timedelta(days=1, minutes=1)
    site.serve(
        "/ca.crl",
        make_crl(site.pki.intermediate, [site.pki.ee.cert], this_update=AT + timedelta(days=1)),
    )
    assert site.validate((checker,)).reasons == (Reason.CERT_REVOKED,)
    assert site.server.hits["/ca.crl"] == 2


def test_without_online_checker_nothing_is_known(site: Site) -> None:
    # The same site without the checker: the CRLs being served proves
    # nothing by itself (the reasons above come from fetching).
    site.serve("/ca.crl", fresh_crl(site.pki.intermediate, [site.pki.ee.cert]))
    assert site.validate((), revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)
    assert site.server.total_hits == 0


def test_stale_crl_is_unknown_and_not_refetched_at_once(site: Site) -> None:
    stale = make_crl(
        site.pki.intermediate,
        [site.pki.ee.cert],
        this_update=AT - timedelta(days=10),
        next_update=AT - timedelta(days=1),
    )
    site.serve("/ca.crl", stale)
    checker = site.checker()
    # §6.3.3 (a)(2): a CRL past its nextUpdate is no information, not even
    # its revocations.
    assert site.validate((checker,), revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)
    assert site.validate((checker,), revocation=SOFT).reasons == ()
    assert site.server.hits["/ca.crl"] == 1
    assert checker.status(site.pki.ee.cert, site.pki.intermediate.cert, at=AT) is RevocationStatus.UNKNOWN


def test_forged_crl_is_neither_believed_nor_cached(site: Site) -> None:
    forged = Issued(site.pki.intermediate.cert, ec_key())
    site.serve("/ca.crl", fresh_crl(forged, [site.pki.ee.cert]))
    checker = site.checker()
    assert site.validate((checker,)).reasons == ()
    assert site.validate((checker,), revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)
    assert site.server.hits["/ca.crl"] == 1  # paused after the failure
    # Once the pause is over the genuine CRL is fetched and believed.
    site.clock.now = AT + timedelta(minutes=3)
    site.serve("/ca.crl", fresh_crl(site.pki.intermediate, [site.pki.ee.cert]))
    assert site.validate((checker,)).reasons == (Reason.CERT_REVOKED,)
    assert site.server.hits["/ca.crl"] == 2


def test_crl_of_another_issuer_says_nothing(site: Site) -> None:
    site.serve("/ca.crl", fresh_crl(site.pki.root, [site.pki.ee.cert]))
    status = site.checker().status(site.pki.ee.cert, site.pki.intermediate.cert, at=AT)
    assert status is RevocationStatus.UNKNOWN


def test_unreachable_crl_server(site: Site) -> None:
    ee = site.ee(f"http://{LOOPBACK}:{dead_port()}/ca.crl")
    checker = site.checker()
    start = time.monotonic()
    assert site.validate((checker,), ee=ee, revocation=SOFT).reasons == ()
    assert site.validate((checker,), ee=ee, revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)
    assert time.monotonic() - start < 1.5


def test_offline_uses_imported_crls_only(site: Site) -> None:
    site.serve("/ca.crl", fresh_crl(site.pki.intermediate))
    offline = site.checker(offline=True)
    imported = (fresh_crl(site.pki.root), fresh_crl(site.pki.intermediate, [site.pki.ee.cert]))
    assert site.validate((offline,), crls=imported).reasons == (Reason.CERT_REVOKED,)
    assert site.validate((offline,), revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)
    assert site.server.total_hits == 0


def test_distribution_point_for_some_reasons_never_clears(site: Site) -> None:
    ee = site.ee(site.server.url("/kc.crl"), reasons=frozenset({x509.ReasonFlags.key_compromise}))
    checker = site.checker()
    site.serve("/kc.crl", fresh_crl(site.pki.intermediate))
    assert checker.status(ee, site.pki.intermediate.cert, at=AT) is RevocationStatus.UNKNOWN
    ee2 = site.ee(site.server.url("/kc2.crl"), reasons=frozenset({x509.ReasonFlags.key_compromise}))
    site.serve("/kc2.crl", fresh_crl(site.pki.intermediate, [ee2]))
    assert checker.status(ee2, site.pki.intermediate.cert, at=AT) is RevocationStatus.REVOKED


def test_ldap_distribution_points_are_ignored(site: Site) -> None:
    ee = site.ee("ldap://ldap.ac-besancon.fr/cn=CA?certificateRevocationList")
    assert crl_urls(ee) == ()
    assert site.checker().status(ee, site.pki.intermediate.cert, at=AT) is RevocationStatus.UNKNOWN
    assert site.server.total_hits == 0


def test_second_url_when_the_first_fails(site: Site) -> None:
    ee = site.ee(site.server.url("/gone.crl"), site.server.url("/ca.crl"))
    site.serve("/ca.crl", fresh_crl(site.pki.intermediate))
    assert site.checker().status(ee, site.pki.intermediate.cert, at=AT) is RevocationStatus.GOOD
    assert site.server.hits["/gone.crl"] == 1


def test_pem_crl_is_accepted(site: Site) -> None:
    site.serve("/ca.crl", fresh_crl(site.pki.intermediate, [site.pki.ee.cert]), pem=True)
    status = site.checker().status(site.pki.ee.cert, site.pki.intermediate.cert, at=AT)
    assert status is RevocationStatus.REVOKED


def test_garbage_is_unknown(site: Site) -> None:
    site.server.routes["/ca.crl"] = b"<html>maintenance</html>"
    status = site.checker().status(site.pki.ee.cert, site.pki.intermediate.cert, at=AT)
    assert status is RevocationStatus.UNKNOWN


def test_known_revocation_spares_the_network(site: Site) -> None:
    # An imported CRL already says revoked: the online checker is not
    # asked (REVOKED wins whatever it would say).
    imported = (fresh_crl(site.pki.intermediate, [site.pki.ee.cert]),)
    assert site.validate((site.checker(),), crls=imported).reasons == (Reason.CERT_REVOKED,)
    assert site.server.hits["/ca.crl"] == 0
