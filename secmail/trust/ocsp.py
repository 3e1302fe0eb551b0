"""Revocation status from OCSP responders (RFC 6960).

:class:`OCSPChecker` is a :class:`~secmail.trust.revocation.RevocationChecker`:
for a certificate whose Authority Information Access names an OCSP
responder (id-ad-ocsp, RFC 5280 §4.2.2.1), it POSTs a request (RFC 6960
Appendix A.1), authenticates the response and reads the certificate's
status. Responses are cached until their nextUpdate.

A response is believed only when it passes every check of RFC 6960 §3.2;
anything short of that is "unknown", never "good":

1. it answers for our certificate: the CertID (issuer name hash, issuer
   key hash, serial number) matches, computed with the response's own
   hash algorithm;
2. its signature verifies;
3-4. its signer is the certificate's issuer itself, or a responder
   certificate issued directly by that issuer carrying id-kp-OCSPSigning
   (§4.2.2.2), valid at the validation time, and named by the response's
   ResponderID;
5. thisUpdate is not after the validation time (plus a small clock skew);
6. nextUpdate, when present, is not before the validation time.

Requests carry no nonce: responders that pre-sign responses (RFC 5019,
most CAs) ignore it, and caching would defeat it. Freshness comes from
the thisUpdate/nextUpdate window instead. A delegated responder's own
revocation status is not checked (§4.2.2.2.1 leaves it to local policy;
such certificates are short-lived and usually carry id-pkix-ocsp-nocheck).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, SignatureAlgorithmOID

from secmail._lru import CertificateMemo
from secmail.trust.cache import MemoryCache, RevocationCache, utc_now
from secmail.trust.fetch import Fetcher, FetchError
from secmail.trust.revocation import RevocationStatus

__all__ = ["OCSPChecker", "check_ocsp_response", "ocsp_urls"]

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"

#: Tolerated difference between our clock and the responder's.
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
#: How long a response without nextUpdate stays believable. RFC 6960
#: RFC 6960 §4.2.2.1: without nextUpdate "the responder is indicating that
#: newer revocation information is available all the time", so such a
#: response is only good close to its thisUpdate.
DEFAULT_MAX_AGE = timedelta(hours=1)
#: How long a responder that failed (unreachable, unusable answer) is not
#: asked again about the same certificate.
DEFAULT_RETRY_AFTER = timedelta(minutes=2)

# Digests too weak to authenticate a status; a response signed with them
# is unverifiable. (The CertID hash is different: SHA-1 there is only an
# identifier, RFC 5019 §2.1.1 / RFC 9919.)
_WEAK_DIGESTS = frozenset({"md5", "sha1"})

_STATUSES = {
    ocsp.OCSPCertStatus.GOOD: RevocationStatus.GOOD,
    ocsp.OCSPCertStatus.REVOKED: RevocationStatus.REVOKED,
    ocsp.OCSPCertStatus.UNKNOWN: RevocationStatus.UNKNOWN,
}


class OCSPChecker:
    """Revocation status by OCSP, for the responders a certificate names.

    ``fetcher`` None means offline: only responses already in ``cache``
    are used, nothing is fetched. The CertID of requests is hashed with
    ``cert_id_hash`` (SHA-1 by default: RFC 5019 §2.1.1 made it the one
    every responder understands; RFC 9919 allows SHA-256). Create one
    checker per process and share it, with its cache.
    """

    def __init__(
        self,
        fetcher: Fetcher | None,
        cache: RevocationCache | None = None,
        *,
        cert_id_hash: hashes.HashAlgorithm | None = None,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        max_age_without_next_update: timedelta = DEFAULT_MAX_AGE,
        retry_after: timedelta = DEFAULT_RETRY_AFTER,
        max_urls: int = 2,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._fetcher = fetcher
        self._cache: RevocationCache = cache if cache is not None else MemoryCache()
        self._hash = cert_id_hash or hashes.SHA1()
        self._skew = clock_skew
        self._max_age = max_age_without_next_update
        self._retry_after = retry_after
        self._max_urls = max_urls
        self._now = clock

    def status(self, cert: x509.Certificate, issuer: x509.Certificate, *, at: datetime) -> RevocationStatus:
        for url in ocsp_urls(cert)[: self._max_urls]:
            answer = self._status_from(url, cert, issuer, at)
            if answer is not RevocationStatus.UNKNOWN:
                return answer
        return RevocationStatus.UNKNOWN

    def _status_from(
        self, url: str, cert: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> RevocationStatus:
        key = f"ocsp {url} {issuer.fingerprint(hashes.SHA256()).hex()} {cert.serial_number:x}"
        cached = self._cache.get(key)
        if cached:
            # Re-authenticated on every use: the cache is not trusted.
            return self._judge(cached, cert, issuer, at).status
        der = self._fetch(url, key, cert, issuer)
        if der is None:
            return RevocationStatus.UNKNOWN
        judgement = self._judge(der, cert, issuer, at)
        if not judgement.authentic:
            self._fail(key)
        elif judgement.next_update is not None:
            self._cache.put(key, der, expires=judgement.next_update)
        return judgement.status

    def _fetch(self, url: str, key: str, cert: x509.Certificate, issuer: x509.Certificate) -> bytes | None:
        if self._fetcher is None or self._cache.get(f"failed {key}") is not None:
            return None
        try:
            request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, self._hash).build()
            body = request.public_bytes(Encoding.DER)
        except Exception:
            # A certificate the builder cannot describe: nothing to ask.
            return None
        try:
            return self._fetcher.post(url, body, content_type=OCSP_REQUEST_TYPE, accept=OCSP_RESPONSE_TYPE)
        except FetchError:
            self._fail(key)
            return None

    def _fail(self, key: str) -> None:
        self._cache.put(f"failed {key}", b"", expires=self._now() + self._retry_after)

    def _judge(
        self, der: bytes, cert: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> _Judgement:
        return _judge(der, cert, issuer, at=at, skew=self._skew, max_age=self._max_age)


def check_ocsp_response(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    at: datetime,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    max_age_without_next_update: timedelta = DEFAULT_MAX_AGE,
) -> RevocationStatus:
    """The status a DER OCSP response gives ``cert`` at ``at``.

    UNKNOWN unless the response passes every check of RFC 6960 §3.2 (see
    the module documentation). Never raises. Also usable for responses
    that arrive by other ways than :class:`OCSPChecker` (stapled to a
    message, RFC 5940).
    """
    return _judge(der, cert, issuer, at=at, skew=clock_skew, max_age=max_age_without_next_update).status


_ocsp_urls_memo: CertificateMemo[tuple[str, ...]] = CertificateMemo(1024, 16 << 20)


def ocsp_urls(cert: x509.Certificate) -> tuple[str, ...]:
    """The HTTP(S) OCSP responder URLs of ``cert``'s AIA, in order."""
    # Asked for every certificate of every chain on every verification.
    return _ocsp_urls_memo.read(cert, _ocsp_urls)


