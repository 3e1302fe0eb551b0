"""OCSP (RFC 6960): response authentication, caching, and interop with a
real ``openssl ocsp`` responder on loopback.

The first part feeds responses made with cryptography's builder (pinned
validation time) through a fetcher that answers from a dict, to reach
every acceptance rule; the second part (``interop``) runs openssl's
responder and the real HTTP fetcher, at the real current time (openssl
stamps its responses with the system clock).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from revocation_peers import (
    LOOPBACK,
    IndexEntry,
    OpenSSLResponder,
    StaticHTTPServer,
    dead_port,
    free_port,
    responders,
)
from trust_pki import AT, CertSpec, Hierarchy, Issued, PrivateKey, ec_key, hierarchy, issue, make_crl, name

from secmail.context import TrustContext
from secmail.policy import DEFAULT_POLICY, RevocationMode
from secmail.trust.cache import MemoryCache
from secmail.trust.fetch import Fetcher, FetchError, HTTPFetcher
from secmail.trust.ocsp import OCSPChecker, check_ocsp_response, ocsp_urls
from secmail.trust.path import PathResult, validate_email_signer
from secmail.trust.revocation import FetchedCRLChecker, RevocationChecker, RevocationStatus
from secmail.verdict import Reason

HARD = RevocationMode.HARD_FAIL
SOFT = RevocationMode.SOFT_FAIL
GOOD = RevocationStatus.GOOD
REVOKED = RevocationStatus.REVOKED
UNKNOWN = RevocationStatus.UNKNOWN

RESPONDER = "http://ocsp.ac-test.invalid/"
OCSP_SIGNING = (ExtendedKeyUsageOID.OCSP_SIGNING,)


def aia(*urls: str) -> x509.AuthorityInformationAccess:
    return x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u))
            for u in urls
        ]
    )


def validate(
    pki: Hierarchy,
    checkers: Sequence[RevocationChecker],
    *,
    ee: x509.Certificate | None = None,
    at: datetime = AT,
    revocation: RevocationMode = SOFT,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> PathResult:
    trust = TrustContext(
        anchors=(pki.root.cert,),
        crls=tuple(crls),
        revocation=revocation,
        checkers=tuple(checkers),
    )
    return validate_email_signer(
        ee or pki.ee.cert, [pki.intermediate.cert], trust, at=at, policy=DEFAULT_POLICY
    )


# --- crafted responses ---------------------------------------------------------


class DictFetcher:
    """A Fetcher answering POSTs from ``answers`` and recording requests."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, bytes]] = []

    def get(self, url: str, *, accept: str) -> bytes:
        raise FetchError(url, "GET not expected", unreachable=False)

    def post(self, url: str, body: bytes, *, content_type: str, accept: str) -> bytes:
        self.requests.append((url, content_type, body))
        answer = self.answers.get(url)
        if answer is None:
            raise FetchError(url, "connection refused", unreachable=True)
        return answer


class Clock:
    def __init__(self, now: datetime = AT) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Lab:
    pki: Hierarchy
    fetcher: DictFetcher = field(default_factory=DictFetcher)
    clock: Clock = field(default_factory=Clock)
    cache: MemoryCache = field(init=False)

    def __post_init__(self) -> None:
        self.cache = MemoryCache(clock=self.clock)

    def checker(self, **kwargs: object) -> OCSPChecker:
        return OCSPChecker(self.fetcher, self.cache, clock=self.clock, **kwargs)

    def status(self, checker: OCSPChecker | None = None, *, at: datetime = AT) -> RevocationStatus:
        return (checker or self.checker()).status(self.pki.ee.cert, self.pki.intermediate.cert, at=at)


_DEFAULT_NEXT = object()


