"""Who is calling, and may they do this for this user.

:class:`AccessInterceptor` runs before every handler. It

1. identifies the caller: a bearer token (``authorization: Bearer <t>``
   metadata, for backends behind a TLS-terminating proxy) when one is
   sent, else the client certificate the TLS handshake verified against
   ``--tls-client-ca``;
2. applies the caller's rate and request-size limits (limits.py);
3. checks the RPC against :data:`RULES` and, for RPCs that act for a
   mailbox, the request's ``user`` against the caller's domains.

Failures leave as UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED
with a ``google.rpc.ErrorInfo`` (status.py). Every permission denial is
recorded as an audit event.

Without a callers file (local development, loopback only — server.py
refuses anything else) every caller is :data:`LOCAL_CALLER`: admin and
webmail for every domain, with no limits.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from cryptography import x509

from secmail.audit import AuditAction, AuditEvent, AuditOutcome, AuditSink, current_caller
from secmail.errors import ErrorReason, InputError, PermissionDeniedError, SecmailError, UnauthenticatedError
from secmail.keystore.api import EVERYONE
from secmail.mime.addresses import normalise_addr_spec
from secmail.service.config import CallerConfig, CallersConfig, Limits, Role, token_sha256
from secmail.service.limits import RateLimiter, check_request_size
from secmail.service.status import to_status
from secmail.v1 import keys_pb2, message_security_pb2, trust_pb2

__all__ = ["LOCAL_CALLER", "RULES", "AccessInterceptor", "Caller", "CallerResolver", "Rule"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    """An identified caller and what it holds."""

    name: str
    roles: frozenset[Role]
    domains: frozenset[str]
    #: Every domain (the development-mode caller only).
    all_domains: bool = False
    limits: Limits = field(default_factory=Limits)

    def acts_for(self, domain: str) -> bool:
        return self.all_domains or domain in self.domains


#: The caller of a server without a callers file (loopback development).
LOCAL_CALLER = Caller("local", frozenset({Role.ADMIN, Role.WEBMAIL}), frozenset(), all_domains=True)


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may call an RPC."""

    #: The right, as reported when it is missing ("sign", "decrypt"...).
    right: str
    #: Roles that hold the right. Empty: any caller, even unidentified.
    roles: frozenset[Role]
    #: The request acts for ``request.user``: the right holds only for
    #: users of the caller's domains (ADMIN: every user, EVERYONE included).
    per_user: bool = True
    #: Any identified caller may call it (reflection).
    any_caller: bool = False


def _methods(descriptor: Any, service: str) -> dict[str, str]:
    full = descriptor.services_by_name[service].full_name
    return {m.name: f"/{full}/{m.name}" for m in descriptor.services_by_name[service].methods}


_MESSAGES = _methods(message_security_pb2.DESCRIPTOR, "MessageSecurity")
_KEYS = _methods(keys_pb2.DESCRIPTOR, "KeyService")
_TRUST = _methods(trust_pb2.DESCRIPTOR, "TrustService")

_WEBMAIL_GATEWAY = frozenset({Role.WEBMAIL, Role.GATEWAY})

#: The access table: every RPC of the secmail services must be here (a
#: missing one is refused, and tests/service/test_tls_auth.py checks that
#: none is missing).
RULES: dict[str, Rule] = {
    _MESSAGES["Sign"]: Rule("sign", _WEBMAIL_GATEWAY),
    _MESSAGES["Encrypt"]: Rule("encrypt", _WEBMAIL_GATEWAY),
    _MESSAGES["Verify"]: Rule("verify", _WEBMAIL_GATEWAY),
    # Only the webmail shows plaintext to its own authenticated user; a
    # gateway decrypting would be a bulk decryption service.
    _MESSAGES["Decrypt"]: Rule("decrypt", frozenset({Role.WEBMAIL})),
    # Keys of a mailbox: its webmail, or an admin; keys for EVERYONE: admins.
    **{
        _KEYS[name]: Rule("manage keys", frozenset({Role.WEBMAIL, Role.ADMIN}))
        for name in ("ImportKey", "ListKeys", "DeleteKey", "ExportPublicKey")
    },
    # Trust is site-wide: every TrustService RPC is for admins.
    **{method: Rule("manage trust", frozenset({Role.ADMIN}), per_user=False) for method in _TRUST.values()},
    # Health answers everyone: it is also served in plaintext on
    # --health-address, for probes that cannot present a certificate.
    "/grpc.health.v1.Health/Check": Rule("health", frozenset(), per_user=False),
    "/grpc.health.v1.Health/Watch": Rule("health", frozenset(), per_user=False),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Rule(
        "reflection", frozenset(), per_user=False, any_caller=True
    ),
}


