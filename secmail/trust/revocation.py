"""Revocation status of the certificates of a validated chain.

A status source is a :class:`RevocationChecker`: :class:`CRLChecker` for
imported CRLs (``TrustContext.crls``), :class:`FetchedCRLChecker` for the
CRLs a certificate's distribution points name, and
``secmail.trust.ocsp.OCSPChecker`` for OCSP (the online ones are passed in
``TrustContext.checkers``). :func:`chain_revocation_reasons` asks every
checker about every non-anchor certificate and combines their answers.

The CRL rules follow RFC 5280 §6.3.3 (CRL processing), read
conservatively: a CRL we cannot fully understand is never used to say a
certificate is *good*, and a CRL we cannot authenticate is never used to
say anything at all.
"""

from __future__ import annotations

import enum
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from secmail._lru import BoundedLRU, CertificateMemo
from secmail.policy import RevocationMode
from secmail.trust.cache import MemoryCache, RevocationCache, utc_now
from secmail.trust.fetch import Fetcher, FetchError
from secmail.verdict import Reason

_SHA256 = hashes.SHA256()

__all__ = [
    "CRLChecker",
    "FetchedCRLChecker",
    "RevocationChecker",
    "RevocationStatus",
    "chain_revocation_reasons",
    "chain_revocation_statuses",
    "crl_urls",
    "shared_crl_checker",
    "why_crl_unusable",
]