def _ocsp_urls(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except Exception:
        return ()
    urls: list[str] = []
    for description in aia:
        location = description.access_location
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            location, x509.UniformResourceIdentifier
        ):
            if location.value.lower().startswith(("http://", "https://")) and location.value not in urls:
                urls.append(location.value)
    return tuple(urls)


class _Judgement:
    __slots__ = ("authentic", "next_update", "status")

    def __init__(self, status: RevocationStatus, *, authentic: bool, next_update: datetime | None) -> None:
        self.status = status
        #: The response is well formed, signed by an authorised responder
        #: and about our certificate (worth caching).
        self.authentic = authentic
        #: When the matching answers expire (None: not cacheable).
        self.next_update = next_update


_UNUSABLE = _Judgement(RevocationStatus.UNKNOWN, authentic=False, next_update=None)


def _judge(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    at: datetime,
    skew: timedelta,
    max_age: timedelta,
) -> _Judgement:
    try:
        response = ocsp.load_der_ocsp_response(der)
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            # tryLater, unauthorized...: unsigned, so they say nothing.
            return _UNUSABLE
        if not _extensions_understood(response, der):
            return _UNUSABLE
        signers = _authorised_signers(response, issuer, at)
        if not any(_signature_valid(response, signer) for signer in signers):
            return _UNUSABLE
        return _match(response, cert, issuer, at=at, skew=skew, max_age=max_age)
    except Exception:
        # Hostile or broken input: no information.
        return _UNUSABLE