def respond(
    pki: Hierarchy,
    *,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    signer: Issued | None = None,
    certs: Sequence[x509.Certificate] = (),
    cert: x509.Certificate | None = None,
    issuer: x509.Certificate | None = None,
    this_update: datetime = AT - timedelta(hours=1),
    next_update: datetime | object | None = _DEFAULT_NEXT,
    cert_id_hash: hashes.HashAlgorithm | None = None,
    encoding: ocsp.OCSPResponderEncoding = ocsp.OCSPResponderEncoding.NAME,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> bytes:
    """A signed response about ``cert`` (default: the EE) from ``signer``
    (default: the issuing CA itself)."""
    signer = signer or pki.intermediate
    nxt = AT + timedelta(days=1) if next_update is _DEFAULT_NEXT else next_update
    assert nxt is None or isinstance(nxt, datetime)
    revoked = status is ocsp.OCSPCertStatus.REVOKED
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert or pki.ee.cert,
            issuer or pki.intermediate.cert,
            cert_id_hash or hashes.SHA1(),
            status,
            this_update,
            nxt,
            this_update if revoked else None,
            x509.ReasonFlags.key_compromise if revoked else None,
        )
        .responder_id(encoding, signer.cert)
    )
    if certs:
        builder = builder.certificates(list(certs))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    return builder.sign(signer.key, hashes.SHA256()).public_bytes(Encoding.DER)


def resign(der: bytes, key: PrivateKey, *, critical_single_extension: bool = False) -> bytes:
    """Re-sign a response with ``key`` (which cryptography's builder will not
    do for a key that is not the responder's), optionally adding a critical
    extension to its SingleResponse."""
    parsed = asn1_ocsp.OCSPResponse.load(der)
    basic = parsed["response_bytes"]["response"].parsed
    tbs = basic["tbs_response_data"]
    if critical_single_extension:
        single = tbs["responses"][0]
        single["single_extensions"] = [
            {"extn_id": "1.2.3.4.5", "critical": True, "extn_value": b"\x05\x00"},
        ]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    basic["signature"] = key.sign(tbs.dump(force=True), ec.ECDSA(hashes.SHA256()))
    parsed["response_bytes"]["response"] = basic
    return bytes(parsed.dump(force=True))


@pytest.fixture(scope="module")
def pki() -> Hierarchy:
    return hierarchy(
        ee_spec=CertSpec(name("Alice"), emails=("alice@ac-besancon.fr",), extra=((aia(RESPONDER), False),))
    )


@pytest.fixture(scope="module")
def delegate(pki: Hierarchy) -> Issued:
    spec = CertSpec(name("Académie OCSP"), ekus=OCSP_SIGNING, extra=((x509.OCSPNoCheck(), False),))
    return issue(spec, ec_key(), pki.intermediate)


@pytest.fixture
def lab(pki: Hierarchy) -> Lab:
    return Lab(pki)


def test_issuer_signed_good(lab: Lab) -> None:
    lab.fetcher.answers[RESPONDER] = respond(lab.pki)
    assert lab.status() is GOOD


def test_delegated_responder_good_and_revoked(lab: Lab, delegate: Issued) -> None:
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, signer=delegate, certs=[delegate.cert])
    assert lab.status() is GOOD
    revoked = respond(lab.pki, signer=delegate, certs=[delegate.cert], status=ocsp.OCSPCertStatus.REVOKED)
    assert check_ocsp_response(revoked, lab.pki.ee.cert, lab.pki.intermediate.cert, at=AT) is REVOKED


def test_revoked_makes_the_chain_revoked(lab: Lab) -> None:
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, status=ocsp.OCSPCertStatus.REVOKED)
    assert validate(lab.pki, (lab.checker(),)).reasons == (Reason.CERT_REVOKED,)


def test_status_unknown_is_unknown(lab: Lab) -> None:
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, status=ocsp.OCSPCertStatus.UNKNOWN)
    assert lab.status() is UNKNOWN


