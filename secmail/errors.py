"""The exceptions of secmail.

Exceptions mean misuse or input that cannot be evaluated; a verification
outcome (bad signature, untrusted chain...) is never an exception but a
:class:`secmail.verdict.Verdict`. Every exception carries a stable
:class:`ErrorReason`; ``secmail/service/status.py`` maps them to gRPC status
codes in one table.

Messages must never contain private key material, passphrases or plaintext.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence


class ErrorReason(enum.Enum):
    """Stable machine-readable reasons, sent as ``google.rpc.ErrorInfo.reason``."""

    INVALID_MESSAGE = "INVALID_MESSAGE"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    RECIPIENT_KEY_MISSING = "RECIPIENT_KEY_MISSING"
    WRONG_PASSPHRASE = "WRONG_PASSPHRASE"
    INTEGRITY_CHECK_FAILED = "INTEGRITY_CHECK_FAILED"
    UNSUPPORTED_ALGORITHM = "UNSUPPORTED_ALGORITHM"
    SENDER_MISMATCH = "SENDER_MISMATCH"
    ENCRYPTED = "ENCRYPTED"
    NOT_ENCRYPTED = "NOT_ENCRYPTED"
    DECRYPTION_FAILED = "DECRYPTION_FAILED"
    INVALID_KEY = "INVALID_KEY"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    INVALID_CERTIFICATE = "INVALID_CERTIFICATE"
    TRUST_ANCHOR_NOT_FOUND = "TRUST_ANCHOR_NOT_FOUND"
    KEY_UNUSABLE = "KEY_UNUSABLE"
    #: The caller is known but lacks the right (ErrorInfo metadata: rpc, right).
    PERMISSION_DENIED = "PERMISSION_DENIED"
    #: No valid client certificate or bearer token names a configured caller.
    UNAUTHENTICATED = "UNAUTHENTICATED"
    #: The caller's request rate is over its limit (metadata: retry_after_seconds).
    RATE_LIMITED = "RATE_LIMITED"
    #: The request is larger than the caller's limit (metadata: limit).
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    INTERNAL = "INTERNAL"


class SecmailError(Exception):
    """Root of secmail's exceptions.

    ``message`` is safe to show to a client: it never holds secrets or content.
    ``metadata`` goes into ``ErrorInfo.metadata`` (string values only).
    """

    reason: ErrorReason = ErrorReason.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: ErrorReason | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class InputError(SecmailError):
    """The input is unreadable: malformed MIME, broken ASN.1, bad armor..."""

    reason = ErrorReason.INVALID_MESSAGE


class MessageTooLargeError(InputError):
    """The message or one of its structures exceeds a configured limit."""

    reason = ErrorReason.MESSAGE_TOO_LARGE


class InvalidKeyError(InputError):
    """Key or certificate material that cannot be parsed or used."""

    reason = ErrorReason.INVALID_KEY


class UnsupportedAlgorithmError(SecmailError):
    """An algorithm secmail does not implement or refuses by policy."""

    reason = ErrorReason.UNSUPPORTED_ALGORITHM


class WrongPassphraseError(SecmailError):
    """The passphrase does not open the PKCS#12 file or protected key."""

    reason = ErrorReason.WRONG_PASSPHRASE


class KeyNotFoundError(SecmailError):
    """No (usable) key for the user, or no key with that id."""

    reason = ErrorReason.KEY_NOT_FOUND


class RecipientKeyMissingError(SecmailError):
    """Some recipients have no usable certificate; nothing was encrypted."""

    reason = ErrorReason.RECIPIENT_KEY_MISSING

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = tuple(missing)
        super().__init__(
            "no usable certificate for: " + ", ".join(self.missing),
            metadata={"missing": ",".join(self.missing)},
        )


class SenderMismatchError(SecmailError):
    """The From addr-spec is not an address of the signing certificate."""

    reason = ErrorReason.SENDER_MISMATCH


class EncryptedMessageError(SecmailError):
    """Verify was called on a message whose root layer is encrypted."""

    reason = ErrorReason.ENCRYPTED


class DecryptionError(SecmailError):
    """Decryption failed. One generic message: no oracle on the cause."""

    reason = ErrorReason.DECRYPTION_FAILED


class IntegrityError(DecryptionError):
    """The ciphertext is not integrity protected or its check failed.

    No plaintext is ever released with this error.
    """

    reason = ErrorReason.INTEGRITY_CHECK_FAILED


class NotFoundError(SecmailError):
    """A named object (trust anchor, key) does not exist."""

    reason = ErrorReason.KEY_NOT_FOUND


class UnauthenticatedError(SecmailError):
    """The call carries no credential that names a configured caller."""

    reason = ErrorReason.UNAUTHENTICATED


class PermissionDeniedError(SecmailError):
    """The caller is authenticated but may not do this (for this user)."""

    reason = ErrorReason.PERMISSION_DENIED


class RateLimitedError(SecmailError):
    """Too many requests from this caller.

    ``retry_after`` (seconds) also goes to the metadata as whole seconds,
    rounded up, as HTTP's Retry-After counts them; the status carries the
    exact delay in a ``google.rpc.RetryInfo``.
    """

    reason = ErrorReason.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: float, metadata: dict[str, str] | None = None) -> None:
        self.retry_after = max(retry_after, 0.0)
        seconds = max(1, math.ceil(self.retry_after))
        super().__init__(message, metadata={**(metadata or {}), "retry_after_seconds": str(seconds)})


class RequestTooLargeError(SecmailError):
    """The request exceeds the caller's configured size limit."""

    reason = ErrorReason.REQUEST_TOO_LARGE
