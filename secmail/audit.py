"""Audit events: who did what with which key, when, and the outcome.

Never content, never secrets. The service records every private-key use,
key import/delete, trust change and permission denial through an
:class:`AuditSink`; the SQL store keeps them (``secmail audit`` queries
them).
"""

from __future__ import annotations

import enum
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

log = logging.getLogger("secmail.audit")


class AuditAction(enum.Enum):
    SIGN = "sign"
    DECRYPT = "decrypt"
    ENCRYPT = "encrypt"
    KEY_IMPORT = "key.import"
    KEY_DELETE = "key.delete"
    TRUST_IMPORT = "trust.import"
    TRUST_REMOVE = "trust.remove"
    CRL_IMPORT = "crl.import"
    PERMISSION_DENIED = "permission.denied"
    MASTER_KEY_ROTATE = "masterkey.rotate"


class AuditOutcome(enum.Enum):
    OK = "ok"
    DENIED = "denied"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: AuditAction
    outcome: AuditOutcome
    #: The authenticated caller (certificate subject, token name) or "local".
    caller: str
    #: The mailbox acted for, if any.
    user: str = ""
    #: The key or trust anchor concerned (ids only).
    key_id: str = ""
    #: A stable error reason when the outcome is not OK.
    reason: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class AuditSink(Protocol):
    def record(self, event: AuditEvent) -> None: ...


class LogAuditSink:
    """Writes events to the ``secmail.audit`` logger (the default sink)."""

    def record(self, event: AuditEvent) -> None:
        log.info(
            "audit action=%s outcome=%s caller=%s user=%s key=%s reason=%s",
            event.action.value,
            event.outcome.value,
            event.caller,
            event.user,
            event.key_id,
            event.reason,
        )


#: The authenticated caller of the request being served; "local" when none
#: is set (CLI tools, development mode). The access interceptor sets it for
#: each call; :class:`secmail.service.app.Secmail` stamps it on its events.
current_caller: ContextVar[str] = ContextVar("secmail_audit_caller", default="local")
