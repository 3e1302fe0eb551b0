"""The one table from exceptions to gRPC status codes.

Every error leaves the service as a gRPC status with a
``google.rpc.ErrorInfo`` (domain ``secmail.v1``, a stable reason) and a
message safe to show: never a traceback, a key, a passphrase or content.
"""

from __future__ import annotations

import logging
import math
import traceback

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from secmail.errors import ErrorReason, RateLimitedError, SecmailError

DOMAIN = "secmail.v1"
log = logging.getLogger(__name__)

STATUS_OF_REASON: dict[ErrorReason, grpc.StatusCode] = {
    ErrorReason.INVALID_MESSAGE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorReason.MESSAGE_TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorReason.INVALID_KEY: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorReason.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorReason.INVALID_CERTIFICATE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorReason.UNSUPPORTED_ALGORITHM: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorReason.WRONG_PASSPHRASE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorReason.KEY_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorReason.TRUST_ANCHOR_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorReason.RECIPIENT_KEY_MISSING: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorReason.SENDER_MISMATCH: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorReason.ENCRYPTED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorReason.NOT_ENCRYPTED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorReason.KEY_UNUSABLE: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorReason.DECRYPTION_FAILED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorReason.INTEGRITY_CHECK_FAILED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorReason.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorReason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorReason.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorReason.REQUEST_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorReason.INTERNAL: grpc.StatusCode.INTERNAL,
}


def to_status(exc: BaseException) -> grpc.Status:
    """A rich gRPC status for any exception (unknown ones become INTERNAL)."""
    if isinstance(exc, SecmailError):
        reason, message, metadata = exc.reason, exc.message, exc.metadata
    else:
        # Unexpected: log the type only (the message could carry content),
        # and tell the client nothing more than that it failed.
        # Frames only: library messages can quote input bytes.
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error("internal error: %s\n%s", type(exc).__name__, frames)
        reason, message, metadata = ErrorReason.INTERNAL, "internal error", {}
    code = STATUS_OF_REASON[reason]
    info = error_details_pb2.ErrorInfo(reason=reason.value, domain=DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    if isinstance(exc, RateLimitedError):
        # The standard way to tell a gRPC client when to retry
        # (google/rpc/error_details.proto, RetryInfo).
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(max(1, math.ceil(exc.retry_after * 1000)))
        extra = any_pb2.Any()
        extra.Pack(retry)
        details.append(extra)
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name),
        message=message,
        details=details,
    )
    return rpc_status.to_status(status)