def _unauthorised(pki: Hierarchy, kind: str) -> Issued:
    if kind == "no-ocsp-signing-eku":
        return issue(CertSpec(name("Not a responder")), ec_key(), pki.intermediate)
    if kind == "any-eku-only":
        any_eku = (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)
        return issue(CertSpec(name("Any EKU"), ekus=any_eku), ec_key(), pki.intermediate)
    if kind == "designated-by-the-root":
        # Issued by the CA above: not "directly by the CA that issued the
        # certificate in question" (§4.2.2.2).
        return issue(CertSpec(name("Root OCSP"), ekus=OCSP_SIGNING), ec_key(), pki.root)
    if kind == "designated-by-a-namesake-ca":
        twin = Issued(pki.intermediate.cert, ec_key())
        return issue(CertSpec(name("Twin OCSP"), ekus=OCSP_SIGNING), ec_key(), twin)
    if kind == "expired-designation":
        spec = CertSpec(name("Old OCSP"), ekus=OCSP_SIGNING, not_after=AT - timedelta(days=1))
        return issue(spec, ec_key(), pki.intermediate)
    raise AssertionError(kind)


UNAUTHORISED = [
    "no-ocsp-signing-eku",
    "any-eku-only",
    "designated-by-the-root",
    "designated-by-a-namesake-ca",
    "expired-designation",
]


@pytest.mark.parametrize("kind", UNAUTHORISED)
@pytest.mark.parametrize("status", [ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.REVOKED])
def test_unauthorised_responder_is_not_believed(lab: Lab, kind: str, status: ocsp.OCSPCertStatus) -> None:
    signer = _unauthorised(lab.pki, kind)
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, signer=signer, certs=[signer.cert], status=status)
    assert lab.status() is UNKNOWN
    root_crl = make_crl(lab.pki.root, [])
    hard = validate(lab.pki, (lab.checker(),), revocation=HARD, crls=(root_crl,))
    assert hard.reasons == (Reason.REVOCATION_UNKNOWN,)


def test_delegated_responder_must_be_in_the_response(lab: Lab, delegate: Issued) -> None:
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, signer=delegate, certs=())
    assert lab.status() is UNKNOWN


def test_forged_signature_is_not_believed(lab: Lab) -> None:
    # Names the issuer as responder, signed by someone else.
    lab.fetcher.answers[RESPONDER] = resign(respond(lab.pki), ec_key())
    assert lab.status() is UNKNOWN
    # The same re-signing with the right key is accepted: resign() works.
    genuine = resign(respond(lab.pki), lab.pki.intermediate.key)
    assert check_ocsp_response(genuine, lab.pki.ee.cert, lab.pki.intermediate.cert, at=AT) is GOOD


def test_responder_named_by_key_hash(lab: Lab, delegate: Issued) -> None:
    lab.fetcher.answers[RESPONDER] = respond(
        lab.pki, signer=delegate, certs=[delegate.cert], encoding=ocsp.OCSPResponderEncoding.HASH
    )
    assert lab.status() is GOOD


def test_responder_id_must_match_the_signer(lab: Lab, delegate: Issued) -> None:
    # Signed by the delegate, but claiming to be the issuer.
    mislabelled = resign(respond(lab.pki), delegate.key)
    assert check_ocsp_response(mislabelled, lab.pki.ee.cert, lab.pki.intermediate.cert, at=AT) is UNKNOWN
    # Signed by the issuer, but claiming to be the delegate (§3.2 (3)).
    claimed = respond(lab.pki, signer=delegate, certs=[delegate.cert])
    misnamed = resign(claimed, lab.pki.intermediate.key)
    assert check_ocsp_response(misnamed, lab.pki.ee.cert, lab.pki.intermediate.cert, at=AT) is UNKNOWN


def test_answer_about_another_certificate(lab: Lab) -> None:
    other = issue(CertSpec(name("Bob")), ec_key(), lab.pki.intermediate)
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, cert=other.cert)
    assert lab.status() is UNKNOWN


def test_cert_id_of_another_issuer(lab: Lab) -> None:
    # Same serial, issuer hashes of another CA: not our certificate.
    stranger = hierarchy().intermediate
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, issuer=stranger.cert)
    assert lab.status() is UNKNOWN


