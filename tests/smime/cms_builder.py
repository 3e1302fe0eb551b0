"""Hand assembly of SignedData variants the production signer never makes.

Attacks and odd-but-legal shapes (two signers, SKI identifiers, SHA-1,
no signed attributes, duplicated attributes...) are built here from DER
pieces; each piece is the RFC 5652 structure written out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from secmail.smime import algorithms as alg


def attribute(oid: str, *values: bytes) -> bytes:
    return alg.der_sequence(alg.der_oid(oid), alg.der_set_of(values))


def content_type_attr(oid: str = alg.OID_DATA) -> bytes:
    return attribute(alg.OID_CONTENT_TYPE, alg.der_oid(oid))


def message_digest_attr(content: bytes, digest: str = "sha256") -> bytes:
    return attribute(alg.OID_MESSAGE_DIGEST, alg.der_octet_string(alg.digest(digest, content)))


def signing_time_attr(when: datetime) -> bytes:
    return attribute(alg.OID_SIGNING_TIME, bytes(core.UTCTime(when).dump()))


def default_attrs(content: bytes, digest: str, when: datetime) -> list[bytes]:
    return [content_type_attr(), message_digest_attr(content, digest), signing_time_attr(when)]


def raw_sign(key: PrivateKeyTypes, data: bytes, digest: str, *, pss: bool = False) -> bytes:
    h = alg.hash_algorithm(digest)
    if isinstance(key, rsa.RSAPrivateKey):
        if pss:
            return key.sign(data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
        return key.sign(data, padding.PKCS1v15(), h)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(h))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise TypeError(type(key))


def default_sig_alg(key: PrivateKeyTypes, digest: str) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return alg.algorithm_identifier(alg.RSA_PKCS1_OIDS[digest], alg.DER_NULL)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return alg.algorithm_identifier(alg.ECDSA_OIDS[digest])
    return alg.algorithm_identifier(alg.OID_ED25519)


def ski_of(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def signer_info(
    key: PrivateKeyTypes,
    cert: x509.Certificate,
    content: bytes,
    *,
    digest: str = "sha256",
    when: datetime | None = None,
    attrs: Sequence[bytes] | None = None,
    signed_attrs: bool = True,
    sig_alg: bytes | None = None,
    use_ski: bool = False,
    corrupt_signature: bool = False,
    pss: bool = False,
) -> bytes:
    """One SignerInfo. ``attrs`` replaces the default signed attributes;
    ``signed_attrs=False`` signs the content itself (RFC 5652 §5.4)."""
    if signed_attrs:
        assert when is not None or attrs is not None
        attr_list = list(attrs) if attrs is not None else default_attrs(content, digest, when)  # type: ignore[arg-type]
        attr_set = alg.der_set_of(attr_list)
        signature = raw_sign(key, attr_set, digest, pss=pss)
    else:
        attr_set = b""
        signature = raw_sign(key, content, digest, pss=pss)
    if corrupt_signature:
        signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
    if use_ski:
        sid = alg.der_implicit_primitive(0, alg.der_octet_string(ski_of(cert)))
        version = 3
    else:
        sid = alg.issuer_and_serial_number(cert)
        version = 1
    parts = [
        alg.der_integer(version),
        sid,
        alg.digest_algorithm_identifier(digest),
    ]
    if signed_attrs:
        parts.append(alg.der_implicit_constructed(0, attr_set))
    if sig_alg is None:
        if pss:
            h = alg.hash_algorithm(digest)
            sig_alg = alg.algorithm_identifier(
                alg.OID_RSASSA_PSS, alg.rsassa_pss_parameters(digest, h.digest_size)
            )
        else:
            sig_alg = default_sig_alg(key, digest)
    parts += [sig_alg, alg.der_octet_string(signature)]
    return alg.der_sequence(*parts)


def signed_data(
    signer_infos: Sequence[bytes],
    certs: Sequence[x509.Certificate],
    *,
    econtent: bytes | None,
    econtent_type: str = alg.OID_DATA,
    digests: Sequence[str] = ("sha256",),
    version: int = 1,
) -> bytes:
    encap = [alg.der_oid(econtent_type)]
    if econtent is not None:
        encap.append(alg.der_explicit(0, alg.der_octet_string(econtent)))
    parts = [
        alg.der_integer(version),
        alg.der_set_of([alg.digest_algorithm_identifier(d) for d in digests]),
        alg.der_sequence(*encap),
    ]
    if certs:
        parts.append(alg.der_set_of([c.public_bytes(serialization.Encoding.DER) for c in certs], tag=0xA0))
    parts.append(alg.der_set_of(signer_infos))
    body = alg.der_sequence(*parts)
    return alg.der_sequence(alg.der_oid(alg.OID_SIGNED_DATA), alg.der_explicit(0, body))