def _match(
    response: ocsp.OCSPResponse,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    at: datetime,
    skew: timedelta,
    max_age: timedelta,
) -> _Judgement:
    """§3.2 (1), (5), (6): the answers about our certificate, if current."""
    found: set[RevocationStatus] = set()
    expiries: list[datetime | None] = []
    cert_ids: dict[str, tuple[bytes, bytes] | None] = {}
    for single in response.responses:
        if single.serial_number != cert.serial_number:
            continue
        try:
            algorithm = single.hash_algorithm
        except Exception:
            continue
        if algorithm.name not in cert_ids:
            cert_ids[algorithm.name] = _cert_id_hashes(cert, issuer, algorithm)
        if cert_ids[algorithm.name] != (single.issuer_name_hash, single.issuer_key_hash):
            continue
        this_update, next_update = single.this_update_utc, single.next_update_utc
        expiries.append(next_update)
        if this_update > at + skew:
            # Made after the validation time: it cannot speak for it.
            continue
        if next_update is None:
            if at - this_update > max_age:
                continue
        elif at > next_update:
            continue
        found.add(_STATUSES.get(single.certificate_status, RevocationStatus.UNKNOWN))
    if not expiries:
        # Signed, but about another certificate: useless to us.
        return _UNUSABLE
    status = RevocationStatus.UNKNOWN
    if RevocationStatus.REVOKED in found:
        status = RevocationStatus.REVOKED
    elif RevocationStatus.GOOD in found:
        status = RevocationStatus.GOOD
    cacheable = None if None in expiries else min(e for e in expiries if e is not None)
    return _Judgement(status, authentic=True, next_update=cacheable)


def _cert_id_hashes(
    cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes] | None:
    # The request builder computes issuerNameHash / issuerKeyHash exactly
    # as §4.1.1 defines them (hash of the issuer's DER name and of its
    # subjectPublicKey BIT STRING value).
    try:
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    except Exception:
        return None
    return request.issuer_name_hash, request.issuer_key_hash


def _extensions_understood(response: ocsp.OCSPResponse, der: bytes) -> bool:
    """No critical extension anywhere.

    We act on none of RFC 6960 §4.4's extensions (nonce, CRL references,
    archive cutoff...); one marked critical would change the meaning of
    the response in a way we cannot honour, so the response is not used,
    the rule RFC 5280 §5.2 gives for CRLs. cryptography exposes the
    single-response extensions of the first answer only, so asn1crypto
    reads them all.
    """
    if any(ext.critical for ext in response.extensions):
        return False
    parsed = asn1_ocsp.OCSPResponse.load(der)
    basic = parsed["response_bytes"]["response"].parsed
    for single in basic["tbs_response_data"]["responses"]:
        for ext in single["single_extensions"].native or ():
            if ext["critical"]:
                return False
    return True


def _authorised_signers(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, at: datetime
) -> Iterator[x509.Certificate]:
    """§4.2.2.2: the issuer itself, or a responder it designated directly."""
    if _named_by_responder_id(response, issuer):
        yield issuer
    for candidate in response.certificates:
        if _named_by_responder_id(response, candidate) and _designated(candidate, issuer, at):
            yield candidate


def _named_by_responder_id(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    # §4.2.2.3: byName is the signer's subject; byKey is the SHA-1 hash of
    # its subjectPublicKey value, which is exactly RFC 5280's method-1 key
    # identifier.
    if response.responder_name is not None:
        return cert.subject == response.responder_name
    key_hash = response.responder_key_hash
    if key_hash is None:
        return False
    try:
        return key_hash == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    except Exception:
        return False


def _designated(responder: x509.Certificate, issuer: x509.Certificate, at: datetime) -> bool:
    # "This certificate MUST be issued directly by the CA that is
    # identified in the request" and the CA marks it with
    # id-kp-OCSPSigning (anyExtendedKeyUsage does not designate anyone).
    try:
        responder.verify_directly_issued_by(issuer)
    except Exception:
        return False
    if not responder.not_valid_before_utc <= at <= responder.not_valid_after_utc:
        return False
    try:
        eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except Exception:
        return False
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return False
    try:
        ku = responder.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    except Exception:
        return False
    return bool(ku.digital_signature)


def _signature_valid(response: ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    try:
        key = signer.public_key()
        oid = response.signature_algorithm_oid
        data, signature = response.tbs_response_bytes, response.signature
        if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            expected = (
                SignatureAlgorithmOID.ED25519
                if isinstance(key, ed25519.Ed25519PublicKey)
                else SignatureAlgorithmOID.ED448
            )
            if oid != expected:
                return False
            key.verify(signature, data)
            return True
        digest = response.signature_hash_algorithm
        if digest is None or digest.name in _WEAK_DIGESTS:
            return False
        if isinstance(key, rsa.RSAPublicKey):
            # RSASSA-PSS parameters are not exposed by cryptography for
            # OCSP; such a response stays unverified (unknown).
            if oid == SignatureAlgorithmOID.RSASSA_PSS:
                return False
            key.verify(signature, data, padding.PKCS1v15(), digest)
            return True
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(digest))
            return True
    except Exception:
        return False
    return False
