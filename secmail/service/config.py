"""The callers file: who may call secmail, with which roles, for which domains.

``secmail serve --callers FILE`` reads a TOML file (``tomllib``)::

    # Readers of these domains get their correspondents' certificates
    # stored from GREEN messages (see secmail/service/harvest.py).
    harvest_domains = ["ac-besancon.fr"]

    # Defaults for every caller; a caller may override each key.
    [limits]
    rate_per_second = 50        # sustained requests per second, per server process
    burst = 100                 # requests allowed at once after a quiet period
    max_request_bytes = 20971520

    [[callers]]
    name = "webmail-besancon"
    roles = ["webmail"]
    domains = ["ac-besancon.fr"]
    cert_san = ["webmail.ac-besancon.fr"]     # a DNS, e-mail, URI or IP SAN of its client certificate

    [[callers]]
    name = "gateway"
    role = "gateway"
    domains = ["ac-besancon.fr", "ac-lyon.fr"]
    cert_subject = "CN=smtp-gateway,O=Rectorat"

    [[callers]]
    name = "webmail-lyon"                     # behind a TLS-terminating proxy
    roles = ["webmail"]
    domains = ["ac-lyon.fr"]
    token_sha256 = "<64 hex digits: sha256 of the token>"
    rate_per_second = 20

Every caller names exactly one kind of identity: a client certificate
(``cert_subject`` and/or ``cert_san``; when both are given, both must
match) or a bearer token (``token_sha256``). Tokens are stored as SHA-256
hashes, so the file does not give them away; they must be random (32 bytes
from ``secrets.token_urlsafe``), which is what makes an unsalted hash
enough. Unknown keys are errors: a typo in an access file must not
silently widen or drop a restriction.
"""

from __future__ import annotations

import enum
import hashlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from secmail.errors import ErrorReason, SecmailError

__all__ = [
    "CallerConfig",
    "CallersConfig",
    "ConfigError",
    "Limits",
    "Role",
    "load_callers_file",
    "parse_callers",
    "token_sha256",
]


class ConfigError(SecmailError):
    """The server's configuration (callers file, TLS files) is unusable."""

    reason = ErrorReason.INVALID_ARGUMENT


class Role(enum.Enum):
    #: Acts for the users of its domains: every message RPC, their keys.
    WEBMAIL = "webmail"
    #: Sign, Encrypt and Verify for senders of its domains; never Decrypt.
    GATEWAY = "gateway"
    #: Trust anchors, CRLs, and keys of every user (and of EVERYONE).
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-caller limits, enforced per server process (see limits.py)."""

    #: Sustained requests per second; None: unlimited.
    rate_per_second: float | None = None
    #: Requests allowed in a burst; None: the rate rounded up (at least 1).
    burst: int | None = None
    #: Largest serialized request accepted; None: only the server's own cap.
    max_request_bytes: int | None = None

    def over(self, defaults: Limits) -> Limits:
        """These limits, with ``defaults`` for what is not set here."""
        return Limits(
            rate_per_second=self.rate_per_second
            if self.rate_per_second is not None
            else defaults.rate_per_second,
            burst=self.burst if self.burst is not None else defaults.burst,
            max_request_bytes=self.max_request_bytes
            if self.max_request_bytes is not None
            else defaults.max_request_bytes,
        )


@dataclass(frozen=True, slots=True)
class CallerConfig:
    name: str
    roles: frozenset[Role]
    #: Lower-case mail domains the caller acts for (exact match, no subdomains).
    domains: frozenset[str]
    cert_subject: x509.Name | None = None
    #: The client certificate must carry at least one of these SANs.
    cert_san: frozenset[str] = frozenset()
    #: SHA-256 of the bearer token.
    token_sha256: bytes | None = None
    limits: Limits = field(default_factory=Limits)

    @property
    def by_certificate(self) -> bool:
        return self.cert_subject is not None or bool(self.cert_san)

    def __repr__(self) -> str:  # no token hash in logs
        roles = ",".join(sorted(r.value for r in self.roles))
        return f"CallerConfig(name={self.name!r}, roles={roles}, domains={sorted(self.domains)})"


@dataclass(frozen=True, slots=True)
class CallersConfig:
    callers: tuple[CallerConfig, ...]
    harvest_domains: frozenset[str] = frozenset()


def token_sha256(token: str) -> bytes:
    """The digest the callers file stores for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def load_callers_file(path: Path) -> CallersConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the callers file {path}: {type(exc).__name__}") from None
    return parse_callers(text, source=str(path))


