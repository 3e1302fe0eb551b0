"""A small generated PKI for the trust tests (pinned dates, fresh keys).

Imported by the test modules of this folder as ``trust_pki`` (pytest's
default "prepend" import mode puts this folder on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asn1crypto import algos as asn1_algos
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

#: Every certificate is valid from NOT_BEFORE to NOT_AFTER unless a test
#: says otherwise; AT is the pinned validation time, inside that window.
NOT_BEFORE = datetime(2025, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2030, 1, 1, tzinfo=UTC)
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

_SIGNING_KU = x509.KeyUsage(
    digital_signature=True,
    content_commitment=True,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_CA_KU = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(common_name: str, email: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if email is not None:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attrs)


@dataclass
class Issued:
    """A certificate with the private key of its subject."""

    cert: x509.Certificate
    key: PrivateKey


@dataclass
class CertSpec:
    subject: x509.Name
    ca: bool = False
    not_before: datetime = NOT_BEFORE
    not_after: datetime = NOT_AFTER
    emails: Sequence[str] = ()
    ekus: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.EMAIL_PROTECTION,)
    key_usage: x509.KeyUsage | None = None
    name_constraints: x509.NameConstraints | None = None
    extra: Sequence[tuple[x509.ExtensionType, bool]] = field(default_factory=tuple)


def issue(spec: CertSpec, key: PrivateKey, issuer: Issued | None) -> Issued:
    """Sign ``spec`` for ``key`` with ``issuer`` (None: self-signed)."""
    signer_key = key if issuer is None else issuer.key
    issuer_name = spec.subject if issuer is None else issuer.cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(spec.subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
        .add_extension(x509.BasicConstraints(ca=spec.ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    )
    key_usage = spec.key_usage or (_CA_KU if spec.ca else _SIGNING_KU)
    builder = builder.add_extension(key_usage, critical=True)
    if not spec.ca and spec.ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(spec.ekus)), critical=False)
    if spec.emails:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(e) for e in spec.emails]),
            critical=False,
        )
    if spec.name_constraints is not None:
        builder = builder.add_extension(spec.name_constraints, critical=True)
    for ext, critical in spec.extra:
        builder = builder.add_extension(ext, critical=critical)
    return Issued(builder.sign(signer_key, hashes.SHA256()), key)


def resign_with_sha1(cert: x509.Certificate, issuer_key: PrivateKey) -> x509.Certificate:
    """Re-sign ``cert`` with SHA-1 (cryptography refuses to make one)."""
    parsed = asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))
    algorithm_name = "sha1_ecdsa" if isinstance(issuer_key, ec.EllipticCurvePrivateKey) else "sha1_rsa"
    algorithm = asn1_algos.SignedDigestAlgorithm({"algorithm": algorithm_name})
    tbs = parsed["tbs_certificate"]
    tbs["signature"] = algorithm
    parsed["signature_algorithm"] = algorithm
    tbs_der = tbs.dump(force=True)
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey):
        signature = issuer_key.sign(tbs_der, ec.ECDSA(hashes.SHA1()))
    else:
        signature = issuer_key.sign(tbs_der, padding.PKCS1v15(), hashes.SHA1())
    parsed["signature_value"] = signature
    return x509.load_der_x509_certificate(parsed.dump(force=True))


def make_crl(
    issuer: Issued,
    revoked: Sequence[x509.Certificate] = (),
    *,
    this_update: datetime = NOT_BEFORE,
    next_update: datetime | None = NOT_AFTER,
    signing_key: PrivateKey | None = None,
    crl_number: int | None = 1,
    crl_number_critical: bool = False,
    reason: x509.ReasonFlags | None = None,
    extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.CertificateRevocationList:
    """A CRL from ``issuer`` listing ``revoked`` (signed by ``signing_key``
    instead of the issuer's key when given, to forge one)."""
    builder = (
        x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject).last_update(this_update)
    )
    # cryptography insists on nextUpdate; it is removed afterwards if asked.
    builder = builder.next_update(next_update or NOT_AFTER)
    if crl_number is not None:
        builder = builder.add_extension(x509.CRLNumber(crl_number), critical=crl_number_critical)
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical=critical)
    for cert in revoked:
        entry = (
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(this_update)
        )
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(signing_key or issuer.key, hashes.SHA256())
    if next_update is None:
        crl = _drop_next_update(crl, signing_key or issuer.key)
    return crl


def _drop_next_update(crl: x509.CertificateRevocationList, key: PrivateKey) -> x509.CertificateRevocationList:
    parsed = asn1_crl.CertificateList.load(crl.public_bytes(Encoding.DER))
    tbs = parsed["tbs_cert_list"]
    tbs["next_update"] = None
    tbs_der = tbs.dump(force=True)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(tbs_der, ec.ECDSA(hashes.SHA256()))
    else:
        signature = key.sign(tbs_der, padding.PKCS1v15(), hashes.SHA256())
    parsed["signature"] = signature
    return x509.load_der_x509_crl(parsed.dump(force=True))


@dataclass
class Hierarchy:
    """root → intermediate → end entity, the usual académie shape."""

    root: Issued
    intermediate: Issued
    ee: Issued


def hierarchy(
    *,
    ee_spec: CertSpec | None = None,
    intermediate_spec: CertSpec | None = None,
    ee_key: PrivateKey | None = None,
) -> Hierarchy:
    root = issue(CertSpec(name("Test Root CA"), ca=True), ec_key(), None)
    intermediate = issue(intermediate_spec or CertSpec(name("Test Issuing CA"), ca=True), ec_key(), root)
    ee = issue(
        ee_spec or CertSpec(name("Alice"), emails=("alice@ac-besancon.fr",)),
        ee_key or ec_key(),
        intermediate,
    )
    return Hierarchy(root, intermediate, ee)
