"""Path validation on cryptography's verifier, and naming its failures.

cryptography (``cryptography.x509.verification``) builds and validates the
path (RFC 5280 §6.1 with CA/B Forum profile choices: signatures, validity,
basic constraints, path length, name constraints, extension criticality).
It reports every failure as one ``VerificationError`` whose text is not an
interface, so we never read it to decide anything. Instead, when a path is
refused at the validation time, we ask the verifier again under relaxed
conditions and name the failure by what made it pass:

1. at another instant inside the certificates' validity → the problem is
   time (CERT_EXPIRED / CERT_NOT_YET_VALID, judged per certificate at the
   real validation time);
2. with extended key usage and key usage left open → KEY_USAGE;
3. by names and signatures alone, with an algorithm the verifier refuses
   (SHA-1, MD5, short RSA) → WEAK_ALGORITHM;
4. otherwise → UNTRUSTED_CHAIN.

What cryptography does not do at all is added after it accepts a path:
revocation (``secmail.trust.revocation``), the algorithm policy, rfc822Name
constraints on the subject DN's emailAddress, and matching an expected
e-mail address.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    Subject,
    VerificationError,
)

from secmail._lru import der_weight
from secmail.policy import AlgorithmPolicy, RevocationMode
from secmail.trust import _checks, _webpki
from secmail.trust._pathcache import PathCache
from secmail.trust.revocation import RevocationChecker, chain_revocation_reasons
from secmail.verdict import Reason

#: Chain depth (intermediates) when the caller sets none; cryptography's
#: own default.
DEFAULT_MAX_DEPTH = 8

_ONE_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Usage:
    """What the end entity's key must be good for."""

    #: Acceptable extended key usages; the end entity's EKU, when present,
    #: must list one of them. Empty: no EKU requirement.
    ekus: frozenset[x509.ObjectIdentifier]
    #: Whether anyExtendedKeyUsage on the end entity satisfies ``ekus``
    #: (RFC 8550 §4.4.4 says yes for S/MIME; the CA/B Forum web profile
    #: that cryptography follows for TLS says no).
    any_eku_ok: bool = False
    #: RFC 8550 §4.4.2: an S/MIME signing certificate's keyUsage, when
    #: present, must assert digitalSignature or nonRepudiation.
    smime_signing: bool = False
    #: keyUsage bits (cryptography attribute names, e.g.
    #: ``digital_signature``) the end entity must assert.
    key_usages: frozenset[str] = frozenset()
    #: S/MIME certificates may carry their address in the subject DN only;
    #: the web profile requires a subjectAltName.
    san_optional: bool = False


SERVER_USAGE = Usage(ekus=frozenset({ExtendedKeyUsageOID.SERVER_AUTH}))
CLIENT_USAGE = Usage(ekus=frozenset({ExtendedKeyUsageOID.CLIENT_AUTH}))
SMIME_SIGNING_USAGE = Usage(
    ekus=frozenset({ExtendedKeyUsageOID.EMAIL_PROTECTION}),
    any_eku_ok=True,
    smime_signing=True,
    san_optional=True,
)


@dataclass(frozen=True, slots=True)
class Evaluation:
    chain: tuple[x509.Certificate, ...]
    reasons: tuple[Reason, ...]
    #: For people and the conformance harness; never parsed.
    detail: str


@dataclass(frozen=True, slots=True)
class Request:
    leaf: x509.Certificate
    pool: tuple[x509.Certificate, ...]
    anchors: tuple[x509.Certificate, ...]
    at: datetime
    usage: Usage
    #: A DNS name or IP address for a TLS server; None for e-mail/clients.
    server_subject: Subject | None = None
    #: An address the end entity's subjectAltName must carry.
    email: str | None = None
    max_depth: int | None = None
    checkers: tuple[RevocationChecker, ...] = ()
    revocation: RevocationMode = RevocationMode.SOFT_FAIL
    #: None: only what cryptography enforces by itself.
    algorithms: AlgorithmPolicy | None = None


