"""Verification policy: data with a name, returned in every verdict.

Algorithm strength is judged at validation time, never at the time the
signer claims (an attacker can backdate a signature made with a broken
algorithm; Sequoia's policy makes the same point).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta


class RevocationMode(enum.Enum):
    #: Revocation is checked when information is at hand; unknown is fine.
    SOFT_FAIL = "soft-fail"
    #: Unknown revocation status keeps the banner from GREEN.
    HARD_FAIL = "hard-fail"


@dataclass(frozen=True, slots=True)
class AlgorithmPolicy:
    """Which algorithms may confer a GREEN banner."""

    #: Digest names (``hashlib``/``cryptography`` spelling) acceptable in
    #: signatures.
    signature_digests: frozenset[str] = frozenset(
        {"sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512", "sha224"}
    )
    #: Minimum RSA modulus for signatures and encryption keys.
    min_rsa_bits: int = 2048
    #: Content-encryption algorithms whose use is reported as weak.
    weak_ciphers: frozenset[str] = frozenset({"rc2", "des", "tripledes_3key", "3des", "rc4", "cast5", "idea"})


@dataclass(frozen=True, slots=True)
class VerificationPolicy:
    name: str
    algorithms: AlgorithmPolicy = field(default_factory=AlgorithmPolicy)
    revocation: RevocationMode = RevocationMode.SOFT_FAIL
    #: A claimed signing time further than this from the Date header (or in
    #: the future of the validation time) is reported, not punished.
    signing_time_tolerance: timedelta = timedelta(hours=24)


#: The default policy: RFC 8551 "MUST" algorithms and up, SHA-1 and MD5
#: never GREEN, RSA under 2048 bits never GREEN, soft-fail revocation.
DEFAULT_POLICY = VerificationPolicy(name="secmail-default-2026")
