"""The verification verdict: pure data, and the one place it is derived.

Engines (``secmail.smime``, ``secmail.pgp``) report *facts* about each
signer as :class:`SignerResult`; the MIME layer reports where the
cryptographic layers are (:class:`LayerFacts`). :func:`assemble_verdict`
is the only function that turns facts into the banner, the lock and the
overall status, for both schemes, so the rules cannot drift apart.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from secmail.policy import VerificationPolicy


class Scheme(enum.Enum):
    SMIME = "smime"
    OPENPGP = "openpgp"


class Banner(enum.Enum):
    NONE = "none"
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


class SignatureStatus(enum.Enum):
    UNSIGNED = "unsigned"
    VALID = "valid"
    INVALID = "invalid"
    INDETERMINATE = "indeterminate"


class Coverage(enum.IntEnum):
    """Ordered: a larger value covers more of the message."""

    NONE = 0
    BODY = 1
    BODY_AND_HEADERS = 2


class Severity(enum.Enum):
    """What a reason does to the banner."""

    #: The signature is broken or a certificate revoked: RED.
    INVALID = "invalid"
    #: The mathematics may hold but trust or identity does not: YELLOW.
    INDETERMINATE = "indeterminate"
    #: Reported for the reader, no effect on the banner.
    INFO = "info"


class Reason(enum.Enum):
    """Stable reason codes; the value is (code, severity).

    The code equals the proto enum name without its ``REASON_`` prefix and
    never changes.
    """

    BAD_SIGNATURE = ("BAD_SIGNATURE", Severity.INVALID)
    CERT_REVOKED = ("CERT_REVOKED", Severity.INVALID)
    UNTRUSTED_CHAIN = ("UNTRUSTED_CHAIN", Severity.INDETERMINATE)
    CERT_EXPIRED = ("CERT_EXPIRED", Severity.INDETERMINATE)
    CERT_NOT_YET_VALID = ("CERT_NOT_YET_VALID", Severity.INDETERMINATE)
    SENDER_MISMATCH = ("SENDER_MISMATCH", Severity.INDETERMINATE)
    SIGNER_KEY_MISSING = ("SIGNER_KEY_MISSING", Severity.INDETERMINATE)
    WEAK_ALGORITHM = ("WEAK_ALGORITHM", Severity.INDETERMINATE)
    REVOCATION_UNKNOWN = ("REVOCATION_UNKNOWN", Severity.INDETERMINATE)
    KEY_USAGE = ("KEY_USAGE", Severity.INDETERMINATE)
    FROM_AMBIGUOUS = ("FROM_AMBIGUOUS", Severity.INDETERMINATE)
    UNSUPPORTED_ALGORITHM = ("UNSUPPORTED_ALGORITHM", Severity.INDETERMINATE)
    MALFORMED_SIGNATURE = ("MALFORMED_SIGNATURE", Severity.INVALID)
    PROTECTED_HEADER_MISMATCH = ("PROTECTED_HEADER_MISMATCH", Severity.INDETERMINATE)
    PARTIAL_COVERAGE = ("PARTIAL_COVERAGE", Severity.INDETERMINATE)
    # Informational reasons: they never change the banner by themselves.
    INTEGRITY_NOT_PROTECTED = ("INTEGRITY_NOT_PROTECTED", Severity.INFO)
    ERRANT_CRYPTO_LAYER = ("ERRANT_CRYPTO_LAYER", Severity.INFO)
    SIGNING_TIME_SUSPICIOUS = ("SIGNING_TIME_SUSPICIOUS", Severity.INFO)
    CONTENT_NEUTRALISED = ("CONTENT_NEUTRALISED", Severity.INFO)
    SENDER_HEADER_IGNORED = ("SENDER_HEADER_IGNORED", Severity.INFO)

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def severity(self) -> Severity:
        return self.value[1]


def _status_from_reasons(reasons: Iterable[Reason]) -> SignatureStatus:
    severities = {r.severity for r in reasons}
    if Severity.INVALID in severities:
        return SignatureStatus.INVALID
    if Severity.INDETERMINATE in severities:
        return SignatureStatus.INDETERMINATE
    return SignatureStatus.VALID


@dataclass(frozen=True, slots=True)
class ChainCertificate:
    """One certificate of a validated chain, end entity first."""

    fingerprint: str
    subject: str


@dataclass(frozen=True, slots=True)
class SignerResult:
    """Facts about one signer, as an engine established them.

    ``crypto_valid`` says the signature mathematics held over the signed
    bytes with the key named; ``reasons`` lists everything that keeps the
    signer from being fully valid (empty when nothing is wrong).
    ``verified_addresses`` are the addresses bound to the verified key
    (empty unless ``crypto_valid``).
    """

    scheme: Scheme
    crypto_valid: bool
    reasons: tuple[Reason, ...] = ()
    verified_addresses: tuple[str, ...] = ()
    fingerprint: str = ""
    claimed_key_id: str = ""
    #: What the signer claims (CMS signingTime, OpenPGP creation time).
    claimed_signing_time: datetime | None = None
    chain: tuple[ChainCertificate, ...] = ()
    algorithm: str = ""

    def __post_init__(self) -> None:
        if not self.crypto_valid:
            if not any(r.severity is not Severity.INFO for r in self.reasons):
                raise ValueError("a signer that did not verify needs a reason")
            if self.verified_addresses:
                raise ValueError("an unverified signer has no verified addresses")

    @property
    def status(self) -> SignatureStatus:
        return _status_from_reasons(self.reasons)


@dataclass(frozen=True, slots=True)
class FromCheck:
    """The outcome of reading the single From mailbox of a message."""

    #: The addr-spec, normalised (domain lower-cased), or None.
    address: str | None
    #: Why no single address could be taken (FROM_AMBIGUOUS), if so.
    problem: Reason | None = None


@dataclass(frozen=True, slots=True)
class LayerFacts:
    """Where the message's cryptographic layers are and what they held."""

    #: Scheme of the root cryptographic layer, if any.
    scheme: Scheme | None
    #: The root layer was encrypted and was decrypted.
    lock: bool
    #: The decrypted content was integrity protected (AEAD/MDC).
    integrity_protected: bool
    #: A signature layer is at the root (or directly under root encryption).
    signed_at_root: bool
    #: Every signer found at the root signature layer.
    signers: tuple[SignerResult, ...]
    #: What the root signature covers if it is valid.
    coverage: Coverage
    #: The From mailbox the signer must be bound to.
    from_check: FromCheck
    #: Reasons about the message rather than one signer.
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    lock: bool
    banner: Banner
    signature: SignatureStatus
    coverage: Coverage
    signers: tuple[SignerResult, ...]
    reasons: tuple[Reason, ...]
    scheme: Scheme | None
    policy: str
    validation_time: datetime
    from_address: str | None
    integrity_protected: bool

    def summary(self) -> str:
        """A compact machine-parsable line, e.g. for logs and the CLI."""
        reasons = ",".join(r.code for r in self.reasons) or "-"
        return (
            f"banner={self.banner.value} lock={str(self.lock).lower()} "
            f"signature={self.signature.value} coverage={self.coverage.name} "
            f"reasons={reasons}"
        )