def as_utc(at: datetime) -> datetime:
    """Validation times are instants; a naive one is taken as UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def evaluate(request: Request, *, cache: PathCache | None = None) -> Evaluation:
    """Validate ``request.leaf`` and name what is wrong (nothing: no reasons).

    With ``cache``, a path accepted cleanly before for the same request is
    reused while no certificate's validity status differs at
    ``request.at`` (see ``secmail.trust._pathcache``); revocation is
    always judged at ``request.at``.
    """
    if not request.anchors:
        return Evaluation((), (Reason.UNTRUSTED_CHAIN,), "no trust anchors")
    key: tuple[Hashable, ...] | None = None
    if cache is not None:
        key = _cache_key(request)
        cached = cache.get(key, request.at)
        if cached is not None:
            return _with_revocation(request, cached, [], ["valid"])
    # Building a Store is cheap (about 0.5 µs per certificate), cheaper than
    # hashing the anchors to look a cached one up; and nothing that depends
    # on the validation time may be cached.
    store = Store(list(request.anchors))
    at = request.at
    strict = _extension_policies(request, relaxed=False)
    relaxed = _extension_policies(request, relaxed=True)

    outcome = _attempt(request, store, at, strict)
    if not isinstance(outcome, VerificationError):
        valid = tuple(outcome)
        found, notes = _added_checks(request, valid, (), "valid")
        if cache is not None and key is not None and not found:
            # The verifier was given exactly these certificates.
            everything = (request.leaf, *request.pool, *request.anchors)
            # The leaf and the message's certificates may live only here;
            # anchors and trust-store intermediates are the snapshot's.
            weight = der_weight(request.leaf, *request.pool)
            # Pinning the request keeps alive every object the key names by id.
            cache.put(key, valid, everything, at, (request,), weight=weight)
        return _with_revocation(request, valid, found, notes)
    refusal = f"refused at the validation time: {outcome}"

    # Each question below costs a full verification, and the certificates
    # of a message can make one expensive (x509-limbo's pathological
    # cases): only ask what the certificates make possible.
    everything = (request.leaf, *request.pool, *request.anchors)
    probes = _probe_times(request) if _any_outside_validity(everything, at) else ()
    for instant in probes:
        chain = _attempt(request, store, instant, strict)
        if not isinstance(chain, VerificationError):
            timing = _checks.validity_reasons(chain, at) or (Reason.UNTRUSTED_CHAIN,)
            return _accepted(request, chain, timing, f"{refusal}; valid at {instant.isoformat()}")

    for instant in (at, *probes) if _usage_may_refuse(request) else ():
        chain = _attempt(request, store, instant, relaxed)
        if not isinstance(chain, VerificationError):
            reasons = (Reason.KEY_USAGE, *_checks.validity_reasons(chain, at))
            return _accepted(request, chain, reasons, f"{refusal}; valid without key usage constraints")

    path = _checks.find_path_by_signatures(
        request.leaf,
        request.pool,
        request.anchors,
        max_depth=DEFAULT_MAX_DEPTH if request.max_depth is None else request.max_depth,
    )
    if path is not None and _checks.has_weak_algorithm(path, request.algorithms, engine_floor=True):
        # The verifier refused these algorithms, so the rest of the path
        # (extensions, constraints) is unexamined; WEAK_ALGORITHM already
        # keeps it from being trusted, and the path is what the reader
        # needs to see.
        reasons = (
            Reason.WEAK_ALGORITHM,
            *_checks.validity_reasons(path, at),
            *chain_revocation_reasons(path, request.checkers, at=at, mode=request.revocation),
        )
        return Evaluation(path, _unique(reasons), f"{refusal}; path uses a weak algorithm")
    return Evaluation((), (Reason.UNTRUSTED_CHAIN,), refusal)


def _cache_key(request: Request) -> tuple[Hashable, ...]:
    """Everything but the time that the verifier and ``_added_checks`` read.

    Objects count by identity: a trust snapshot's certificates (see
    ``secmail.trust.interned``), the message certificates of
    ``secmail.smime``'s parse cache, the checkers, the usage and the
    policy's algorithms are the same objects from one message to the next,
    and comparing them by identity costs nothing where hashing a trust
    store would. The entry pins the request holding them, so their ids cannot
    be reused meanwhile. The key holds only ints, strings and None, whose
    hashing runs no Python code (see ``secmail._lru``).
    """
    return (
        id(request.leaf),
        tuple(map(id, request.pool)),
        tuple(map(id, request.anchors)),
        id(request.usage),
        id(request.server_subject),
        request.email,
        request.max_depth,
        tuple(map(id, request.checkers)),
        request.revocation.value,
        id(request.algorithms),
    )


def _accepted(
    request: Request,
    chain: Sequence[x509.Certificate],
    reasons: tuple[Reason, ...],
    detail: str,
) -> Evaluation:
    """Add the checks cryptography does not make to a path it accepted."""
    found, notes = _added_checks(request, chain, reasons, detail)
    return _with_revocation(request, chain, found, notes)


def _added_checks(
    request: Request,
    chain: Sequence[x509.Certificate],
    reasons: tuple[Reason, ...],
    detail: str,
) -> tuple[list[Reason], list[str]]:
    """The checks cryptography does not make, but revocation: none of them
    depends on the validation time."""
    found = list(reasons)
    notes = [detail]
    if request.email is not None and not _checks.email_matches(request.email, _checks.san_emails(chain[0])):
        found.append(Reason.SENDER_MISMATCH)
        notes.append("expected address not in subjectAltName")
    if request.server_subject is not None:
        profile = _webpki.violations(chain)
        if profile:
            found.append(Reason.UNTRUSTED_CHAIN)
            notes.extend(profile)
    if not _checks.dn_emails_within_constraints(chain):
        found.append(Reason.UNTRUSTED_CHAIN)
        notes.append("subject emailAddress violates name constraints")
    if request.algorithms is not None and _checks.has_weak_algorithm(
        chain, request.algorithms, engine_floor=False
    ):
        found.append(Reason.WEAK_ALGORITHM)
        notes.append("weak algorithm under the policy")
    return found, notes


def _with_revocation(
    request: Request,
    chain: Sequence[x509.Certificate],
    found: list[Reason],
    notes: list[str],
) -> Evaluation:
    """Add revocation, judged at the request's time, to a path's findings."""
    revocation = chain_revocation_reasons(chain, request.checkers, at=request.at, mode=request.revocation)
    if revocation:
        found.extend(revocation)
        notes.append(f"revocation: {', '.join(r.code for r in revocation)}")
    return Evaluation(tuple(chain), _unique(found), "; ".join(notes))


def _attempt(
    request: Request,
    store: Store,
    at: datetime,
    policies: tuple[ExtensionPolicy, ExtensionPolicy],
) -> list[x509.Certificate] | VerificationError:
    builder = PolicyBuilder().store(store).time(at)
    if request.max_depth is not None:
        builder = builder.max_chain_depth(request.max_depth)
    ca_policy, ee_policy = policies
    builder = builder.extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
    try:
        if request.server_subject is not None:
            verifier = builder.build_server_verifier(request.server_subject)
            return verifier.verify(request.leaf, list(request.pool))
        return builder.build_client_verifier().verify(request.leaf, list(request.pool)).chain
    except VerificationError as error:
        return error


def _any_outside_validity(certs: Sequence[x509.Certificate], at: datetime) -> bool:
    return any(not c.not_valid_before_utc <= at <= c.not_valid_after_utc for c in certs)


def _usage_may_refuse(request: Request) -> bool:
    """Whether the relaxed policy could accept what the strict one refused:
    only if some certificate carries an (extended) key usage it relaxes."""
    if request.usage.key_usages:
        return True
    if _has_extension(request.leaf, x509.KeyUsage):
        return True
    return any(
        _has_extension(cert, x509.ExtendedKeyUsage)
        for cert in (request.leaf, *request.pool, *request.anchors)
    )


def _has_extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> bool:
    try:
        cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return False
    except Exception:
        # Unreadable extensions: the verifier refused for that; relaxing
        # usage would not change its mind.
        return False
    return True


def _probe_times(request: Request) -> tuple[datetime, ...]:
    """Instants inside the end entity's validity, to test for a time problem.

    The nearest instant to the validation time comes first, then the middle
    of the window every certificate overlapping the end entity shares (a
    chain's certificates are all valid there when they overlap at all),
    then the end entity's first and last second.
    """
    leaf = request.leaf
    low, high = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if low > high:
        return ()
    candidates = [min(max(request.at, low), high)]
    shared_low, shared_high = low, high
    for cert in (*request.pool, *request.anchors):
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if start <= high and end >= low:
            shared_low, shared_high = max(shared_low, start), min(shared_high, end)
    if shared_low <= shared_high:
        candidates.append(shared_low + (shared_high - shared_low) / 2)
    candidates += [min(low + _ONE_SECOND, high), max(high - _ONE_SECOND, low)]
    probes: list[datetime] = []
    for instant in candidates:
        if instant != request.at and instant not in probes:
            probes.append(instant)
    return tuple(probes)


def _unique(reasons: Sequence[Reason]) -> tuple[Reason, ...]:
    return tuple(dict.fromkeys(reasons))


class _RefusedError(Exception):
    """Raised by our extension validators; cryptography wraps it."""


_Validator = Callable[[Policy, x509.Certificate, x509.ExtensionType | None], None]


def _extension_policies(request: Request, *, relaxed: bool) -> tuple[ExtensionPolicy, ExtensionPolicy]:
    """(CA policy, EE policy): cryptography's web PKI defaults, adjusted.

    Built per request (a few microseconds): the CA key usage rule needs
    to know the request's anchors.
    """
    usage = request.usage
    server = request.server_subject is not None
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage_validator(request.anchors)
    )
    ee_policy = ExtensionPolicy.webpki_defaults_ee()
    if not relaxed and usage == (SERVER_USAGE if server else CLIENT_USAGE):
        # The verifier's own EKU and EE key usage rules are exactly these.
        return ca_policy, ee_policy
    if relaxed or not usage.ekus:
        ca_policy = ca_policy.may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
        ee_policy = ee_policy.may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
    else:
        ca_policy = ca_policy.may_be_present(
            x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_validator(usage.ekus, any_ok=True)
        )
        ee_policy = ee_policy.may_be_present(
            x509.ExtendedKeyUsage,
            Criticality.AGNOSTIC,
            _eku_validator(usage.ekus, any_ok=usage.any_eku_ok),
        )
    ee_policy = ee_policy.may_be_present(
        x509.KeyUsage,
        Criticality.AGNOSTIC,
        _ee_key_usage_validator(
            smime_signing=usage.smime_signing and not relaxed,
            required=frozenset() if relaxed else usage.key_usages,
        ),
    )
    if usage.san_optional:
        # Name constraints still apply to a SAN that is present: the
        # verifier checks them while building the path, not here.
        ee_policy = ee_policy.may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    return ca_policy, ee_policy


def _ca_key_usage_validator(anchors: Sequence[x509.Certificate]) -> _Validator:
    anchor_set = frozenset(anchors)

    def validate(_policy: Policy, cert: x509.Certificate, ext: x509.ExtensionType | None) -> None:
        if isinstance(ext, x509.KeyUsage):
            # RFC 5280 §4.2.1.9/§6.1.4 (n) and cryptography's default rule:
            # a certificate that signs certificates asserts keyCertSign.
            if not ext.key_cert_sign:
                raise _RefusedError("CA keyUsage lacks keyCertSign")
            return
        # RFC 5280 §4.2.1.3 makes keyUsage a MUST for CA certificates, and
        # cryptography requires it of every CA in the path, the anchor
        # included. But a trust anchor is an input to path validation, not
        # part of the path (RFC 5280 §6.1.1 (d): its name and key are what
        # counts), so an anchor without keyUsage is accepted.
        if cert not in anchor_set:
            raise _RefusedError("CA certificate without keyUsage")

    return validate


def _eku_validator(ekus: frozenset[x509.ObjectIdentifier], *, any_ok: bool) -> _Validator:
    accepted = set(ekus)
    if any_ok:
        accepted.add(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)

    def validate(_policy: Policy, _cert: x509.Certificate, ext: x509.ExtensionType | None) -> None:
        # RFC 5280 §4.2.1.12: without the extension the key may serve any
        # purpose; with it, only those listed. RFC 8550 §4.4.4: S/MIME
        # agents check for id-kp-emailProtection or anyExtendedKeyUsage.
        if isinstance(ext, x509.ExtendedKeyUsage) and not accepted.intersection(ext):
            raise _RefusedError("extended key usage does not allow this purpose")

    return validate


def _ee_key_usage_validator(*, smime_signing: bool, required: frozenset[str]) -> _Validator:
    def validate(_policy: Policy, _cert: x509.Certificate, ext: x509.ExtensionType | None) -> None:
        if not isinstance(ext, x509.KeyUsage):
            if required:
                raise _RefusedError("keyUsage missing")
            return
        # Kept from cryptography's default EE rule, which this replaces: an
        # end entity must not be a certificate signer (CA/B BR 7.1.2.7.11).
        if ext.key_cert_sign:
            raise _RefusedError("end entity asserts keyCertSign")
        # RFC 8550 §4.4.2: "If the key usage extension is present in an
        # end-entity certificate ... and the certificate is used to verify
        # signatures, then digitalSignature or nonRepudiation (or both)
        # MUST be set." (nonRepudiation is content_commitment here.)
        if smime_signing and not (ext.digital_signature or ext.content_commitment):
            raise _RefusedError("keyUsage allows no signatures")
        for bit in required:
            if not getattr(ext, bit, False):
                raise _RefusedError(f"keyUsage lacks {bit}")

    return validate
