"""CMS SignedData production (RFC 5652 §5, RFC 8551 §2-§3).

The DER is assembled by hand from small, checked pieces (see
``algorithms``), so every AlgorithmIdentifier carries exactly the parameters
its RFC asks for. ``content`` is signed as given: the caller has already
canonicalised the MIME entity (RFC 8551 §3.1.1).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from secmail.errors import ErrorReason, InputError, InvalidKeyError, UnsupportedAlgorithmError
from secmail.smime import algorithms as alg

#: Digests a caller may ask for (RFC 8551 §2.1 MUST/SHOULD set).
SIGNING_DIGESTS = ("sha256", "sha384", "sha512")

#: RFC 8551 §2.7: the content ciphers we announce, most preferred first.
SMIME_CAPABILITIES = (
    alg.OID_AES256_GCM,
    alg.OID_AES128_GCM,
    alg.OID_AES256_CBC,
    alg.OID_AES128_CBC,
)

_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def _effective_digest(private_key: PrivateKeyTypes, digest: str) -> str:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        # RFC 8419 §3.1: with Ed25519 the message digest MUST be SHA-512.
        return "sha512"
    if digest not in SIGNING_DIGESTS:
        raise UnsupportedAlgorithmError(
            f"digest {digest!r} is not offered for signing; use one of {', '.join(SIGNING_DIGESTS)}"
        )
    return digest


def micalg_for(private_key: PrivateKeyTypes, digest: str) -> str:
    """The multipart/signed ``micalg`` value (RFC 8551 §3.5.3.2)."""
    return alg.MICALG[_effective_digest(private_key, digest)]


def _signing_time(value: datetime) -> bytes:
    if value.tzinfo is None:
        raise InputError("signing_time must be timezone-aware", reason=ErrorReason.INVALID_ARGUMENT)
    value = value.astimezone(UTC)
    # RFC 5652 §11.3: UTCTime for 1950-2049, GeneralizedTime otherwise.
    # Both in the DER form (X.690 §11.7-§11.8): Zulu, whole seconds, no
    # fraction; written directly, asn1crypto's encoder costs ~40 us and
    # gives the same octets (tests/smime/test_sign_der.py).
    if 1950 <= value.year < 2050:
        return alg.der_tlv(0x17, value.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return alg.der_tlv(0x18, b"%04d%s" % (value.year, value.strftime("%m%d%H%M%SZ").encode("ascii")))


def _attribute(oid: str, value: bytes) -> bytes:
    return alg.der_sequence(alg.der_oid(oid), alg.der_set_of([value]))


@functools.cache
def _smime_capabilities() -> bytes:
    # RFC 8551 §2.5.2: SMIMECapabilities is a SEQUENCE (ordered by
    # preference) of capabilities; the AES identifiers take no parameters.
    # A constant: built once per process.
    return alg.der_sequence(*(alg.der_sequence(alg.der_oid(oid)) for oid in SMIME_CAPABILITIES))


@functools.lru_cache(maxsize=256)
def _certificates_set(certs: tuple[x509.Certificate, ...]) -> bytes:
    """The SignedData ``certificates [0] IMPLICIT SET OF`` for ``certs``,
    duplicates dropped.

    Memoised: the signer's certificate and chain are the same on every
    signature a key makes, and x509.Certificate hashes and compares by its
    DER, which alone determines the result. Bounded; public data only.
    """
    unique: dict[bytes, None] = {}
    for c in certs:
        unique.setdefault(c.public_bytes(serialization.Encoding.DER), None)
    return alg.der_set_of(unique, tag=0xA0)


def _check_key_matches(private_key: PrivateKeyTypes, cert: x509.Certificate) -> None:
    try:
        mine = private_key.public_key()
    except (AttributeError, ValueError, TypeError) as exc:
        raise InvalidKeyError("unusable signing key") from exc
    # cryptography compares public keys by their key material (and keys of
    # different types as unequal), without encoding either.
    if mine != cert.public_key():
        raise InvalidKeyError("the signing key does not match the certificate")


def _signature_algorithm(private_key: PrivateKeyTypes, digest: str, rsa_pss: bool) -> bytes:
    """The DER signatureAlgorithm of a SignerInfo for this key."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        if rsa_pss:
            # RFC 4056 §2: parameters MUST be present; salt = hash length.
            size = alg.hash_algorithm(digest).digest_size
            params = alg.rsassa_pss_parameters(digest, size)
            return alg.algorithm_identifier(alg.OID_RSASSA_PSS, params)
        # RFC 5754 §3.2: sha*WithRSAEncryption with NULL parameters.
        return alg.algorithm_identifier(alg.RSA_PKCS1_OIDS[digest], alg.DER_NULL)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not isinstance(private_key.curve, _EC_CURVES):
            raise UnsupportedAlgorithmError(f"unsupported curve {private_key.curve.name}")
        # RFC 5753 §2.1.1 / RFC 5758 §3.2: parameters absent.
        return alg.algorithm_identifier(alg.ECDSA_OIDS[digest])
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        # RFC 8419 §3: id-Ed25519, parameters absent.
        return alg.algorithm_identifier(alg.OID_ED25519)
    if isinstance(private_key, ed448.Ed448PrivateKey):
        raise UnsupportedAlgorithmError("Ed448 signing is not offered")
    raise UnsupportedAlgorithmError(f"unsupported signing key type {type(private_key).__name__}")


