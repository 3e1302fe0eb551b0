"""TLS for the gRPC listener, and for the CLI talking to it.

The server certificate, its key and the client CA are read from PEM files
and checked at start-up (a key that does not match its certificate is a
refusal to start, not a handshake failure later). They are read again
when a file changes: gRPC asks :class:`_Reloader` before every new
connection's handshake, and it answers from a ``stat`` of the three files,
so a rotated certificate (cert-manager, a renewed Kubernetes Secret) is
used without a restart. A half-rotated set (new certificate, old key) is
refused and the previous one kept until the files agree again.

With a client CA, every connection must present a certificate that CA
issued (``require_client_authentication``); which caller it names is
decided by the callers file (auth.py).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from secmail.service.config import ConfigError

__all__ = [
    "TLSFiles",
    "TLSMaterial",
    "channel_credentials",
    "is_loopback",
    "open_channel",
    "read_tls_material",
    "server_credentials",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    #: PEM: the server certificate first, then its intermediates.
    cert: Path
    #: PEM private key of the certificate (unencrypted).
    key: Path
    #: PEM CA certificate(s) that issue the clients' certificates. When
    #: given, every client must present one.
    client_ca: Path | None = None


@dataclass(frozen=True, slots=True)
class TLSMaterial:
    cert_chain: bytes
    key: bytes
    client_ca: bytes | None
    leaf: x509.Certificate

    def __repr__(self) -> str:  # never the key
        return f"TLSMaterial(leaf={self.leaf.subject.rfc4514_string()!r})"


def read_tls_material(files: TLSFiles) -> TLSMaterial:
    """Read and check the files; :class:`ConfigError` names what is wrong."""
    chain_pem = _read(files.cert, "--tls-cert")
    key_pem = _read(files.key, "--tls-key")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise ConfigError(f"--tls-cert {files.cert}: no PEM certificate in it") from None
    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"--tls-key {files.key}: not an unencrypted PEM private key (or unsupported)"
        ) from None
    leaf = chain[0]
    try:
        leaf_spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        key_spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, TypeError):
        raise ConfigError(f"--tls-cert {files.cert}: unsupported public key") from None
    if leaf_spki != key_spki:
        raise ConfigError(f"--tls-key {files.key} is not the key of the certificate in {files.cert}")
    now = datetime.now(UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        # Not a refusal: the clock may be off, and a restart loop helps no one.
        log.error(
            "the TLS certificate %s is not valid now (%s to %s): clients will refuse it",
            leaf.subject.rfc4514_string(),
            leaf.not_valid_before_utc.isoformat(),
            leaf.not_valid_after_utc.isoformat(),
        )
    client_ca: bytes | None = None
    if files.client_ca is not None:
        client_ca = _read(files.client_ca, "--tls-client-ca")
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            raise ConfigError(f"--tls-client-ca {files.client_ca}: no PEM certificate in it") from None
    return TLSMaterial(chain_pem, key_pem, client_ca, leaf)


def server_credentials(files: TLSFiles) -> grpc.ServerCredentials:
    """Credentials that follow the files (see the module documentation)."""
    material = read_tls_material(files)
    reloader = _Reloader(files, material)
    return grpc.dynamic_ssl_server_credentials(
        _configuration(material),
        reloader,
        require_client_authentication=files.client_ca is not None,
    )


def channel_credentials(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Client credentials: trust ``ca`` (default: the system roots), and
    present ``cert``/``key`` when the server asks for a client certificate."""
    if (cert is None) != (key is None):
        raise ConfigError("a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "--tls-ca") if ca is not None else None,
        private_key=_read(key, "--tls-key") if key is not None else None,
        certificate_chain=_read(cert, "--tls-cert") if cert is not None else None,
    )


def open_channel(
    server: str,
    *,
    tls: bool = False,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A client channel to ``server`` (the CLI's): TLS when ``tls`` or any
    TLS file is given, and ``authorization: Bearer <token>`` on every call
    when ``token`` is given."""
    use_tls = tls or ca is not None or cert is not None or key is not None
    if token is not None and not use_tls and not is_loopback(server):
        # The token would cross the network in the clear.
        raise ConfigError(f"refusing to send a bearer token to {server} without TLS")
    if use_tls:
        channel = grpc.secure_channel(server, channel_credentials(ca, cert, key), options=list(options))
    else:
        channel = grpc.insecure_channel(server, options=list(options))
    if token is not None:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel


class _BearerToken(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = [*(client_call_details.metadata or ()), self._metadata]
        return continuation(_CallDetails(client_call_details, metadata), request)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = base.compression


def is_loopback(address: str) -> bool:
    """Whether ``address`` (HOST:PORT) names this machine only."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _configuration(material: TLSMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert_chain)], root_certificates=material.client_ca
    )


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read ({exc.strerror or type(exc).__name__})") from None


_Stamp = tuple[tuple[int, int, int] | None, ...]


def _stamp(files: TLSFiles) -> _Stamp:
    stamps: list[tuple[int, int, int] | None] = []
    for path in (files.cert, files.key, files.client_ca):
        if path is None:
            stamps.append(None)
            continue
        try:
            # stat follows symlinks: a Kubernetes Secret volume swaps its
            # ..data link, which changes the inode seen here.
            st = os.stat(path)
        except OSError:
            stamps.append((-1, -1, -1))
            continue
        stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


class _Reloader:
    """gRPC's certificate_configuration_fetcher: None means "no change"."""

    def __init__(self, files: TLSFiles, material: TLSMaterial) -> None:
        self._files = files
        self._stamp = _stamp(files)
        self._lock = threading.Lock()

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = _stamp(self._files)
        with self._lock:
            if stamp == self._stamp:
                return None
            # Whatever the outcome, this state of the files is dealt with:
            # a bad set is reported once, and tried again when it changes.
            self._stamp = stamp
            try:
                material = read_tls_material(self._files)
            except ConfigError as exc:
                log.error("TLS files changed but are not usable, keeping the previous ones: %s", exc)
                return None
        log.info("TLS files changed: now serving %s", material.leaf.subject.rfc4514_string())
        return _configuration(material)
