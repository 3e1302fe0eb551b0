"""Explicit inputs of a verification: time, policy and what is trusted.

Nothing in the engines reads the clock or the store by itself; the service
builds one :class:`VerifyContext` per request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography import x509

from secmail.policy import RevocationMode, VerificationPolicy

if TYPE_CHECKING:
    from secmail.trust.revocation import RevocationChecker


@dataclass(frozen=True, slots=True)
class TrustContext:
    """X.509 trust for S/MIME path validation."""

    anchors: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    revocation: RevocationMode = RevocationMode.SOFT_FAIL
    #: Further revocation sources, asked after ``crls`` (e.g. OCSP and
    #: fetched CRLs, ``secmail.trust.ocsp`` / ``secmail.trust.revocation``).
    #: Empty: offline, imported CRLs only.
    checkers: tuple[RevocationChecker, ...] = ()


@dataclass(frozen=True, slots=True)
class PGPCandidate:
    """An OpenPGP certificate that may have made a signature."""

    #: Binary or armored transferable public key.
    cert: bytes
    #: Imported by the user (or an admin for everyone) as a known
    #: correspondent key, or certified by an OpenPGP trust-anchor key.
    authenticated: bool


#: Looks up candidate certificates by key ID or fingerprint (hex, any case).
PGPLookup = Callable[[str], Sequence[PGPCandidate]]


def _no_pgp_certs(_key_id: str) -> Sequence[PGPCandidate]:
    return ()


@dataclass(frozen=True, slots=True)
class VerifyContext:
    #: The time at which validity is judged (the request's validation_time).
    at: datetime
    policy: VerificationPolicy
    trust: TrustContext = field(default_factory=TrustContext)
    pgp_lookup: PGPLookup = _no_pgp_certs