def decide_banner(
    *,
    signed: bool,
    any_invalid: bool,
    any_indeterminate: bool,
    sender_bound: bool,
    coverage: Coverage,
) -> Banner:
    """The banner rules, as a small pure function.

    GREEN needs a root signature where every signer verifies and is trusted,
    one of them bound to the single From address, covering at least the
    whole body. RED when anything is cryptographically broken or revoked.
    """
    if not signed:
        return Banner.NONE
    if any_invalid:
        return Banner.RED
    if any_indeterminate or not sender_bound or coverage < Coverage.BODY:
        return Banner.YELLOW
    return Banner.GREEN


_STATUS_OF_BANNER = {
    Banner.NONE: SignatureStatus.UNSIGNED,
    Banner.GREEN: SignatureStatus.VALID,
    Banner.YELLOW: SignatureStatus.INDETERMINATE,
    Banner.RED: SignatureStatus.INVALID,
}


def _unique(reasons: Iterable[Reason]) -> tuple[Reason, ...]:
    return tuple(dict.fromkeys(reasons))


def address_matches(from_address: str, candidates: Sequence[str]) -> bool:
    """RFC 5321 comparison: local part exact, domain case-insensitive.

    Both sides are expected in the normalised form of
    :func:`secmail.mime.addresses.normalise_addr_spec`.
    """
    from_local, _, from_domain = from_address.rpartition("@")
    for cand in candidates:
        local, _, domain = cand.rpartition("@")
        if local == from_local and domain.lower() == from_domain.lower() and local:
            return True
    return False


def assemble_verdict(facts: LayerFacts, *, policy: VerificationPolicy, evaluated_at: datetime) -> Verdict:
    """Derive every verdict field from the facts, for both schemes."""
    message_reasons: list[Reason] = list(facts.reasons)
    signers = facts.signers
    signed = facts.signed_at_root and bool(signers)
    if facts.signed_at_root and not signers:
        # Zero SignerInfos (or an empty OpenPGP signature block): a
        # signature-shaped layer that nobody signed is never "signed".
        message_reasons.append(Reason.MALFORMED_SIGNATURE)

    sender_bound = False
    if signed:
        if facts.from_check.problem is not None:
            message_reasons.append(facts.from_check.problem)
        elif facts.from_check.address is not None:
            sender_bound = any(
                s.crypto_valid and address_matches(facts.from_check.address, s.verified_addresses)
                for s in signers
            )
            if not sender_bound and all(s.crypto_valid for s in signers):
                message_reasons.append(Reason.SENDER_MISMATCH)
        else:
            message_reasons.append(Reason.FROM_AMBIGUOUS)

    signer_reasons = [r for s in signers for r in s.reasons]
    all_reasons = _unique([*message_reasons, *signer_reasons])
    # Message-level reasons count only while a signature is being judged; an
    # unsigned message is NONE whatever else is wrong with it.
    judged = all_reasons if signed else ()
    # A signer is INVALID only through an INVALID reason, which `judged` holds.
    any_invalid = any(r.severity is Severity.INVALID for r in judged)
    any_indeterminate = any(r.severity is Severity.INDETERMINATE for r in judged)
    coverage = facts.coverage if signed else Coverage.NONE
    banner = decide_banner(
        signed=signed,
        any_invalid=any_invalid,
        any_indeterminate=any_indeterminate,
        sender_bound=sender_bound,
        coverage=coverage,
    )
    return Verdict(
        lock=facts.lock,
        banner=banner,
        signature=_STATUS_OF_BANNER[banner],
        coverage=coverage,
        signers=signers,
        reasons=all_reasons,
        scheme=facts.scheme,
        policy=policy.name,
        validation_time=evaluated_at,
        from_address=facts.from_check.address,
        integrity_protected=facts.integrity_protected,
    )


@dataclass(frozen=True, slots=True)
class ProcessedMessage:
    """A verdict and the bytes the webmail must display."""

    verdict: Verdict
    display_message: bytes
