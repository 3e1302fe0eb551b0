"""CMS algorithm vocabulary: OIDs, names, weak-algorithm judgement, DER helpers.

One table per role (digest, signature, content cipher, key wrap, key
agreement) so the signer, the verifier and the envelope code cannot disagree
on what an OID means. The DER helpers build exact encodings by hand:
asn1crypto's builders force NULL parameters on SHA-2 identifiers, which RFC
5754 §2 forbids generating ("Implementations MUST generate SHA2
AlgorithmIdentifiers with absent parameters").
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from secmail.errors import ErrorReason, UnsupportedAlgorithmError
from secmail.policy import AlgorithmPolicy

# --- content types (RFC 5652 §4-§6, RFC 5083 §1) ---------------------------
OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"

# --- attributes (RFC 5652 §11, RFC 8551 §2.5.2) -----------------------------
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_COUNTER_SIGNATURE = "1.2.840.113549.1.9.6"
OID_SMIME_CAPABILITIES = "1.2.840.113549.1.9.15"

# --- digests -----------------------------------------------------------------
OID_MD5 = "1.2.840.113549.2.5"
OID_SHA1 = "1.3.14.3.2.26"
OID_SHA224 = "2.16.840.1.101.3.4.2.4"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_SHA384 = "2.16.840.1.101.3.4.2.2"
OID_SHA512 = "2.16.840.1.101.3.4.2.3"
OID_SHA3_256 = "2.16.840.1.101.3.4.2.8"
OID_SHA3_384 = "2.16.840.1.101.3.4.2.9"
OID_SHA3_512 = "2.16.840.1.101.3.4.2.10"
# RFC 8419 §2.3: Ed448 pairs with SHAKE256 at 512 bits of output.
OID_SHAKE256 = "2.16.840.1.101.3.4.2.12"

#: Digest OID -> name in the ``hashlib``/policy spelling.
DIGEST_NAMES: dict[str, str] = {
    OID_MD5: "md5",
    OID_SHA1: "sha1",
    OID_SHA224: "sha224",
    OID_SHA256: "sha256",
    OID_SHA384: "sha384",
    OID_SHA512: "sha512",
    OID_SHA3_256: "sha3_256",
    OID_SHA3_384: "sha3_384",
    OID_SHA3_512: "sha3_512",
    OID_SHAKE256: "shake256",
}
DIGEST_OIDS: dict[str, str] = {name: oid for oid, name in DIGEST_NAMES.items()}

#: RFC 8551 §3.5.3.2 micalg values.
MICALG: dict[str, str] = {
    "md5": "md5",
    "sha1": "sha-1",
    "sha224": "sha-224",
    "sha256": "sha-256",
    "sha384": "sha-384",
    "sha512": "sha-512",
}

# --- signature algorithms ------------------------------------------------------
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_MD5_RSA = "1.2.840.113549.1.1.4"
OID_SHA1_RSA = "1.2.840.113549.1.1.5"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_SHA256_RSA = "1.2.840.113549.1.1.11"
OID_SHA384_RSA = "1.2.840.113549.1.1.12"
OID_SHA512_RSA = "1.2.840.113549.1.1.13"
OID_SHA224_RSA = "1.2.840.113549.1.1.14"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_ECDSA_SHA1 = "1.2.840.10045.4.1"
OID_ECDSA_SHA224 = "1.2.840.10045.4.3.1"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
OID_ECDSA_SHA384 = "1.2.840.10045.4.3.3"
OID_ECDSA_SHA512 = "1.2.840.10045.4.3.4"
OID_ED25519 = "1.3.101.112"
OID_ED448 = "1.3.101.113"
OID_X25519 = "1.3.101.110"
OID_X448 = "1.3.101.111"
OID_DSA = "1.2.840.10040.4.1"
OID_DSA_SHA1 = "1.2.840.10040.4.3"
OID_DSA_SHA224 = "2.16.840.1.101.3.4.3.1"
OID_DSA_SHA256 = "2.16.840.1.101.3.4.3.2"

OID_SECP256R1 = "1.2.840.10045.3.1.7"
OID_SECP384R1 = "1.3.132.0.34"
OID_SECP521R1 = "1.3.132.0.35"


class SigFamily(enum.Enum):
    RSA_PKCS1 = "rsa-pkcs1v15"
    RSA_PSS = "rsa-pss"
    ECDSA = "ecdsa"
    ED25519 = "ed25519"
    ED448 = "ed448"
    DSA = "dsa"


@dataclass(frozen=True, slots=True)
class SignatureAlgorithm:
    family: SigFamily
    #: The hash the OID fixes, or None when the SignerInfo's digestAlgorithm
    #: decides (rsaEncryption, id-ecPublicKey, EdDSA).
    digest: str | None


SIGNATURE_ALGORITHMS: dict[str, SignatureAlgorithm] = {
    # RFC 3370 §3.2: rsaEncryption is acceptable as a signature algorithm.
    OID_RSA_ENCRYPTION: SignatureAlgorithm(SigFamily.RSA_PKCS1, None),
    OID_MD5_RSA: SignatureAlgorithm(SigFamily.RSA_PKCS1, "md5"),
    OID_SHA1_RSA: SignatureAlgorithm(SigFamily.RSA_PKCS1, "sha1"),
    OID_SHA224_RSA: SignatureAlgorithm(SigFamily.RSA_PKCS1, "sha224"),
    OID_SHA256_RSA: SignatureAlgorithm(SigFamily.RSA_PKCS1, "sha256"),
    OID_SHA384_RSA: SignatureAlgorithm(SigFamily.RSA_PKCS1, "sha384"),
    OID_SHA512_RSA: SignatureAlgorithm(SigFamily.RSA_PKCS1, "sha512"),
    # The hash of RSASSA-PSS lives in its parameters (RFC 4056 §2).
    OID_RSASSA_PSS: SignatureAlgorithm(SigFamily.RSA_PSS, None),
    # Some old producers put id-ecPublicKey in signatureAlgorithm.
    OID_EC_PUBLIC_KEY: SignatureAlgorithm(SigFamily.ECDSA, None),
    OID_ECDSA_SHA1: SignatureAlgorithm(SigFamily.ECDSA, "sha1"),
    OID_ECDSA_SHA224: SignatureAlgorithm(SigFamily.ECDSA, "sha224"),
    OID_ECDSA_SHA256: SignatureAlgorithm(SigFamily.ECDSA, "sha256"),
    OID_ECDSA_SHA384: SignatureAlgorithm(SigFamily.ECDSA, "sha384"),
    OID_ECDSA_SHA512: SignatureAlgorithm(SigFamily.ECDSA, "sha512"),
    OID_ED25519: SignatureAlgorithm(SigFamily.ED25519, None),
    OID_ED448: SignatureAlgorithm(SigFamily.ED448, None),
    OID_DSA: SignatureAlgorithm(SigFamily.DSA, None),
    OID_DSA_SHA1: SignatureAlgorithm(SigFamily.DSA, "sha1"),
    OID_DSA_SHA224: SignatureAlgorithm(SigFamily.DSA, "sha224"),
    OID_DSA_SHA256: SignatureAlgorithm(SigFamily.DSA, "sha256"),
}

#: Families secmail refuses to evaluate, by policy. DSA is absent from RFC
#: 8551 and deprecated by FIPS 186-5; its signatures are reported as
#: UNSUPPORTED_ALGORITHM rather than verified.
REFUSED_SIGNATURE_FAMILIES = frozenset({SigFamily.DSA})

RSA_PKCS1_OIDS: dict[str, str] = {
    "sha1": OID_SHA1_RSA,
    "sha224": OID_SHA224_RSA,
    "sha256": OID_SHA256_RSA,
    "sha384": OID_SHA384_RSA,
    "sha512": OID_SHA512_RSA,
}
ECDSA_OIDS: dict[str, str] = {
    "sha1": OID_ECDSA_SHA1,
    "sha224": OID_ECDSA_SHA224,
    "sha256": OID_ECDSA_SHA256,
    "sha384": OID_ECDSA_SHA384,
    "sha512": OID_ECDSA_SHA512,
}

# --- content encryption ----------------------------------------------------------
OID_AES128_CBC = "2.16.840.1.101.3.4.1.2"
OID_AES192_CBC = "2.16.840.1.101.3.4.1.22"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
OID_AES128_GCM = "2.16.840.1.101.3.4.1.6"
OID_AES192_GCM = "2.16.840.1.101.3.4.1.26"
OID_AES256_GCM = "2.16.840.1.101.3.4.1.46"
OID_CHACHA20_POLY1305 = "1.2.840.113549.1.9.16.3.18"
OID_DES_EDE3_CBC = "1.2.840.113549.3.7"
OID_DES_CBC = "1.3.14.3.2.7"
OID_RC2_CBC = "1.2.840.113549.3.2"


class CipherMode(enum.Enum):
    CBC = "cbc"
    GCM = "gcm"
    CHACHA20_POLY1305 = "chacha20-poly1305"


@dataclass(frozen=True, slots=True)
class ContentCipher:
    oid: str
    #: Reported name, e.g. "aes-256-gcm".
    name: str
    #: The family name as AlgorithmPolicy.weak_ciphers spells it.
    family: str
    key_size: int
    mode: CipherMode

    @property
    def aead(self) -> bool:
        return self.mode is not CipherMode.CBC


CONTENT_CIPHERS: dict[str, ContentCipher] = {
    c.oid: c
    for c in (
        ContentCipher(OID_AES128_CBC, "aes-128-cbc", "aes", 16, CipherMode.CBC),
        ContentCipher(OID_AES192_CBC, "aes-192-cbc", "aes", 24, CipherMode.CBC),
        ContentCipher(OID_AES256_CBC, "aes-256-cbc", "aes", 32, CipherMode.CBC),
        ContentCipher(OID_AES128_GCM, "aes-128-gcm", "aes", 16, CipherMode.GCM),
        ContentCipher(OID_AES192_GCM, "aes-192-gcm", "aes", 24, CipherMode.GCM),
        ContentCipher(OID_AES256_GCM, "aes-256-gcm", "aes", 32, CipherMode.GCM),
        ContentCipher(
            OID_CHACHA20_POLY1305,
            "chacha20-poly1305",
            "chacha20",
            32,
            CipherMode.CHACHA20_POLY1305,
        ),
        ContentCipher(OID_DES_EDE3_CBC, "3des-cbc", "3des", 24, CipherMode.CBC),
        ContentCipher(OID_DES_CBC, "des-cbc", "des", 8, CipherMode.CBC),
        # Only RC2 with 128 effective key bits: that is all cryptography offers.
        ContentCipher(OID_RC2_CBC, "rc2-128-cbc", "rc2", 16, CipherMode.CBC),
    )
}

# --- key transport / wrap / agreement -----------------------------------------------
OID_RSAES_OAEP = "1.2.840.113549.1.1.7"
OID_P_SPECIFIED = "1.2.840.113549.1.1.9"
OID_AES128_WRAP = "2.16.840.1.101.3.4.1.5"
OID_AES192_WRAP = "2.16.840.1.101.3.4.1.25"
OID_AES256_WRAP = "2.16.840.1.101.3.4.1.45"

#: Key-wrap OID -> KEK length in bytes (RFC 3565 §2.3.2).
KEY_WRAPS: dict[str, int] = {OID_AES128_WRAP: 16, OID_AES192_WRAP: 24, OID_AES256_WRAP: 32}


class KDF(enum.Enum):
    X963 = "x963"
    HKDF = "hkdf"


@dataclass(frozen=True, slots=True)
class KeyAgreementScheme:
    oid: str
    kdf: KDF
    digest: str


OID_ECDH_SHA1KDF = "1.3.133.16.840.63.0.2"
OID_ECDH_SHA224KDF = "1.3.132.1.11.0"
OID_ECDH_SHA256KDF = "1.3.132.1.11.1"
OID_ECDH_SHA384KDF = "1.3.132.1.11.2"
OID_ECDH_SHA512KDF = "1.3.132.1.11.3"
OID_ECDH_HKDF_SHA256 = "1.2.840.113549.1.9.16.3.19"
OID_ECDH_HKDF_SHA384 = "1.2.840.113549.1.9.16.3.20"
OID_ECDH_HKDF_SHA512 = "1.2.840.113549.1.9.16.3.21"

KEY_AGREEMENT_SCHEMES: dict[str, KeyAgreementScheme] = {
    s.oid: s
    for s in (
        # RFC 5753 §7.1.4 (stdDH) ...
        KeyAgreementScheme(OID_ECDH_SHA1KDF, KDF.X963, "sha1"),
        KeyAgreementScheme(OID_ECDH_SHA224KDF, KDF.X963, "sha224"),
        KeyAgreementScheme(OID_ECDH_SHA256KDF, KDF.X963, "sha256"),
        KeyAgreementScheme(OID_ECDH_SHA384KDF, KDF.X963, "sha384"),
        KeyAgreementScheme(OID_ECDH_SHA512KDF, KDF.X963, "sha512"),
        # ... and cofactorDH, identical on the prime curves (cofactor 1).
        KeyAgreementScheme("1.3.133.16.840.63.0.3", KDF.X963, "sha1"),
        KeyAgreementScheme("1.3.132.1.14.0", KDF.X963, "sha224"),
        KeyAgreementScheme("1.3.132.1.14.1", KDF.X963, "sha256"),
        KeyAgreementScheme("1.3.132.1.14.2", KDF.X963, "sha384"),
        KeyAgreementScheme("1.3.132.1.14.3", KDF.X963, "sha512"),
        # RFC 8418 §2.2 HKDF schemes (X25519/X448).
        KeyAgreementScheme(OID_ECDH_HKDF_SHA256, KDF.HKDF, "sha256"),
        KeyAgreementScheme(OID_ECDH_HKDF_SHA384, KDF.HKDF, "sha384"),
        KeyAgreementScheme(OID_ECDH_HKDF_SHA512, KDF.HKDF, "sha512"),
    )
}


# --- hashes ------------------------------------------------------------------------------
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
    "sha3_256": hashes.SHA3_256,
    "sha3_384": hashes.SHA3_384,
    "sha3_512": hashes.SHA3_512,
    "shake256": lambda: hashes.SHAKE256(64),
}


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    """The cryptography hash for a digest name; UnsupportedAlgorithmError if none."""
    factory = _HASHES.get(name)
    if factory is None:
        raise UnsupportedAlgorithmError(
            f"unsupported digest algorithm {name}", reason=ErrorReason.UNSUPPORTED_ALGORITHM
        )
    return factory()


def digest(name: str, data: bytes) -> bytes:
    h = hashes.Hash(hash_algorithm(name))
    h.update(data)
    return h.finalize()


# --- policy ---------------------------------------------------------------------------------
def is_weak_digest(name: str, policy: AlgorithmPolicy) -> bool:
    return name not in policy.signature_digests


def is_weak_cipher(cipher: ContentCipher, policy: AlgorithmPolicy) -> bool:
    weak = policy.weak_ciphers
    if cipher.family in weak:
        return True
    # The policy also knows asn1crypto's spelling of 3DES.
    return cipher.family == "3des" and "tripledes_3key" in weak


# --- DER ---------------------------------------------------------------------------------
def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_length(len(content)) + content


def der_sequence(*items: bytes) -> bytes:
    return der_tlv(0x30, b"".join(items))


def der_set_of(items: Iterable[bytes], *, tag: int = 0x31) -> bytes:
    """A DER SET OF: the elements sorted by their encodings (X.690 §11.6)."""
    return der_tlv(tag, b"".join(sorted(items)))


@functools.lru_cache(maxsize=256)
def der_oid(dotted: str) -> bytes:
    # Memoised: a signature needs ~13 OIDs, all constants of this module,
    # and asn1crypto's encoder costs ~10 us each. The result is immutable
    # bytes and depends on ``dotted`` alone; the cache is bounded.
    return bytes(core.ObjectIdentifier(dotted).dump())


def der_integer(value: int) -> bytes:
    """A DER INTEGER: two's complement in the fewest octets (X.690 §8.3.2)."""
    # Octets for the magnitude plus a sign bit; ~value for a negative one
    # so that e.g. -128 is the single octet 0x80. Matches asn1crypto's
    # encoder (tests/smime/test_sign_der.py) at a tenth of the cost.
    size = ((value if value >= 0 else ~value).bit_length() + 8) // 8
    return der_tlv(0x02, value.to_bytes(size, "big", signed=True))