def test_sha256_cert_id_in_the_response_matches(lab: Lab) -> None:
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, cert_id_hash=hashes.SHA256())
    assert lab.status() is GOOD


@pytest.mark.parametrize(
    ("this_update", "next_update", "expected"),
    [
        (AT + timedelta(minutes=1), AT + timedelta(days=1), GOOD),  # within the clock skew
        (AT + timedelta(minutes=10), AT + timedelta(days=1), UNKNOWN),  # made after the validation time
        (AT - timedelta(days=2), AT - timedelta(seconds=1), UNKNOWN),  # expired
        (AT - timedelta(minutes=10), None, GOOD),  # no nextUpdate, recent
        (AT - timedelta(hours=2), None, UNKNOWN),  # no nextUpdate, too old
    ],
    ids=["skew", "future", "expired", "no-next-update-recent", "no-next-update-old"],
)
def test_time_window(lab: Lab, this_update: datetime, next_update: datetime | None, expected: object) -> None:
    der = respond(lab.pki, this_update=this_update, next_update=next_update)
    assert check_ocsp_response(der, lab.pki.ee.cert, lab.pki.intermediate.cert, at=AT) is expected


def test_critical_response_extension_makes_it_unusable(lab: Lab) -> None:
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00")
    critical = respond(lab.pki, extensions=[(unknown, True)])
    assert check_ocsp_response(critical, lab.pki.ee.cert, lab.pki.intermediate.cert, at=AT) is UNKNOWN
    nonce = respond(lab.pki, extensions=[(x509.OCSPNonce(b"0123456789abcdef"), False)])
    assert check_ocsp_response(nonce, lab.pki.ee.cert, lab.pki.intermediate.cert, at=AT) is GOOD


def test_critical_single_extension_makes_it_unusable(lab: Lab) -> None:
    der = resign(respond(lab.pki), lab.pki.intermediate.key, critical_single_extension=True)
    assert check_ocsp_response(der, lab.pki.ee.cert, lab.pki.intermediate.cert, at=AT) is UNKNOWN


@pytest.mark.parametrize(
    "der",
    [
        ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(
            Encoding.DER
        ),
        ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(
            Encoding.DER
        ),
        b"",
        b"<html>503</html>",
        b"\x30\x80",
    ],
    ids=["try-later", "unauthorized", "empty", "html", "truncated"],
)
def test_unusable_answers(lab: Lab, der: bytes) -> None:
    lab.fetcher.answers[RESPONDER] = der
    assert lab.status() is UNKNOWN


# --- requests, cache, offline ------------------------------------------------


def test_request_is_a_sha1_cert_id_post_by_default(lab: Lab) -> None:
    lab.fetcher.answers[RESPONDER] = respond(lab.pki)
    lab.status()
    ((url, content_type, body),) = lab.fetcher.requests
    assert (url, content_type) == (RESPONDER, "application/ocsp-request")
    request = ocsp.load_der_ocsp_request(body)
    expected = ocsp.OCSPRequestBuilder().add_certificate(
        lab.pki.ee.cert, lab.pki.intermediate.cert, hashes.SHA1()
    )
    assert request.serial_number == lab.pki.ee.cert.serial_number
    assert isinstance(request.hash_algorithm, hashes.SHA1)
    assert request.issuer_key_hash == expected.build().issuer_key_hash


def test_request_with_sha256_cert_id(lab: Lab) -> None:
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, cert_id_hash=hashes.SHA256())
    assert lab.status(lab.checker(cert_id_hash=hashes.SHA256())) is GOOD
    request = ocsp.load_der_ocsp_request(lab.fetcher.requests[0][2])
    assert isinstance(request.hash_algorithm, hashes.SHA256)