class CallerResolver:
    """Maps a call's credentials to a configured :class:`Caller`."""

    def __init__(self, config: CallersConfig) -> None:
        self._by_token = [(c.token_sha256, c) for c in config.callers if c.token_sha256 is not None]
        self._by_cert = [c for c in config.callers if c.by_certificate]
        self._cert_cache: dict[bytes, Caller | None] = {}
        self._lock = threading.Lock()

    def resolve(self, context: grpc.ServicerContext) -> Caller:
        token = _bearer_token(context.invocation_metadata() or ())
        if token is not None:
            # A token, when sent, decides: a bad one is refused even over a
            # connection with a valid certificate, so nothing downgrades.
            return self._from_token(token)
        pem = _peer_certificate(context)
        if pem is None:
            raise UnauthenticatedError(
                "no client certificate or bearer token: this server needs one",
                metadata={"hint": "authorization: Bearer <token>, or a client certificate"},
            )
        with self._lock:
            if pem in self._cert_cache:
                cached = self._cert_cache[pem]
                if cached is None:
                    raise UnauthenticatedError("the client certificate names no configured caller")
                return cached
        caller = self._from_certificate(pem)
        with self._lock:
            if len(self._cert_cache) >= 256:
                self._cert_cache.clear()
            self._cert_cache[pem] = caller
        if caller is None:
            raise UnauthenticatedError("the client certificate names no configured caller")
        return caller

    def _from_token(self, token: str) -> Caller:
        digest = token_sha256(token)
        found: CallerConfig | None = None
        # Compare with every configured hash, without stopping at a match,
        # so the time taken says nothing about which token came close.
        for expected, config in self._by_token:
            if hmac.compare_digest(digest, expected):
                found = config
        if found is None:
            raise UnauthenticatedError("the bearer token is not valid")
        return _caller(found)

    def _from_certificate(self, pem: bytes) -> Caller | None:
        try:
            cert = x509.load_pem_x509_certificate(pem)
            subject = cert.subject
            sans = _san_values(cert)
        except ValueError:
            log.warning("unreadable client certificate in the TLS auth context")
            return None
        matches = [c for c in self._by_cert if _cert_matches(c, subject, sans)]
        if len(matches) > 1:
            # Two entries for one certificate: taking the union of their
            # rights, or either one, would be a guess. Refuse.
            log.error(
                "client certificate %s matches several callers: %s",
                subject.rfc4514_string(),
                ", ".join(c.name for c in matches),
            )
            return None
        if not matches:
            log.info("client certificate %s matches no caller", subject.rfc4514_string())
            return None
        return _caller(matches[0])


def _caller(config: CallerConfig) -> Caller:
    return Caller(config.name, config.roles, config.domains, limits=config.limits)


def _bearer_token(metadata: Iterable[tuple[str, Any]]) -> str | None:
    for key, value in metadata:
        if key != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        # RFC 6750 §2.1 / RFC 9110 §11.1: the scheme is case-insensitive.
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("the authorization metadata is not 'Bearer <token>'")
        return token.strip()
    return None


def _peer_certificate(context: grpc.ServicerContext) -> bytes | None:
    auth = context.auth_context() or {}
    # Present only when the handshake verified a client certificate
    # (server.py requires one whenever --tls-client-ca is given).
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    pems = auth.get("x509_pem_cert") or []
    return bytes(pems[0]) if pems else None


