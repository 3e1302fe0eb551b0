"""Helpers for the production-listener tests: a TLS PKI made with
cryptography, an in-process server with callers/TLS/harvesting, stubs, and
the rich error details of a failed call.

Imported by test_tls_auth.py, test_limits.py, test_harvest.py and
test_revocation_wiring.py as ``access_support`` (pytest's "prepend" import
mode puts this folder on sys.path).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from secmail.audit import AuditEvent
from secmail.service.app import Secmail, Settings
from secmail.service.config import CallersConfig, parse_callers
from secmail.service.server import ServerConfig, build_app, create_server
from secmail.service.tls import TLSFiles
from secmail.v1 import keys_pb2_grpc, message_security_pb2_grpc, trust_pb2_grpc

#: The name the test server certificate is issued for (and clients check).
SERVER_NAME = "secmail.test"


@dataclass(frozen=True)
class KeyPair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Rectorat de test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def issue(
    cn: str,
    issuer: KeyPair | None = None,
    *,
    ca: bool = False,
    sans: Sequence[x509.GeneralName] = (),
    eku: x509.ObjectIdentifier | None = None,
) -> KeyPair:
    """A certificate valid around now (TLS libraries use the real clock)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return KeyPair(cert, key)


@dataclass(frozen=True)
class TLSPKI:
    ca: KeyPair
    server: KeyPair
    other_ca: KeyPair

    def client(self, cn: str, *sans: str, ca: KeyPair | None = None) -> KeyPair:
        return issue(
            cn,
            ca or self.ca,
            sans=[x509.DNSName(s) for s in sans],
            eku=ExtendedKeyUsageOID.CLIENT_AUTH,
        )

    def new_server_cert(self) -> KeyPair:
        return issue(
            SERVER_NAME,
            self.ca,
            sans=[x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
            eku=ExtendedKeyUsageOID.SERVER_AUTH,
        )

    def write(self, directory: Path, *, client_ca: bool = True) -> TLSFiles:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tls.crt").write_bytes(self.server.cert_pem + self.ca.cert_pem)
        (directory / "tls.key").write_bytes(self.server.key_pem)
        (directory / "ca.crt").write_bytes(self.ca.cert_pem)
        return TLSFiles(
            directory / "tls.crt", directory / "tls.key", directory / "ca.crt" if client_ca else None
        )


def make_tls_pki() -> TLSPKI:
    ca = issue("Secmail clients CA", ca=True)
    server = issue(
        SERVER_NAME,
        ca,
        sans=[x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        eku=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    return TLSPKI(ca, server, issue("Some other CA", ca=True))


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


@dataclass
class Running:
    app: Secmail
    port: int
    callers: CallersConfig | None
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(
        self,
        *,
        pki: TLSPKI | None = None,
        client: KeyPair | None = None,
        token: str | None = None,
    ) -> Stubs:
        options = [
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
        ]
        if pki is None:
            channel = grpc.insecure_channel(self.address, options=options)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=pki.ca.cert_pem,
                private_key=client.key_pem if client else None,
                certificate_chain=client.cert_pem if client else None,
            )
            channel = grpc.secure_channel(
                self.address, creds, options=[*options, ("grpc.ssl_target_name_override", SERVER_NAME)]
            )
        if token is not None:
            channel = grpc.intercept_channel(channel, _TokenInterceptor(token))
        self.channels.append(channel)
        return Stubs(
            message_security_pb2_grpc.MessageSecurityStub(channel),
            keys_pb2_grpc.KeyServiceStub(channel),
            trust_pb2_grpc.TrustServiceStub(channel),
        )


@dataclass(frozen=True)
class Stubs:
    messages: message_security_pb2_grpc.MessageSecurityStub
    keys: keys_pb2_grpc.KeyServiceStub
    trust: trust_pb2_grpc.TrustServiceStub


class _TokenInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Adds ``authorization`` metadata, as a webmail backend would."""

    def __init__(self, value: str) -> None:
        self._value = value

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        metadata = [*(client_call_details.metadata or ()), ("authorization", self._value)]
        details = client_call_details._replace(metadata=metadata)
        return continuation(details, request)


@contextmanager
def running(
    data_dir: Path,
    *,
    callers_toml: str | None = None,
    tls: TLSFiles | None = None,
    settings: Settings | None = None,
    audit: RecordingSink | None = None,
    harvest_domains: Sequence[str] = (),
    network_revocation: bool = True,
) -> Iterator[Running]:
    """An in-process server on 127.0.0.1:0, as ``secmail serve`` builds it."""
    callers = parse_callers(callers_toml) if callers_toml is not None else None
    config = ServerConfig(
        data_dir=data_dir,
        settings=settings or Settings(),
        harvest_domains=tuple(harvest_domains),
        network_revocation=network_revocation,
    )
    app = build_app(config, callers)
    server, port = create_server("127.0.0.1:0", app, threads=4, tls=tls, callers=callers, audit=audit)
    server.start()
    run = Running(app, port, callers)
    try:
        yield run
    finally:
        for channel in run.channels:
            channel.close()
        server.stop(None)


def error_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(exc)
    assert status is not None, f"no rich status: {exc}"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.domain == "secmail.v1"
            return info
    raise AssertionError("no ErrorInfo")


def retry_info(exc: grpc.RpcError) -> error_details_pb2.RetryInfo | None:
    status = rpc_status.from_call(exc)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info
    return None