def test_response_is_cached_until_next_update(lab: Lab) -> None:
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, next_update=AT + timedelta(hours=2))
    checker = lab.checker()
    assert lab.status(checker) is GOOD
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, status=ocsp.OCSPCertStatus.REVOKED)
    assert lab.status(checker) is GOOD
    assert len(lab.fetcher.requests) == 1
    # Another checker sharing the cache (another worker) uses it too.
    assert lab.status() is GOOD and len(lab.fetcher.requests) == 1
    lab.clock.now = AT + timedelta(hours=2)
    assert lab.status(checker, at=lab.clock.now) is REVOKED
    assert len(lab.fetcher.requests) == 2


def test_response_without_next_update_is_not_cached(lab: Lab) -> None:
    lab.fetcher.answers[RESPONDER] = respond(lab.pki, next_update=None)
    checker = lab.checker()
    assert lab.status(checker) is GOOD
    assert lab.status(checker) is GOOD
    assert len(lab.fetcher.requests) == 2


def test_failures_pause_the_responder(lab: Lab) -> None:
    checker = lab.checker(retry_after=timedelta(minutes=2))
    assert lab.status(checker) is UNKNOWN  # nothing answers
    assert lab.status(checker) is UNKNOWN
    assert len(lab.fetcher.requests) == 1
    lab.fetcher.answers[RESPONDER] = b"garbage"
    lab.clock.now = AT + timedelta(minutes=3)
    assert lab.status(checker) is UNKNOWN
    assert lab.status(checker) is UNKNOWN
    assert len(lab.fetcher.requests) == 2  # garbage is not cached either
    lab.fetcher.answers[RESPONDER] = respond(lab.pki)
    lab.clock.now = AT + timedelta(minutes=6)
    assert lab.status(checker) is GOOD
    assert len(lab.fetcher.requests) == 3


def test_offline_fetches_nothing_but_uses_the_cache(lab: Lab) -> None:
    offline = OCSPChecker(None, lab.cache, clock=lab.clock)
    lab.fetcher.answers[RESPONDER] = respond(lab.pki)
    assert lab.status(offline) is UNKNOWN
    assert lab.fetcher.requests == []
    assert lab.status() is GOOD  # an online checker fills the shared cache
    assert lab.status(offline) is GOOD
    assert len(lab.fetcher.requests) == 1


class HostileCache:
    """A cache that answers every OCSP key with the same bytes."""

    def __init__(self, value: bytes) -> None:
        self.value = value

    def get(self, key: str) -> bytes | None:
        return self.value if key.startswith("ocsp ") else None

    def put(self, key: str, value: bytes, *, expires: datetime) -> None:
        pass


def test_cache_content_is_authenticated_again(lab: Lab) -> None:
    stranger = hierarchy()
    forged = respond(stranger)  # a fine response, about someone else
    for value in (forged, resign(respond(lab.pki), ec_key()), b"junk"):
        checker = OCSPChecker(lab.fetcher, HostileCache(value), clock=lab.clock)
        assert lab.status(checker) is UNKNOWN
    assert lab.fetcher.requests == []


def test_urls_from_aia(pki: Hierarchy) -> None:
    ca_issuers = x509.AccessDescription(
        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier("http://ca/ca.crt")
    )
    mixed = x509.AuthorityInformationAccess(
        [
            ca_issuers,
            *aia("ldap://ocsp/", "http://a/", "HTTP://B/", "http://a/"),
        ]
    )
    cert = issue(CertSpec(name("Mixed"), extra=((mixed, False),)), ec_key(), pki.intermediate).cert
    assert ocsp_urls(cert) == ("http://a/", "HTTP://B/")
    assert ocsp_urls(pki.intermediate.cert) == ()


def test_no_responder_no_request(lab: Lab) -> None:
    checker = lab.checker()
    assert checker.status(lab.pki.intermediate.cert, lab.pki.root.cert, at=AT) is UNKNOWN
    assert lab.fetcher.requests == []


