"""Certificates and keys for the keystore tests, built with cryptography.

Every certificate is valid from NOT_BEFORE to NOT_AFTER; tests pin the
evaluation time with ``now=VALID_AT`` (or a time outside the window).
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOT_BEFORE = datetime(2025, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2030, 1, 1, tzinfo=UTC)
VALID_AT = datetime(2026, 6, 1, tzinfo=UTC)
AFTER_EXPIRY = datetime(2031, 1, 1, tzinfo=UTC)
BEFORE_VALIDITY = datetime(2024, 6, 1, tzinfo=UTC)

_RSA_CACHE: dict[int, rsa.RSAPrivateKey] = {}


def rsa_key(slot: int = 0, bits: int = 2048) -> rsa.RSAPrivateKey:
    """RSA keys are slow to make: a few cached ones, by slot."""
    cache_key = slot * 100_000 + bits
    if cache_key not in _RSA_CACHE:
        _RSA_CACHE[cache_key] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _RSA_CACHE[cache_key]


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pkcs8_der(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_pem(key: PrivateKeyTypes, passphrase: bytes | None = None, *, traditional: bool = False) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    fmt = serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc)


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_id(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert_der(cert)).hexdigest()


@dataclass(frozen=True)
class Issued:
    #: Any: tests hand it to APIs that each accept a different subset of key types.
    key: Any
    cert: x509.Certificate


def make_cert(
    cn: str,
    key: Any,
    *,
    issuer: Issued | None = None,
    san_emails: Sequence[str] = (),
    subject_email: str | None = None,
    ca: bool | None = None,
    key_usage: dict[str, bool] | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
    not_before: datetime = NOT_BEFORE,
    not_after: datetime = NOT_AFTER,
    issuer_name: x509.Name | None = None,
) -> Issued:
    """A certificate for ``key``; self-signed unless ``issuer`` is given.

    ``key_usage`` lists the keyUsage bits to set (None: no extension);
    ``eku`` None means no extendedKeyUsage extension.
    """
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if subject_email is not None:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, subject_email))
    subject = x509.Name(attrs)
    signer: Any
    if issuer is None:
        signer = key
        iss_name = issuer_name or subject
    else:
        signer = issuer.key
        iss_name = issuer.cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(iss_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_usage is not None:
        bits = {
            "digital_signature": False,
            "content_commitment": False,
            "key_encipherment": False,
            "data_encipherment": False,
            "key_agreement": False,
            "key_cert_sign": False,
            "crl_sign": False,
            "encipher_only": False,
            "decipher_only": False,
        }
        bits.update(key_usage)
        builder = builder.add_extension(x509.KeyUsage(**bits), critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if san_emails:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(e) for e in san_emails]), critical=False
        )
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return Issued(key, builder.sign(signer, algorithm))


def make_ca(cn: str, *, issuer: Issued | None = None) -> Issued:
    return make_cert(
        cn,
        ec_key(),
        issuer=issuer,
        ca=True,
        key_usage={"key_cert_sign": True, "crl_sign": True},
        eku=None,
    )


def make_user(email: str, *, issuer: Issued, key: PrivateKeyTypes | None = None, **kwargs: Any) -> Issued:
    kwargs.setdefault("san_emails", (email,))
    kwargs.setdefault("key_usage", {"digital_signature": True, "key_encipherment": True})
    return make_cert(
        email.split("@")[0],
        key if key is not None else rsa_key(),
        issuer=issuer,
        **kwargs,
    )


def x25519_user(email: str, *, issuer: Issued) -> Issued:
    return make_cert(
        email.split("@")[0],
        x25519.X25519PrivateKey.generate(),
        issuer=issuer,
        san_emails=(email,),
        key_usage={"key_agreement": True},
    )


def write_pem(path: Path, *items: bytes) -> Path:
    path.write_bytes(b"".join(items))
    return path


def openssl(*args: str | Path, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["openssl", *map(str, args)], input=stdin, capture_output=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed: {result.stderr.decode()}")
    return result.stdout