def der_octet_string(value: bytes) -> bytes:
    return der_tlv(0x04, value)


def der_bit_string(value: bytes) -> bytes:
    return der_tlv(0x03, b"\x00" + value)


DER_NULL = b"\x05\x00"


def der_explicit(number: int, inner: bytes) -> bytes:
    """A context-specific constructed tag around ``inner``: [n] EXPLICIT, or
    [n] IMPLICIT of a constructed type when ``inner`` is its contents."""
    return der_tlv(0xA0 | number, inner)


def der_implicit_constructed(number: int, der: bytes) -> bytes:
    """Re-tag a constructed TLV (SEQUENCE/SET) as [n] IMPLICIT."""
    return bytes([0xA0 | number]) + der[1:]


def der_implicit_primitive(number: int, der: bytes) -> bytes:
    """Re-tag a primitive TLV (e.g. OCTET STRING) as [n] IMPLICIT."""
    return bytes([0x80 | number]) + der[1:]


def algorithm_identifier(oid: str, parameters: bytes | None = None) -> bytes:
    """AlgorithmIdentifier; ``parameters`` is a DER TLV or None for absent."""
    if parameters is None or parameters == DER_NULL:
        # The constant ones (a signature needs 3-4), memoised; those with
        # per-message parameters (a cipher's random IV) are not, so that
        # they never push the constants out.
        return _constant_identifier(oid, parameters)
    return der_sequence(der_oid(oid), parameters)