def test_second_responder_when_the_first_fails(pki: Hierarchy) -> None:
    spec = CertSpec(name("Two"), extra=((aia("http://down/", RESPONDER), False),))
    ee = issue(spec, ec_key(), pki.intermediate)
    lab = Lab(Hierarchy(pki.root, pki.intermediate, ee))
    lab.fetcher.answers[RESPONDER] = respond(lab.pki)
    assert lab.status() is GOOD
    assert [url for url, _, _ in lab.fetcher.requests] == ["http://down/", RESPONDER]


def test_unreachable_soft_and_hard(lab: Lab) -> None:
    root_crl = make_crl(lab.pki.root, [])
    checker = lab.checker()
    assert validate(lab.pki, (checker,), crls=(root_crl,)).reasons == ()
    assert validate(lab.pki, (checker,), crls=(root_crl,), revocation=HARD).reasons == (
        Reason.REVOCATION_UNKNOWN,
    )
    # With an answer, hard-fail is satisfied: the reason above was OCSP's.
    answering = Lab(lab.pki)
    answering.fetcher.answers[RESPONDER] = respond(lab.pki)
    assert validate(lab.pki, (answering.checker(),), crls=(root_crl,), revocation=HARD).reasons == ()


def test_checker_never_raises_on_odd_certificates(lab: Lab) -> None:
    lab.fetcher.answers[RESPONDER] = respond(lab.pki)
    # Wrong issuer handed in: the CertID cannot match.
    assert lab.checker().status(lab.pki.ee.cert, lab.pki.root.cert, at=AT) is UNKNOWN


# --- interop: openssl ocsp on loopback ---------------------------------------------


@dataclass
class Interop:
    now: datetime
    root: Issued
    intermediate: Issued
    #: End entities by name; each points at the responder of that name.
    ee: dict[str, Issued]
    responders: dict[str, OpenSSLResponder]
    server: StaticHTTPServer

    def chain(self, ee: str) -> Hierarchy:
        return Hierarchy(self.root, self.intermediate, self.ee[ee])


class CountingFetcher:
    """Wraps a real fetcher and counts what goes through it."""

    def __init__(self, inner: Fetcher) -> None:
        self.inner = inner
        self.posts = 0
        self.gets = 0

    def get(self, url: str, *, accept: str) -> bytes:
        self.gets += 1
        return self.inner.get(url, accept=accept)

    def post(self, url: str, body: bytes, *, content_type: str, accept: str) -> bytes:
        self.posts += 1
        return self.inner.post(url, body, content_type=content_type, accept=accept)


#: One openssl responder each: a delegated responder, the CA itself, and
#: four that must not be believed.
_RESPONDERS = ["delegated", "issuer", "no-eku", "root-delegated", "badsig", "sha1"]


def _cdp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)]
    )