def _sign(private_key: PrivateKeyTypes, data: bytes, digest: str, rsa_pss: bool) -> bytes:
    if isinstance(private_key, rsa.RSAPrivateKey):
        h = alg.hash_algorithm(digest)
        if rsa_pss:
            pss = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
            return private_key.sign(data, pss, h)
        return private_key.sign(data, padding.PKCS1v15(), h)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        # cryptography returns the DER Ecdsa-Sig-Value that CMS carries.
        return private_key.sign(data, ec.ECDSA(alg.hash_algorithm(digest)))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(data)
    raise UnsupportedAlgorithmError(f"unsupported signing key type {type(private_key).__name__}")


def sign_content(
    content: bytes,
    *,
    private_key: PrivateKeyTypes,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
    digest: str = "sha256",
    detached: bool = True,
    signing_time: datetime,
    rsa_pss: bool = False,
) -> bytes:
    """Sign ``content``; returns a DER ContentInfo holding a SignedData.

    The signed attributes are contentType, messageDigest, signingTime and
    SMIMECapabilities (RFC 8551 §2.5). The signer's certificate and
    ``chain`` are included; the signer is named by issuerAndSerialNumber.
    """
    digest = _effective_digest(private_key, digest)
    _check_key_matches(private_key, cert)
    sig_alg = _signature_algorithm(private_key, digest, rsa_pss)

    attributes = [
        _attribute(alg.OID_CONTENT_TYPE, alg.der_oid(alg.OID_DATA)),
        _attribute(alg.OID_MESSAGE_DIGEST, alg.der_octet_string(alg.digest(digest, content))),
        _attribute(alg.OID_SIGNING_TIME, _signing_time(signing_time)),
        _attribute(alg.OID_SMIME_CAPABILITIES, _smime_capabilities()),
    ]
    # RFC 5652 §5.4: the signature covers the DER of the attributes with the
    # SET OF tag; the SignerInfo carries the same contents under [0] IMPLICIT.
    signed_attrs_set = alg.der_set_of(attributes)
    signature = _sign(private_key, signed_attrs_set, digest, rsa_pss)

    digest_alg = alg.digest_algorithm_identifier(digest)
    signer_info = alg.der_sequence(
        alg.der_integer(1),  # version 1: sid is issuerAndSerialNumber (§5.3)
        alg.issuer_and_serial_number(cert),
        digest_alg,
        alg.der_implicit_constructed(0, signed_attrs_set),
        sig_alg,
        alg.der_octet_string(signature),
    )

    encap_parts = [alg.der_oid(alg.OID_DATA)]
    if not detached:
        encap_parts.append(alg.der_explicit(0, alg.der_octet_string(content)))

    signed_data = alg.der_sequence(
        # Version 1: id-data content, X.509 certificates only, sid
        # issuerAndSerialNumber (RFC 5652 §5.1).
        alg.der_integer(1),
        alg.der_set_of([digest_alg]),
        alg.der_sequence(*encap_parts),
        _certificates_set((cert, *chain)),  # certificates [0] IMPLICIT SET OF
        alg.der_set_of([signer_info]),
    )
    return alg.der_sequence(alg.der_oid(alg.OID_SIGNED_DATA), alg.der_explicit(0, signed_data))
