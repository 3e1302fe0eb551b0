"""A small X.509 PKI for end-to-end tests, generated with `cryptography`.

Root CA -> intermediate -> e-mail end entities, as an académie would run it,
plus an unrelated CA and expired/mis-issued certificates. Every certificate
is valid from 2025-01-01; tests that depend on time pin validation_time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOT_BEFORE = datetime(2025, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2035, 1, 1, tzinfo=UTC)
#: A validation time at which every "valid" certificate here is valid.
VALID_AT = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Identity:
    key: PrivateKeyTypes
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def p12(self, passphrase: bytes | None = b"secret") -> bytes:
        enc = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        )
        return pkcs12.serialize_key_and_certificates(
            b"test",
            self.key,
            self.cert,
            list(self.chain),
            enc,  # type: ignore[arg-type]
        )

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Académie"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ca(
    cn: str,
    key: CertificateIssuerPrivateKeyTypes,
    issuer: Identity | None = None,
    *,
    path_length: int | None = None,
) -> Identity:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    signer = issuer.key if issuer else key
    cert = builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    chain = (issuer.cert, *issuer.chain) if issuer else ()
    return Identity(key, cert, chain)


def end_entity(
    issuer: Identity,
    email: str,
    key: PrivateKeyTypes | None = None,
    *,
    not_before: datetime = NOT_BEFORE,
    not_after: datetime = NOT_AFTER,
    eku: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
) -> Identity:
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    is_ec = isinstance(key, ec.EllipticCurvePrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(email.split("@")[0]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not is_ec and not isinstance(key, ed25519.Ed25519PrivateKey),
                data_encipherment=False,
                key_agreement=is_ec,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)  # type: ignore[arg-type]
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    cert = builder.sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]
    return Identity(key, cert, (issuer.cert, *issuer.chain))


@dataclass(frozen=True)
class PKI:
    root: Identity
    intermediate: Identity
    other_root: Identity

    @property
    def bundle_pem(self) -> bytes:
        return self.root.cert_pem + self.intermediate.cert_pem


def make_pki() -> PKI:
    root = _ca("Test Root CA", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    intermediate = _ca("Test Mail CA", ec.generate_private_key(ec.SECP256R1()), root, path_length=0)
    other = _ca("Unrelated Root CA", ec.generate_private_key(ec.SECP256R1()))
    return PKI(root, intermediate, other)


def message(
    sender: str = "alice@ac-besancon.fr",
    to: str = "bob@ac-besancon.fr",
    subject: str = "Conseil de classe",
    body: bytes = b"Bonjour,\r\n\r\nLe conseil de classe est jeudi.\r\n",
    extra_headers: bytes = b"",
) -> bytes:
    return (
        f"From: Test Sender <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Date: Mon, 01 Jun 2026 10:00:00 +0200\r\nMessage-ID: <test@ac-besancon.fr>\r\n".encode()
        + extra_headers
        + b'MIME-Version: 1.0\r\nContent-Type: text/plain; charset="utf-8"\r\n'
        + b"Content-Transfer-Encoding: 7bit\r\n\r\n"
        + body
    )