@pytest.fixture(scope="module")
def interop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Interop]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: the OCSP interop tests need `openssl ocsp`")
    workdir: Path = tmp_path_factory.mktemp("ocsp")
    now = datetime.now(UTC).replace(microsecond=0)
    ports = {responder: free_port() for responder in _RESPONDERS}
    ports["unreachable"] = dead_port()

    def make(spec: CertSpec, issuer: Issued | None) -> Issued:
        # Valid around the real current time, which openssl uses.
        spec = replace(spec, not_before=now - timedelta(days=1), not_after=now + timedelta(days=30))
        return issue(spec, ec_key(), issuer)

    def crl(issuer: Issued, revoked: Sequence[x509.Certificate] = ()) -> bytes:
        made = make_crl(
            issuer, revoked, this_update=now - timedelta(hours=1), next_update=now + timedelta(days=1)
        )
        return made.public_bytes(Encoding.DER)

    with StaticHTTPServer() as server:
        root = make(CertSpec(name("Interop Root"), ca=True), None)
        intermediate = make(
            CertSpec(name("Interop Issuing CA"), ca=True, extra=((_cdp(server.url("/root.crl")), False),)),
            root,
        )

        def ee(label: str, port: int) -> Issued:
            ocsp_url = aia(f"http://{LOOPBACK}:{port}/")
            extra = ((ocsp_url, False), (_cdp(server.url("/ca.crl")), False))
            return make(
                CertSpec(name(f"EE {label}"), emails=(f"{label}@ac-besancon.fr",), extra=extra), intermediate
            )

        ees = {label: ee(label, port) for label, port in ports.items()}
        ees["revoked"] = ee("revoked", ports["delegated"])
        server.routes["/root.crl"] = crl(root)
        server.routes["/ca.crl"] = crl(intermediate, [ees["revoked"].cert])
        # Every end entity is in the index (valid but one), so a responder
        # whose signature were wrongly accepted would make it look good.
        entries = [IndexEntry(e.cert) for label, e in ees.items() if label != "revoked"]
        entries.append(IndexEntry(ees["revoked"].cert, revoked_at=now - timedelta(hours=1)))

        delegated = make(
            CertSpec(name("Interop OCSP"), ekus=OCSP_SIGNING, extra=((x509.OCSPNoCheck(), False),)),
            intermediate,
        )
        signers: dict[str, tuple[Issued, tuple[str, ...]]] = {
            "delegated": (delegated, ()),
            # The CA signs itself, naming itself by key hash.
            "issuer": (intermediate, ("-resp_key_id",)),
            "no-eku": (make(CertSpec(name("Interop Mail")), intermediate), ()),
            "root-delegated": (make(CertSpec(name("Root OCSP"), ekus=OCSP_SIGNING), root), ()),
            "badsig": (delegated, ("-badsig",)),
            "sha1": (delegated, ("-rmd", "sha1")),
        }
        started: list[OpenSSLResponder] = []
        try:
            for label in _RESPONDERS:
                signer, options = signers[label]
                started.append(
                    OpenSSLResponder(
                        workdir / label,
                        port=ports[label],
                        ca=intermediate.cert,
                        signer=signer,
                        entries=entries,
                        options=options,
                    )
                )
        except Exception:
            for responder in started:
                responder.stop()
            raise
        with responders(*started):
            yield Interop(
                now,
                root,
                intermediate,
                ees,
                dict(zip(_RESPONDERS, started, strict=True)),
                server,
            )


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def http_fetcher() -> Iterator[HTTPFetcher]:
    with HTTPFetcher(timeout=2) as fetcher:
        yield fetcher


@pytest.mark.interop
@pytest.mark.parametrize(
    "cert_id_hash", [hashes.SHA1(), hashes.SHA256()], ids=["sha1-certid", "sha256-certid"]
)
def test_openssl_good_and_revoked(
    interop: Interop, http_fetcher: HTTPFetcher, cert_id_hash: hashes.HashAlgorithm
) -> None:
    checker = OCSPChecker(http_fetcher, MemoryCache(), cert_id_hash=cert_id_hash)
    issuer = interop.intermediate.cert
    assert checker.status(interop.ee["delegated"].cert, issuer, at=_now()) is GOOD
    assert checker.status(interop.ee["revoked"].cert, issuer, at=_now()) is REVOKED


@pytest.mark.interop
def test_openssl_through_path_validation(interop: Interop, http_fetcher: HTTPFetcher) -> None:
    # Only OCSP for the end entity; the intermediate is covered by an
    # imported root CRL, so hard-fail can only pass if OCSP said "good".
    root_crl = make_crl(
        interop.root,
        [],
        this_update=interop.now - timedelta(hours=1),
        next_update=interop.now + timedelta(days=1),
    )
    checker = OCSPChecker(http_fetcher, MemoryCache())
    good = validate(interop.chain("delegated"), (checker,), at=_now(), revocation=HARD, crls=(root_crl,))
    assert good.reasons == ()
    revoked = validate(interop.chain("revoked"), (checker,), at=_now(), revocation=HARD, crls=(root_crl,))
    assert revoked.reasons == (Reason.CERT_REVOKED,)