class RevocationStatus(enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    #: No usable, current information covers the certificate.
    UNKNOWN = "unknown"


class RevocationChecker(Protocol):
    """A source of revocation status (CRLs, OCSP).

    Implementations must be thread-safe (one checker serves concurrent
    verifications) and bounded in time.
    """

    def status(self, cert: x509.Certificate, issuer: x509.Certificate, *, at: datetime) -> RevocationStatus:
        """The status of ``cert`` (issued by ``issuer``) at ``at``.

        Must not raise for malformed or unexpected input: anything it
        cannot judge is :attr:`RevocationStatus.UNKNOWN`.
        """
        ...


# CRL extensions this module understands (RFC 5280 §5.2). Anything else
# that is marked critical makes the CRL unusable (§5.2: "If a CRL contains
# a critical extension that the application cannot process, then the
# application MUST NOT use that CRL to determine the status of
# certificates").
_KNOWN_CRL_EXTENSIONS = frozenset(
    {
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.CRL_NUMBER,
        ExtensionOID.ISSUING_DISTRIBUTION_POINT,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        # Known, but a delta CRL is not a complete CRL: see _crl_usable.
        ExtensionOID.DELTA_CRL_INDICATOR,
        ExtensionOID.FRESHEST_CRL,
    }
)

# CRL entry extensions this module understands (RFC 5280 §5.3); the same
# "unknown critical → do not use the CRL" rule applies (§5.3).
_KNOWN_ENTRY_EXTENSIONS = frozenset(
    {
        CRLEntryExtensionOID.CRL_REASON,
        CRLEntryExtensionOID.INVALIDITY_DATE,
    }
)


class _Scope(enum.Enum):
    #: The CRL covers the certificate for all reasons.
    FULL = "full"
    #: The CRL covers the certificate for some reasons only (or its
    #: distribution point could not be matched): a listing is believed,
    #: an absence proves nothing.
    PARTIAL = "partial"
    #: The CRL says nothing about this kind of certificate.
    NONE = "none"


#: Memoised (CRL, issuer) signature checks one CRLChecker keeps at most.
_AUTHENTIC_MEMO_LIMIT = 4096


class CRLChecker:
    """Revocation status from a fixed set of CRLs (RFC 5280 §6.3).

    It memoises signature checks, which depend on the CRLs and issuers
    only, never on the validation time, so one checker may serve many
    validations (see :func:`shared_crl_checker`).
    """

    def __init__(self, crls: Iterable[x509.CertificateRevocationList]) -> None:
        self._by_issuer: dict[x509.Name, list[x509.CertificateRevocationList]] = {}
        for crl in crls:
            # Well-formedness is the CRL's own (it walks every entry): judged
            # once here, not on every status() of a checker shared for a
            # whole trust snapshot. An ill-formed CRL is never usable.
            if _crl_well_formed(crl):
                self._by_issuer.setdefault(crl.issuer, []).append(crl)
        # A shared checker lives as long as its trust snapshot, and messages
        # choose the "issuers" asked about: bounded.
        self._authentic: BoundedLRU[bool] = BoundedLRU(_AUTHENTIC_MEMO_LIMIT, _AUTHENTIC_MEMO_LIMIT)

    def status(self, cert: x509.Certificate, issuer: x509.Certificate, *, at: datetime) -> RevocationStatus:
        good = False
        # §6.3.3: the CRL issuer must be the certificate's issuer (we do not
        # support indirect CRLs, whose issuer differs, see _scope).
        for crl in self._by_issuer.get(cert.issuer, ()):
            if not self._usable(crl, issuer, at=at):
                continue
            scope = _scope(crl, cert)
            if scope is _Scope.NONE:
                continue
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None:
                revoked = _entry_revokes(entry)
                if revoked is None:
                    # An entry we cannot read: the whole CRL is unusable
                    # (§5.3), so it can be neither "revoked" nor "good".
                    continue
                if revoked:
                    return RevocationStatus.REVOKED
            if scope is _Scope.FULL:
                good = True
        return RevocationStatus.GOOD if good else RevocationStatus.UNKNOWN

    def _usable(
        self,
        crl: x509.CertificateRevocationList,
        issuer: x509.Certificate,
        *,
        at: datetime,
    ) -> bool:
        return _crl_current(crl, at) and self._signed_by(crl, issuer)

    def _signed_by(self, crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
        key = (id(crl), issuer.fingerprint(_SHA256))
        cached = self._authentic.get(key)
        if cached is None:
            cached = self._authentic.put(key, _crl_signed_by(crl, issuer))
        return cached


#: Shared checkers by the ids of their CRL objects (see shared_crl_checker).
_shared_crl_checkers: BoundedLRU[tuple[tuple[x509.CertificateRevocationList, ...], CRLChecker]] = BoundedLRU(
    16, 16
)


def shared_crl_checker(crls: Sequence[x509.CertificateRevocationList]) -> CRLChecker:
    """One :class:`CRLChecker` per set of CRL *objects*, shared by callers.

    The service hands every verification the CRLs of its current trust
    snapshot (the same objects until the snapshot is reloaded), so a
    checker built once per snapshot keeps its memoised CRL signature
    checks instead of redoing them for every message. Safe because a
    checker's answers depend only on its CRLs, the certificates asked
    about and the validation time passed to :meth:`CRLChecker.status`;
    the memo it keeps holds signature checks only, which never depend on
    time. The key is the identities of the CRL objects, in order: the
    entry keeps those objects alive, so no other object can take one of
    their ids while the entry exists. Bounded (LRU).
    """
    key = tuple(map(id, crls))
    found = _shared_crl_checkers.get(key)
    if found is None:
        pinned = tuple(crls)
        found = _shared_crl_checkers.put(key, (pinned, CRLChecker(pinned)))
    return found[1]


#: RFC 2585 §4.2 media type of a DER CRL.
CRL_MEDIA_TYPE = "application/pkix-crl"


class FetchedCRLChecker:
    """Revocation status from the CRLs a certificate's CRL distribution
    points name (RFC 5280 §4.2.1.13), fetched and judged by
    :class:`CRLChecker`'s rules.

    Only HTTP(S) full names of distribution points without a cRLIssuer are
    used (indirect CRLs are not supported; LDAP is ignored). A CRL is
    cached until its nextUpdate once it is authenticated (well formed and
    signed by the issuer); a stale one is never believed (§6.3.3 (a)(2))
    and is fetched again only after ``retry_after``. ``fetcher`` None
    means offline: cached CRLs only. Create one per process and share it.
    """

    def __init__(
        self,
        fetcher: Fetcher | None,
        cache: RevocationCache | None = None,
        *,
        retry_after: timedelta = timedelta(minutes=2),
        max_urls: int = 2,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._fetcher = fetcher
        self._cache: RevocationCache = cache if cache is not None else MemoryCache()
        self._retry_after = retry_after
        self._max_urls = max_urls
        self._now = clock
        # Parsed CRLs with their memoised signature checks, by URL: a
        # cache hit must not cost a parse and a signature per message.
        self._parsed: OrderedDict[str, tuple[bytes, x509.CertificateRevocationList, CRLChecker]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def status(self, cert: x509.Certificate, issuer: x509.Certificate, *, at: datetime) -> RevocationStatus:
        answer = RevocationStatus.UNKNOWN
        for url, partial in crl_urls(cert)[: self._max_urls]:
            loaded = self._crl(url, issuer)
            if loaded is None:
                continue
            status = loaded[1].status(cert, issuer, at=at)
            if status is RevocationStatus.REVOKED:
                return status
            # §6.3.3 (b)(1)/(d): a distribution point limited to some
            # reasons covers only those, whatever the CRL itself says, so
            # its silence does not make the certificate good.
            if status is RevocationStatus.GOOD and not partial:
                answer = status
                break
        return answer

    def _crl(
        self, url: str, issuer: x509.Certificate
    ) -> tuple[x509.CertificateRevocationList, CRLChecker] | None:
        key = f"crl {url}"
        der = self._cache.get(key)
        if der:
            return self._parse(url, der)
        if self._fetcher is None or self._cache.get(f"failed {key}") is not None:
            return None
        try:
            der = self._fetcher.get(url, accept=CRL_MEDIA_TYPE)
        except FetchError:
            self._fail(key)
            return None
        loaded = self._parse(url, der)
        if loaded is None:
            self._fail(key)
            return None
        crl, checker = loaded
        next_update = crl.next_update_utc
        if not _crl_well_formed(crl) or not checker._signed_by(crl, issuer) or next_update is None:
            self._fail(key)
            return loaded
        if next_update <= self._now():
            # Stale already: keep it out of the cache, and do not ask again
            # at every message.
            self._fail(key)
            return loaded
        self._cache.put(key, der, expires=next_update)
        return loaded

    def _parse(self, url: str, der: bytes) -> tuple[x509.CertificateRevocationList, CRLChecker] | None:
        with self._lock:
            memo = self._parsed.get(url)
            if memo is not None and memo[0] == der:
                self._parsed.move_to_end(url)
                return memo[1], memo[2]
        crl = _load_crl(der)
        if crl is None:
            return None
        checker = CRLChecker((crl,))
        with self._lock:
            self._parsed[url] = (der, crl, checker)
            while len(self._parsed) > 64:
                self._parsed.popitem(last=False)
        return crl, checker

    def _fail(self, key: str) -> None:
        self._cache.put(f"failed {key}", b"", expires=self._now() + self._retry_after)


_crl_urls_memo: CertificateMemo[tuple[tuple[str, bool], ...]] = CertificateMemo(1024, 16 << 20)


def crl_urls(cert: x509.Certificate) -> tuple[tuple[str, bool], ...]:
    """(URL, partial) for each HTTP(S) CRL distribution point of ``cert``.

    ``partial`` is true when the distribution point lists reasons (the CRL
    there covers only those). Points with a cRLIssuer (indirect CRLs) or
    a relative name are left out.
    """
    return _crl_urls_memo.read(cert, _crl_urls)


def _crl_urls(cert: x509.Certificate) -> tuple[tuple[str, bool], ...]:
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except Exception:
        return ()
    found: list[tuple[str, bool]] = []
    for point in points:
        if point.crl_issuer is not None or point.full_name is None:
            continue
        for general_name in point.full_name:
            if not isinstance(general_name, x509.UniformResourceIdentifier):
                continue
            url = general_name.value
            if url.lower().startswith(("http://", "https://")) and url not in (u for u, _ in found):
                found.append((url, point.reasons is not None))
    return tuple(found)


def _load_crl(data: bytes) -> x509.CertificateRevocationList | None:
    # §4.2.1.13 says DER; some servers send PEM, which is as unambiguous.
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except Exception:
        return None


def chain_revocation_statuses(
    chain: Sequence[x509.Certificate],
    checkers: Sequence[RevocationChecker],
    *,
    at: datetime,
) -> tuple[RevocationStatus, ...]:
    """One status per non-anchor certificate of ``chain`` (EE first).

    The anchor is trusted by configuration, so it is never checked (RFC
    5280 §6.1: the trust anchor is an input, not part of the path). Any
    checker saying REVOKED wins (those after it are not asked); otherwise
    any saying GOOD gives GOOD.
    """
    statuses: list[RevocationStatus] = []
    for cert, issuer in itertools.pairwise(chain):
        answers: set[RevocationStatus] = set()
        for checker in checkers:
            answers.add(_safe_status(checker, cert, issuer, at))
            # REVOKED wins whatever the others say: no need to ask them
            # (the later checkers may be online ones).
            if RevocationStatus.REVOKED in answers:
                break
        if RevocationStatus.REVOKED in answers:
            statuses.append(RevocationStatus.REVOKED)
        elif RevocationStatus.GOOD in answers:
            statuses.append(RevocationStatus.GOOD)
        else:
            statuses.append(RevocationStatus.UNKNOWN)
    return tuple(statuses)


def chain_revocation_reasons(
    chain: Sequence[x509.Certificate],
    checkers: Sequence[RevocationChecker],
    *,
    at: datetime,
    mode: RevocationMode,
) -> tuple[Reason, ...]:
    """The reasons revocation adds to a chain's outcome (empty when fine).

    A revoked certificate anywhere below the anchor gives CERT_REVOKED;
    unknown status gives REVOCATION_UNKNOWN only under hard-fail.
    """
    statuses = chain_revocation_statuses(chain, checkers, at=at)
    if RevocationStatus.REVOKED in statuses:
        return (Reason.CERT_REVOKED,)
    if RevocationStatus.UNKNOWN in statuses and mode is RevocationMode.HARD_FAIL:
        return (Reason.REVOCATION_UNKNOWN,)
    return ()


def _safe_status(
    checker: RevocationChecker,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    at: datetime,
) -> RevocationStatus:
    # A checker that trips over hostile input must not turn into a crash
    # of the whole verification; "unknown" is the honest answer.
    try:
        return checker.status(cert, issuer, at=at)
    except Exception:
        return RevocationStatus.UNKNOWN


def _crl_current(crl: x509.CertificateRevocationList, at: datetime) -> bool:
    # §6.3.3 (a)(2): "If the current time is after the value of the CRL
    # next update field, then ... [the CRL is not usable]". thisUpdate in
    # the future of the validation time is as unusable: the CRL did not
    # exist yet. nextUpdate is mandatory for conforming CRL issuers
    # (§5.1.2.5); without it we cannot tell a CRL is still current.
    at_utc = at.astimezone(UTC)
    next_update = crl.next_update_utc
    return next_update is not None and crl.last_update_utc <= at_utc <= next_update


def _crl_well_formed(crl: x509.CertificateRevocationList) -> bool:
    return why_crl_unusable(crl) is None


def why_crl_unusable(crl: x509.CertificateRevocationList) -> str | None:
    """Why no certificate's status may ever be read from ``crl`` (None: it
    may be, while current and signed by the certificate's issuer). Also
    what ImportCRL tells an admin, rather than keeping a CRL that would be
    silently ignored."""
    try:
        extensions = crl.extensions
    except Exception:
        return "its extensions are unreadable"
    if crl.next_update_utc is None:
        # §5.1.2.5: without nextUpdate nobody can tell the CRL is current.
        return "it has no nextUpdate"
    for ext in extensions:
        if ext.critical and ext.oid not in _KNOWN_CRL_EXTENSIONS:
            return f"it has an unknown critical extension ({ext.oid.dotted_string})"
    # A delta CRL only lists changes since a base CRL (§5.2.4); without
    # delta processing it must not be read as a complete CRL.
    if any(ext.oid == ExtensionOID.DELTA_CRL_INDICATOR for ext in extensions):
        return "it is a delta CRL (only complete CRLs are used)"
    # §5.2.3: "CRL issuers conforming to this profile MUST include this
    # extension in all CRLs and MUST mark this extension as non-critical."
    # A CRL breaking either rule is not one we rely on.
    number = [ext for ext in extensions if ext.oid == ExtensionOID.CRL_NUMBER]
    if len(number) != 1 or number[0].critical:
        return "it has no (or a critical) CRL number extension (RFC 5280 §5.2.3)"
    try:
        for entry in crl:
            for entry_ext in entry.extensions:
                if entry_ext.critical and entry_ext.oid not in _KNOWN_ENTRY_EXTENSIONS:
                    return f"an entry has an unknown critical extension ({entry_ext.oid.dotted_string})"
    except Exception:
        return "an entry is unreadable"
    return None


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    # §6.3.3 (f): "If a key usage extension is present in the CRL issuer's
    # certificate, verify that the cRLSign bit is set."
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    except Exception:
        return False
    else:
        if not ku.crl_sign:
            return False
    # §6.3.3 (g): "Validate the signature on the complete CRL using the
    # public key validated in step (f)."
    try:
        key = issuer.public_key()
        return crl.is_signature_valid(key)  # type: ignore[arg-type]
    except Exception:
        return False


def _scope(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> _Scope:
    """How much of ``cert``'s status ``crl`` speaks for (§6.3.3 (b))."""
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return _Scope.FULL
    except Exception:
        return _Scope.NONE
    if idp.indirect_crl or idp.only_contains_attribute_certs:
        # Indirect CRLs (entries for other issuers, §5.3.3) and attribute
        # certificate CRLs are outside what we support.
        return _Scope.NONE
    is_ca = _is_ca(cert)
    # §6.3.3 (b)(2)(ii)/(iii): a CRL for user certificates only says
    # nothing about CAs, and vice versa.
    if (idp.only_contains_user_certs and is_ca) or (idp.only_contains_ca_certs and not is_ca):
        return _Scope.NONE
    scope = _Scope.FULL
    # §6.3.3 (b)(2)(iv): with onlySomeReasons the CRL covers only those
    # reasons; absence from it does not make the certificate good.
    if idp.only_some_reasons is not None:
        scope = _Scope.PARTIAL
    # §6.3.3 (b)(2)(i): a distribution point name in the IDP must match one
    # of the certificate's CRL distribution points. We match full names
    # only; anything else we cannot confirm, so the CRL is partial for us.
    if idp.full_name is not None or idp.relative_name is not None:
        if idp.full_name is None or not _dp_matches(idp.full_name, cert):
            scope = _Scope.PARTIAL
    return scope


def _dp_matches(idp_names: Sequence[x509.GeneralName], cert: x509.Certificate) -> bool:
    try:
        dps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except Exception:
        return False
    wanted = set(idp_names)
    return any(dp.full_name is not None and wanted.intersection(dp.full_name) for dp in dps)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except Exception:
        return False


def _entry_revokes(entry: x509.RevokedCertificate) -> bool | None:
    """Whether a CRL entry means "revoked"; None when it cannot be read."""
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return True
    except Exception:
        return None
    # §5.3.1: removeFromCRL "is only used in delta CRLs and indicates that
    # a certificate is to be removed from a CRL" — the certificate is not
    # revoked (it was on hold). certificateHold is a revocation in force
    # for as long as the entry is listed (§6.3.3 (i) sets cert_status to
    # the listed reason), so it counts as revoked.
    return reason is not x509.ReasonFlags.remove_from_crl