_TOP_KEYS = frozenset({"callers", "limits", "harvest_domains"})
_LIMIT_KEYS = frozenset({"rate_per_second", "burst", "max_request_bytes"})
_CALLER_KEYS = frozenset(
    {"name", "role", "roles", "domains", "cert_subject", "cert_san", "token_sha256"} | _LIMIT_KEYS
)
# A domain as it appears after the @ of a normalised addr-spec.
_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def parse_callers(text: str, *, source: str = "callers file") -> CallersConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    _no_unknown(data, _TOP_KEYS, source)
    defaults = _limits(data.get("limits", {}), f"{source} [limits]", only_limits=True)
    raw_callers = data.get("callers", [])
    if not isinstance(raw_callers, list) or not all(isinstance(c, dict) for c in raw_callers):
        raise ConfigError(f"{source}: callers must be an array of tables ([[callers]])")
    callers = [_caller(c, defaults, f"{source} [[callers]] #{i + 1}") for i, c in enumerate(raw_callers)]
    _check_unique(callers, source)
    harvest = _domains(data.get("harvest_domains", []), f"{source} harvest_domains")
    return CallersConfig(tuple(callers), frozenset(harvest))


def _caller(raw: Mapping[str, Any], defaults: Limits, where: str) -> CallerConfig:
    _no_unknown(raw, _CALLER_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: a caller needs a name")
    where = f"{where} ({name})"
    if "role" in raw and "roles" in raw:
        raise ConfigError(f"{where}: give role or roles, not both")
    role_names = raw["roles"] if "roles" in raw else [raw["role"]] if "role" in raw else []
    if not isinstance(role_names, list) or not role_names:
        raise ConfigError(f"{where}: needs at least one role (webmail, gateway, admin)")
    roles: set[Role] = set()
    for role_name in role_names:
        try:
            roles.add(Role(role_name))
        except ValueError:
            raise ConfigError(f"{where}: unknown role {role_name!r} (webmail, gateway, admin)") from None
    domains = _domains(raw.get("domains", []), f"{where} domains")
    if roles & {Role.WEBMAIL, Role.GATEWAY} and not domains:
        raise ConfigError(f"{where}: the webmail and gateway roles need domains")

    subject: x509.Name | None = None
    if "cert_subject" in raw:
        value = raw["cert_subject"]
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: cert_subject must be an RFC 4514 string")
        try:
            subject = x509.Name.from_rfc4514_string(value)
        except ValueError:
            raise ConfigError(f"{where}: cert_subject is not an RFC 4514 name: {value!r}") from None
    sans_raw = raw.get("cert_san", [])
    sans_list = [sans_raw] if isinstance(sans_raw, str) else sans_raw
    if not isinstance(sans_list, list) or not all(isinstance(s, str) and s.strip() for s in sans_list):
        raise ConfigError(f"{where}: cert_san must be a string or a list of strings")
    digest: bytes | None = None
    if "token_sha256" in raw:
        value = raw["token_sha256"]
        if not isinstance(value, str) or not _HEX64.match(value):
            raise ConfigError(f"{where}: token_sha256 must be 64 hex digits (the SHA-256 of the token)")
        digest = bytes.fromhex(value)
    by_cert = subject is not None or bool(sans_list)
    if by_cert == (digest is not None):
        raise ConfigError(f"{where}: give either cert_subject/cert_san or token_sha256 (exactly one kind)")
    return CallerConfig(
        name=name.strip(),
        roles=frozenset(roles),
        domains=frozenset(domains),
        cert_subject=subject,
        cert_san=frozenset(s.strip() for s in sans_list),
        token_sha256=digest,
        limits=_limits(raw, where).over(defaults),
    )


def _limits(raw: object, where: str, *, only_limits: bool = False) -> Limits:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: limits must be a table")
    if only_limits:
        _no_unknown(raw, _LIMIT_KEYS, where)
    rate = raw.get("rate_per_second")
    burst = raw.get("burst")
    size = raw.get("max_request_bytes")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0):
        raise ConfigError(f"{where}: rate_per_second must be a positive number")
    for key, value in (("burst", burst), ("max_request_bytes", size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(f"{where}: {key} must be a positive integer")
    return Limits(
        rate_per_second=float(rate) if rate is not None else None,
        burst=burst,
        max_request_bytes=size,
    )


def _domains(raw: object, where: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
        raise ConfigError(f"{where}: must be a list of domain names")
    out: list[str] = []
    for value in raw:
        domain = value.strip().lower().rstrip(".")
        if not _DOMAIN.match(domain):
            raise ConfigError(f"{where}: {value!r} is not a domain name (e.g. ac-besancon.fr)")
        out.append(domain)
    return out


def _no_unknown(raw: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _check_unique(callers: Sequence[CallerConfig], source: str) -> None:
    names: set[str] = set()
    tokens: set[bytes] = set()
    identities: set[tuple[str, frozenset[str]]] = set()
    for caller in callers:
        if caller.name in names:
            raise ConfigError(f"{source}: two callers are named {caller.name!r}")
        names.add(caller.name)
        if caller.token_sha256 is not None:
            if caller.token_sha256 in tokens:
                raise ConfigError(f"{source}: {caller.name!r} reuses another caller's token")
            tokens.add(caller.token_sha256)
        else:
            identity = (
                caller.cert_subject.rfc4514_string() if caller.cert_subject else "",
                frozenset(s.lower() for s in caller.cert_san),
            )
            if identity in identities:
                raise ConfigError(f"{source}: {caller.name!r} has the same certificate identity as another")
            identities.add(identity)