@pytest.mark.interop
def test_openssl_issuer_signed_by_key_id(interop: Interop, http_fetcher: HTTPFetcher) -> None:
    checker = OCSPChecker(http_fetcher, MemoryCache())
    assert checker.status(interop.ee["issuer"].cert, interop.intermediate.cert, at=_now()) is GOOD


@pytest.mark.interop
@pytest.mark.parametrize("responder", ["no-eku", "root-delegated", "badsig", "sha1"])
def test_openssl_unacceptable_responses(interop: Interop, http_fetcher: HTTPFetcher, responder: str) -> None:
    log_before = interop.responders[responder].requests_received()
    checker = OCSPChecker(http_fetcher, MemoryCache())
    ee = interop.ee[responder].cert
    # The index lists the certificate as valid: a checker accepting the
    # signer would say GOOD.
    assert checker.status(ee, interop.intermediate.cert, at=_now()) is UNKNOWN
    assert interop.responders[responder].requests_received() == log_before + 1
    hard = validate(interop.chain(responder), (checker,), at=_now(), revocation=HARD)
    assert hard.reasons == (Reason.REVOCATION_UNKNOWN,)


@pytest.mark.interop
def test_openssl_unreachable_responder(interop: Interop, http_fetcher: HTTPFetcher) -> None:
    chain = interop.chain("unreachable")
    cache = MemoryCache()
    online = (OCSPChecker(http_fetcher, cache),)
    start = time.monotonic()
    assert validate(chain, online, at=_now(), revocation=SOFT).reasons == ()
    assert validate(chain, online, at=_now(), revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)
    assert time.monotonic() - start < 1.5


@pytest.mark.interop
def test_openssl_cache_hit(interop: Interop, http_fetcher: HTTPFetcher) -> None:
    counting = CountingFetcher(http_fetcher)
    responder = interop.responders["delegated"]
    before = responder.requests_received()
    checker = OCSPChecker(counting, MemoryCache())
    ee, issuer = interop.ee["delegated"].cert, interop.intermediate.cert
    assert checker.status(ee, issuer, at=_now()) is GOOD
    assert checker.status(ee, issuer, at=_now()) is GOOD
    assert counting.posts == 1
    assert responder.requests_received() == before + 1


@pytest.mark.interop
def test_openssl_offline_makes_no_request(interop: Interop) -> None:
    responder = interop.responders["delegated"]
    before = responder.requests_received()
    hits = interop.server.total_hits
    cache = MemoryCache()
    offline = (OCSPChecker(None, cache), FetchedCRLChecker(None, cache))
    chain = interop.chain("revoked")
    assert validate(chain, offline, at=_now(), revocation=SOFT).reasons == ()
    assert validate(chain, offline, at=_now(), revocation=HARD).reasons == (Reason.REVOCATION_UNKNOWN,)
    assert responder.requests_received() == before
    assert interop.server.total_hits == hits


@pytest.mark.interop
def test_openssl_full_wiring(interop: Interop, http_fetcher: HTTPFetcher) -> None:
    # What the service wires: OCSP, then CRLs from the distribution points,
    # one cache; hard-fail needs an answer for the intermediate (root CRL
    # over HTTP) and the end entity (OCSP).
    cache = MemoryCache()
    checkers = (OCSPChecker(http_fetcher, cache), FetchedCRLChecker(http_fetcher, cache))
    assert validate(interop.chain("delegated"), checkers, at=_now(), revocation=HARD).reasons == ()
    assert validate(interop.chain("revoked"), checkers, at=_now(), revocation=HARD).reasons == (
        Reason.CERT_REVOKED,
    )
    # Revoked by the fetched CRL alone, without OCSP.
    crl_only = (FetchedCRLChecker(http_fetcher, MemoryCache()),)
    assert validate(interop.chain("revoked"), crl_only, at=_now()).reasons == (Reason.CERT_REVOKED,)