@functools.lru_cache(maxsize=256)
def _constant_identifier(oid: str, parameters: bytes | None) -> bytes:
    return der_sequence(der_oid(oid), parameters or b"")


def digest_algorithm_identifier(name: str) -> bytes:
    """RFC 5754 §2: SHA-2 identifiers are generated with absent parameters."""
    return algorithm_identifier(DIGEST_OIDS[name])


def rfc4055_hash_identifier(name: str) -> bytes:
    """RFC 4055 §2.1: inside RSASSA-PSS and RSAES-OAEP parameters the hash
    identifiers carry NULL (sha256Identifier ::= { id-sha256, NULL })."""
    return algorithm_identifier(DIGEST_OIDS[name], DER_NULL)


def mgf1_identifier(name: str) -> bytes:
    return algorithm_identifier(OID_MGF1, rfc4055_hash_identifier(name))


def rsassa_pss_parameters(name: str, salt_length: int) -> bytes:
    """RSASSA-PSS-params (RFC 4055 §3.1); trailerField keeps its DEFAULT."""
    return der_sequence(
        der_explicit(0, rfc4055_hash_identifier(name)),
        der_explicit(1, mgf1_identifier(name)),
        der_explicit(2, der_integer(salt_length)),
    )


def rsaes_oaep_parameters(name: str) -> bytes:
    """RSAES-OAEP-params (RFC 4055 §4.1) with pSourceFunc at its DEFAULT."""
    return der_sequence(
        der_explicit(0, rfc4055_hash_identifier(name)),
        der_explicit(1, mgf1_identifier(name)),
    )


@functools.lru_cache(maxsize=256)
def issuer_and_serial_number(cert: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber (RFC 5652 §10.2.4) naming ``cert``.

    The issuer's bytes are copied from the certificate, never re-encoded, so
    the identifier matches byte for byte whatever the issuer's string types.
    """
    # Memoised per certificate: x509.Certificate hashes and compares by its
    # DER, which alone determines the result, and the asn1crypto parse costs
    # ~0.1 ms per signature. Bounded, and it holds public data only.
    der = cert.public_bytes(serialization.Encoding.DER)
    issuer = asn1_x509.Certificate.load(der)["tbs_certificate"]["issuer"]
    return der_sequence(bytes(issuer.dump()), der_integer(cert.serial_number))
