"""A small test PKI for the S/MIME tests, generated with cryptography.

Root CA -> intermediate CA -> end entities (one per key type), every end
entity with an rfc822Name SAN, keyUsage and the emailProtection EKU. Dates
are pinned: certificates are valid 2024-01-01..2036-01-01 and the tests judge
at ``VALIDATION_TIME``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2036, 1, 1, tzinfo=UTC)
VALIDATION_TIME = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SIGNING_TIME = datetime(2026, 6, 1, 11, 0, tzinfo=UTC)


@dataclass
class Identity:
    name: str
    email: str
    key: PrivateKeyTypes
    cert: x509.Certificate
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class SmimePKI:
    root_key: rsa.RSAPrivateKey
    root: x509.Certificate
    intermediate_key: rsa.RSAPrivateKey
    intermediate: x509.Certificate
    people: dict[str, Identity]
    directory: Path | None = None

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return (self.intermediate,)

    def __getitem__(self, name: str) -> Identity:
        return self.people[name]


def _name(cn: str, email: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "secmail tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ]
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attrs)


def _ca(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    serial: int,
    path_length: int | None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
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
    if issuer_key is not key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def end_entity(
    pki_issuer: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes],
    cn: str,
    email: str,
    public_key: CertificatePublicKeyTypes,
    serial: int,
    *,
    sign: bool,
    encipher: bool,
    agree: bool,
    emails_in_subject: bool = False,
    extra_sans: Sequence[str] = (),
) -> x509.Certificate:
    issuer_cert, issuer_key = pki_issuer
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn, email if emails_in_subject else None))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=sign,
                content_commitment=False,
                key_encipherment=encipher,
                data_encipherment=False,
                key_agreement=agree,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(email), *(x509.RFC822Name(e) for e in extra_sans)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def build_pki() -> SmimePKI:
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root_name = _name("secmail test root CA")
    root = _ca(root_name, root_key, root_name, root_key, 1, None)
    inter_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    inter = _ca(_name("secmail test intermediate CA"), inter_key, root_name, root_key, 2, 0)
    issuer = (inter, inter_key)

    people: dict[str, Identity] = {}

    def add(name: str, key: PrivateKeyTypes, serial: int, **usage: bool) -> None:
        email = f"{name}@Example.ORG"
        cert = end_entity(
            issuer,
            name.capitalize(),
            email,
            key.public_key(),  # type: ignore[union-attr]
            serial,
            emails_in_subject=name == "alice",
            **usage,
        )
        people[name] = Identity(name, email, key, cert)

    add(
        "alice",
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        0x1001,
        sign=True,
        encipher=True,
        agree=False,
    )
    add("bob", ec.generate_private_key(ec.SECP256R1()), 0x1002, sign=True, encipher=False, agree=True)
    add("erin", ec.generate_private_key(ec.SECP384R1()), 0x1003, sign=True, encipher=False, agree=True)
    add("carol", ed25519.Ed25519PrivateKey.generate(), 0x1004, sign=True, encipher=False, agree=False)
    add("dave", x25519.X25519PrivateKey.generate(), 0x1005, sign=False, encipher=False, agree=True)
    return SmimePKI(root_key, root, inter_key, inter, people)


def sign_as(pki: SmimePKI, who: str, content: bytes, **kw: object) -> bytes:
    """``content`` signed by ``pki[who]`` with its chain, at SIGNING_TIME
    (``kw``: sign_content's other options)."""
    from secmail.smime.sign import sign_content

    person = pki[who]
    return sign_content(
        content,
        private_key=person.key,
        cert=person.cert,
        chain=pki.chain,
        signing_time=SIGNING_TIME,
        **kw,  # type: ignore[arg-type]
    )


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_files(pki: SmimePKI, directory: Path) -> None:
    """PEM files for the command-line tools: root, intermediate, a CA bundle,
    and per person cert.pem / key.pem / chain.pem (cert + intermediate)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "root.pem").write_bytes(pem(pki.root))
    (directory / "intermediate.pem").write_bytes(pem(pki.intermediate))
    for person in pki.people.values():
        files = {
            "cert": directory / f"{person.name}.cert.pem",
            "key": directory / f"{person.name}.key.pem",
            "chain": directory / f"{person.name}.chain.pem",
        }
        files["cert"].write_bytes(pem(person.cert))
        files["key"].write_bytes(key_pem(person.key))
        files["chain"].write_bytes(pem(person.cert) + pem(pki.intermediate))
        person.files = files
    pki.directory = directory


def later(days: int) -> datetime:
    return VALIDATION_TIME + timedelta(days=days)


def corpus_dir(name: str) -> Path:
    """``../shared/corpora/<name>`` relative to the project root, or skip.

    (Kept here, not in conftest.py: several test folders have a conftest
    module, so ``from conftest import`` is ambiguous in a full run.)
    """
    import pytest

    root = Path(__file__).resolve().parents[2]
    path = root.parent / "shared" / "corpora" / name
    if not path.is_dir():
        pytest.skip(f"../shared/corpora/{name} not present: corpus tests need it")
    return path
