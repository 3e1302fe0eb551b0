"""X.509 path validation: S/MIME signers, and a general entry point.

:func:`validate_email_signer` is what the S/MIME engine calls;
:func:`validate_chain` exposes the same machinery with the knobs a
conformance suite (x509-limbo) needs. Both build on cryptography's
verifier and add revocation, the algorithm policy and failure naming (see
``secmail.trust._engine``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from secmail._lru import BoundedLRU, der_weight
from secmail.context import TrustContext
from secmail.policy import AlgorithmPolicy, RevocationMode, VerificationPolicy
from secmail.trust import _engine
from secmail.trust._pathcache import PathCache
from secmail.trust.revocation import CRLChecker, RevocationChecker, shared_crl_checker
from secmail.verdict import Reason

__all__ = ["ChainOutcome", "PathResult", "validate_chain", "validate_email_signer"]


@dataclass(frozen=True, slots=True)
class PathResult:
    """The outcome of validating a signer certificate for e-mail protection.

    ``chain`` is end entity first, anchor last, empty when no path to an
    anchor was found; ``reasons`` is empty when the chain is fully valid.
    """

    chain: tuple[x509.Certificate, ...]
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class ChainOutcome:
    """The outcome of :func:`validate_chain`.

    ``ok`` is true exactly when ``reasons`` is empty. ``chain`` is end
    entity first, anchor last, when a path to an anchor was found (even
    one with problems, e.g. expired); ``detail`` is for people only.
    """

    ok: bool
    chain: tuple[x509.Certificate, ...]
    reasons: tuple[Reason, ...]
    detail: str


#: Paths :func:`validate_email_signer` found, reused within their
#: validity window (see ``secmail.trust._pathcache``): a correspondent's
#: messages all carry the same certificates.
SIGNER_PATHS = PathCache(maxsize=512)


def validate_email_signer(
    cert: x509.Certificate,
    extra_certs: Sequence[x509.Certificate],
    trust: TrustContext,
    *,
    at: datetime,
    policy: VerificationPolicy,
) -> PathResult:
    """Validate an S/MIME signer's certificate at ``at``.

    Intermediates come from the message (``extra_certs``) and from
    ``trust.intermediates``. The certificate must be usable to sign mail
    (RFC 8550 §4.4.2 key usage, §4.4.4 extended key usage); no address is
    matched here (the verdict compares the From header with the
    certificate's addresses). Revocation is judged from ``trust.crls`` and
    ``trust.checkers`` (OCSP, fetched CRLs), hard-fail when either the
    trust context or the policy asks for it. A certificate that is itself
    an anchor (a correspondent's certificate trusted directly) is its own
    one-element chain, with nothing to check for revocation.
    Never raises for bad certificates: a failure is a reason.
    """
    hard = RevocationMode.HARD_FAIL in (trust.revocation, policy.revocation)
    try:
        request = _engine.Request(
            leaf=cert,
            pool=_signer_pool(cert, extra_certs, trust.intermediates),
            anchors=_distinct(trust.anchors).certs,
            at=_engine.as_utc(at),
            usage=_engine.SMIME_SIGNING_USAGE,
            # One checker per trust snapshot's CRLs: its memoised CRL
            # signature checks then serve every message.
            checkers=(shared_crl_checker(trust.crls), *trust.checkers),
            revocation=RevocationMode.HARD_FAIL if hard else RevocationMode.SOFT_FAIL,
            algorithms=policy.algorithms,
        )
        evaluation = _engine.evaluate(request, cache=SIGNER_PATHS)
    except Exception:
        # Fail closed: an input that trips the machinery is not trusted.
        return PathResult((), (Reason.UNTRUSTED_CHAIN,))
    return PathResult(evaluation.chain, evaluation.reasons)


class _Default:
    """Marks "the purpose's usual extended key usage"."""


_PURPOSE_DEFAULT = _Default()

_EKU_NAMES: dict[str, x509.ObjectIdentifier] = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
    "anyExtendedKeyUsage": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}

_KEY_USAGE_NAMES: dict[str, str] = {
    "digitalSignature": "digital_signature",
    "contentCommitment": "content_commitment",
    "nonRepudiation": "content_commitment",
    "keyEncipherment": "key_encipherment",
    "dataEncipherment": "data_encipherment",
    "keyAgreement": "key_agreement",
    "keyCertSign": "key_cert_sign",
    "cRLSign": "crl_sign",
    "encipherOnly": "encipher_only",
    "decipherOnly": "decipher_only",
}


def validate_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    at: datetime,
    purpose: Literal["email", "server", "client"],
    email: str | None = None,
    dns_name: str | None = None,
    ip: str | None = None,
    max_depth: int | None = None,
    crls: Iterable[x509.CertificateRevocationList] = (),
    require_revocation: bool = False,
    extended_key_usages: Collection[str | x509.ObjectIdentifier] | _Default = _PURPOSE_DEFAULT,
    key_usages: Collection[str] = (),
    algorithms: AlgorithmPolicy | None = None,
    revocation_checkers: Sequence[RevocationChecker] = (),
) -> ChainOutcome:
    """Validate ``leaf`` for ``purpose`` at ``at``; the general entry point.

    - ``purpose="server"``: TLS server; exactly one of ``dns_name``/``ip``
      must match the subjectAltName (cryptography's server verifier).
    - ``purpose="client"``: TLS client; ``email``, when given, must be an
      rfc822Name of the subjectAltName.
    - ``purpose="email"``: S/MIME signer, as :func:`validate_email_signer`;
      ``email``, when given, must be an rfc822Name of the subjectAltName.

    ``extended_key_usages`` replaces the purpose's usual EKU (serverAuth,
    clientAuth, emailProtection) with a set, by OID or RFC 5280 name; an
    empty collection removes the EKU requirement. ``key_usages`` lists
    keyUsage bits (RFC 5280 names) the end entity must assert.
    ``require_revocation`` makes unknown revocation status a failure.
    ``algorithms`` adds the algorithm policy (None: cryptography's own
    limits only). Never raises for bad certificates.
    """
    try:
        request = _engine.Request(
            leaf=leaf,
            pool=_pool(leaf, intermediates),
            anchors=tuple(dict.fromkeys(anchors)),
            at=_engine.as_utc(at),
            usage=_usage(purpose, extended_key_usages, key_usages),
            server_subject=_server_subject(purpose, dns_name, ip),
            email=email,
            max_depth=max_depth,
            checkers=(CRLChecker(crls), *revocation_checkers),
            revocation=RevocationMode.HARD_FAIL if require_revocation else RevocationMode.SOFT_FAIL,
            algorithms=algorithms,
        )
    except (ValueError, TypeError, KeyError) as error:
        return ChainOutcome(False, (), (Reason.UNTRUSTED_CHAIN,), f"bad request: {error}")
    try:
        evaluation = _engine.evaluate(request)
    except Exception as error:
        return ChainOutcome(False, (), (Reason.UNTRUSTED_CHAIN,), f"internal error: {type(error).__name__}")
    return ChainOutcome(not evaluation.reasons, evaluation.chain, evaluation.reasons, evaluation.detail)


def _pool(leaf: x509.Certificate, certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    return tuple(cert for cert in dict.fromkeys(certs) if cert != leaf)


@dataclass(frozen=True, slots=True)
class _Distinct:
    #: The certificates without repeats (by value), first occurrences kept.
    certs: tuple[x509.Certificate, ...]
    #: Each of ``certs`` by itself, to find the one equal to another object.
    by_value: dict[x509.Certificate, x509.Certificate]
    #: The objects the memo key names by id, kept alive with the entry.
    pinned: tuple[x509.Certificate, ...]


#: Trust-store certificate lists, by the ids of their objects: a trust
#: snapshot's are few, and live as long as the snapshot does.
_distinct_memo: BoundedLRU[_Distinct] = BoundedLRU(16, 16)


def _distinct(certs: Sequence[x509.Certificate]) -> _Distinct:
    """``dict.fromkeys(certs)``, memoised by the identities of ``certs``.

    Comparing certificates by value hashes their DER: ~1.5 µs each, which
    for a trust store of a few hundred certificates would be paid on every
    message. A trust snapshot hands out the same objects until it changes
    (``secmail.trust.interned``), so the result is kept per tuple of object
    ids (the entry pins the objects: their ids cannot be reused while it
    exists). Bounded (LRU).
    """
    key = tuple(map(id, certs))
    found = _distinct_memo.get(key)
    if found is not None:
        return found
    distinct = tuple(dict.fromkeys(certs))  # keeps each first occurrence
    return _distinct_memo.put(key, _Distinct(distinct, {cert: cert for cert in distinct}, tuple(certs)))


#: Path candidates by the ids of (leaf, message certificates, trust-store
#: intermediates), with those objects pinned. Bounded in entries and in the
#: DER size of the message certificates kept alive.
_pool_memo: BoundedLRU[tuple[object, tuple[x509.Certificate, ...]]] = BoundedLRU(256, 8 << 20)


def _signer_pool(
    leaf: x509.Certificate,
    message_certs: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
) -> tuple[x509.Certificate, ...]:
    """``_pool(leaf, (*message_certs, *trusted))``, memoised by the
    identities of its inputs (pinned by the entry, as in :func:`_distinct`):
    a correspondent's messages bring the same certificate objects (see
    ``secmail.smime._certs``)."""
    key = (id(leaf), tuple(map(id, message_certs)), tuple(map(id, trusted)))
    found = _pool_memo.get(key)
    if found is not None:
        return found[1]
    pool = _compute_signer_pool(leaf, message_certs, trusted)
    pins = (leaf, tuple(message_certs), tuple(trusted))
    _pool_memo.put(key, (pins, pool), der_weight(leaf, *message_certs))
    return pool


def _compute_signer_pool(
    leaf: x509.Certificate,
    message_certs: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
) -> tuple[x509.Certificate, ...]:
    """``_pool(leaf, (*message_certs, *trusted))`` without hashing every
    certificate of ``trusted`` (a trust snapshot's intermediates) again."""
    known = _distinct(trusted)
    first = tuple(cert for cert in dict.fromkeys(message_certs) if cert != leaf)
    # A trusted certificate equal to the leaf or to a message certificate
    # is left out, as dict.fromkeys over the concatenation would.
    shadowed = {id(same) for cert in (leaf, *first) if (same := known.by_value.get(cert)) is not None}
    if not shadowed:
        return (*first, *known.certs)
    return (*first, *(cert for cert in known.certs if id(cert) not in shadowed))


def _usage(
    purpose: str,
    ekus: Collection[str | x509.ObjectIdentifier] | _Default,
    key_usages: Collection[str],
) -> _engine.Usage:
    base = {
        "email": _engine.SMIME_SIGNING_USAGE,
        "server": _engine.SERVER_USAGE,
        "client": _engine.CLIENT_USAGE,
    }.get(purpose)
    if base is None:
        raise ValueError(f"unknown purpose {purpose!r}")
    bits = frozenset(_KEY_USAGE_NAMES[name] for name in key_usages)
    if isinstance(ekus, _Default):
        return _replace_usage(base, ekus=base.ekus, key_usages=bits)
    oids = frozenset(_EKU_NAMES[e] if isinstance(e, str) else e for e in ekus)
    return _replace_usage(base, ekus=oids, key_usages=bits)


def _replace_usage(
    base: _engine.Usage,
    *,
    ekus: frozenset[x509.ObjectIdentifier],
    key_usages: frozenset[str],
) -> _engine.Usage:
    return _engine.Usage(
        ekus=ekus,
        any_eku_ok=base.any_eku_ok,
        smime_signing=base.smime_signing,
        key_usages=key_usages,
        san_optional=base.san_optional,
    )


def _server_subject(
    purpose: str, dns_name: str | None, ip: str | None
) -> x509.DNSName | x509.IPAddress | None:
    if purpose != "server":
        if dns_name is not None or ip is not None:
            raise ValueError("dns_name and ip only apply to purpose='server'")
        return None
    if (dns_name is None) == (ip is None):
        raise ValueError("purpose='server' needs exactly one of dns_name or ip")
    if dns_name is not None:
        return x509.DNSName(dns_name)
    assert ip is not None
    return x509.IPAddress(ipaddress.ip_address(ip))