def _san_values(cert: x509.Certificate) -> tuple[frozenset[str], frozenset[str]]:
    """(case-insensitive DNS and e-mail SANs, lower-cased; exact URI and IP SANs)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(), frozenset()
    folded = {v.lower() for v in san.get_values_for_type(x509.DNSName)}
    folded |= {v.lower() for v in san.get_values_for_type(x509.RFC822Name)}
    exact = set(san.get_values_for_type(x509.UniformResourceIdentifier))
    exact |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return frozenset(folded), frozenset(exact)


def _cert_matches(
    config: CallerConfig, subject: x509.Name, sans: tuple[frozenset[str], frozenset[str]]
) -> bool:
    if config.cert_subject is not None and config.cert_subject != subject:
        return False
    if config.cert_san:
        folded, exact = sans
        if not any(s.lower() in folded or s in exact for s in config.cert_san):
            return False
    return True


class AccessInterceptor(grpc.ServerInterceptor):
    """Authentication, limits and authorization for every RPC."""

    def __init__(
        self,
        callers: CallersConfig | None,
        *,
        audit: Callable[[], AuditSink],
        limiter: RateLimiter | None = None,
    ) -> None:
        self._resolver = CallerResolver(callers) if callers is not None else None
        self._audit = audit
        self._limiter = limiter or RateLimiter()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        rule = RULES.get(method)

        def check(request: Any, context: grpc.ServicerContext) -> Caller | None:
            return self._check(method, rule, request, context)

        return _guarded(handler, check)

    def _check(
        self, method: str, rule: Rule | None, request: Any, context: grpc.ServicerContext
    ) -> Caller | None:
        """The caller, once allowed (None for RPCs open to everyone)."""
        if rule is not None and not rule.roles and not rule.any_caller:
            return None  # health
        caller = self._resolver.resolve(context) if self._resolver is not None else LOCAL_CALLER
        self._limiter.check(caller.name, caller.limits)
        if request is not None:
            check_request_size(caller.name, request.ByteSize(), caller.limits)
        if rule is None:
            self._deny(caller, method, "call", "", "no access rule for this RPC")
        if rule.any_caller:
            return caller
        user = ""
        if rule.per_user:
            user = str(getattr(request, "user", ""))
        if not caller.roles & rule.roles:
            self._deny(caller, method, rule.right, user, f"needs the role {_role_names(rule.roles)}")
        if not rule.per_user or Role.ADMIN in caller.roles & rule.roles:
            return caller
        if user == EVERYONE:
            self._deny(caller, method, rule.right, user, "keys for everyone need the admin role")
        # The same normalisation as the application core (app._user), so the
        # domain checked here is the domain acted for.
        address = normalise_addr_spec(user)
        if address is None:
            raise InputError("user must be a plain addr-spec such as jean.dupont@ac-besancon.fr")
        domain = address.rpartition("@")[2]
        if not caller.acts_for(domain):
            self._deny(caller, method, rule.right, address, f"not for users of {domain}", domain=domain)
        return caller

    def _deny(
        self, caller: Caller, method: str, right: str, user: str, why: str, *, domain: str = ""
    ) -> NoReturn:
        metadata = {"rpc": method, "right": right, "caller": caller.name}
        if domain:
            metadata["domain"] = domain
        try:
            self._audit().record(
                AuditEvent(
                    action=AuditAction.PERMISSION_DENIED,
                    outcome=AuditOutcome.DENIED,
                    caller=caller.name,
                    user=user,
                    # The stable reason, then what was refused, for queries.
                    reason=f"{ErrorReason.PERMISSION_DENIED.value} {right} {method}",
                )
            )
        except Exception:
            # The refusal stands whether or not it could be recorded.
            log.exception("could not record a permission denial")
        raise PermissionDeniedError(f"{caller.name} may not {right} ({why})", metadata=metadata)


def _role_names(roles: frozenset[Role]) -> str:
    return " or ".join(sorted(r.value for r in roles))


def _abort(context: grpc.ServicerContext, exc: SecmailError) -> None:
    status = to_status(exc)
    log.info("refused: %s %s", status.code.name, exc.reason.value)
    context.abort_with_status(status)


def _guarded(
    handler: grpc.RpcMethodHandler, check: Callable[[Any, grpc.ServicerContext], Caller | None]
) -> grpc.RpcMethodHandler:
    """``handler`` with ``check`` run first (on the request, for unary ones)."""

    def run_check(request: Any, context: grpc.ServicerContext) -> Caller | None:
        try:
            return check(request, context)
        except SecmailError as exc:
            _abort(context, exc)
            raise  # unreachable: abort_with_status raises

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
            caller = run_check(request, context)
            # The application stamps its audit events with this name. The
            # handler runs in this thread, in this context.
            token = current_caller.set(caller.name if caller is not None else "anonymous")
            try:
                return inner_uu(request, context)
            finally:
                current_caller.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        def unary_stream(request: Any, context: grpc.ServicerContext) -> Any:
            run_check(request, context)
            yield from inner_us(request, context)

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        def stream_unary(requests: Any, context: grpc.ServicerContext) -> Any:
            run_check(None, context)
            return inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
    inner_ss = handler.stream_stream

    def stream_stream(requests: Any, context: grpc.ServicerContext) -> Any:
        run_check(None, context)
        yield from inner_ss(requests, context)

    return grpc.stream_stream_rpc_method_handler(
        stream_stream, handler.request_deserializer, handler.response_serializer
    )
