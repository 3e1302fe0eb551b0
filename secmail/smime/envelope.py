"""CMS EnvelopedData and AuthEnvelopedData (RFC 5652 §6, RFC 5083, RFC 5084).

Encryption picks the recipient info from the recipient's key: RSA gets a
KeyTransRecipientInfo (RSAES-OAEP with SHA-256 by default, RFC 8017/RFC
4055), NIST curves a KeyAgreeRecipientInfo with ephemeral-static ECDH and the
X9.63 KDF (RFC 5753), X25519/X448 the same with HKDF (RFC 8418). Recipients
are named by issuerAndSerialNumber, which OpenSSL and gpgsm expect.

Decryption never tells why it failed. Every key-unwrap failure continues
with a random content-encryption key (RFC 3218 §2.3.2), so a PKCS#1 v1.5
padding failure, a key-wrap failure and a bad content padding all end in
the same :class:`DecryptionError` ("Bleichenbacher"/"Marvin" hygiene), and
an AEAD tag failure releases no plaintext (:class:`IntegrityError`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import algos, cms, core
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers import algorithms as decrepit
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from secmail.errors import (
    DecryptionError,
    ErrorReason,
    InputError,
    IntegrityError,
    UnsupportedAlgorithmError,
)
from secmail.policy import DEFAULT_POLICY, AlgorithmPolicy
from secmail.smime import algorithms as alg

_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError)

#: The one message for every failure after a recipient was found: no oracle.
_GENERIC_FAILURE = "decryption failed"
_NO_RECIPIENT = "no recipient matches the user's keys"
_INTEGRITY_FAILURE = "the message failed its integrity check; nothing was decrypted"

_GCM_NONCE_SIZE = 12
_GCM_TAG_SIZE = 16

_CURVE_OIDS: dict[str, str] = {
    "secp256r1": alg.OID_SECP256R1,
    "secp384r1": alg.OID_SECP384R1,
    "secp521r1": alg.OID_SECP521R1,
}
#: RFC 5753 §7.1.4 pairs each curve with the KDF hash of matching strength
#: (RFC 5008 / RFC 6318 use the same pairing for P-256 and P-384).
_EC_SCHEMES: dict[str, str] = {
    "secp256r1": alg.OID_ECDH_SHA256KDF,
    "secp384r1": alg.OID_ECDH_SHA384KDF,
    "secp521r1": alg.OID_ECDH_SHA512KDF,
}


@dataclass(frozen=True)
class DecryptedContent:
    content: bytes
    #: True only for AuthEnvelopedData whose tag verified.
    integrity_protected: bool
    #: e.g. "aes-256-gcm", "aes-128-cbc", "3des-cbc".
    content_cipher: str
    #: The content cipher is in the policy's weak set (RC2, DES, 3DES...).
    weak_cipher: bool


class _GCMParameters(core.Sequence):
    """RFC 5084 §3.2."""

    _fields = [  # noqa: RUF012 - asn1crypto's declarative spec
        ("aes_nonce", core.OctetString),
        ("aes_icv_len", core.Integer, {"default": 12}),
    ]


class _ECCCMSSharedInfo(core.Sequence):
    """RFC 5753 §7.2."""

    _fields = [  # noqa: RUF012 - asn1crypto's declarative spec
        ("key_info", algos.AlgorithmIdentifier),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


# --- encryption -----------------------------------------------------------------------------------
def encrypt_content(
    content: bytes,
    recipients: Sequence[x509.Certificate],
    *,
    authenticated: bool = True,
    key_bits: int = 256,
    rsa_oaep: bool = True,
) -> bytes:
    """Encrypt ``content`` to every recipient; returns a DER ContentInfo.

    ``authenticated`` gives AuthEnvelopedData with AES-GCM (RFC 5083/5084,
    12-byte nonce, 16-byte tag); otherwise EnvelopedData with AES-CBC.
    ``rsa_oaep=False`` uses RSA PKCS#1 v1.5 key transport for RSA
    recipients (for old clients only).
    """
    if not recipients:
        raise InputError("no recipients to encrypt to", reason=ErrorReason.INVALID_ARGUMENT)
    if key_bits not in (128, 256):
        raise UnsupportedAlgorithmError(f"AES key size {key_bits} is not offered (128 or 256)")
    cek = os.urandom(key_bits // 8)
    infos = [_recipient_info(cert, cek, rsa_oaep=rsa_oaep) for cert in recipients]
    recipient_infos = alg.der_set_of(der for der, _ in infos)

    if authenticated:
        nonce = os.urandom(_GCM_NONCE_SIZE)
        sealed = AESGCM(cek).encrypt(nonce, content, None)
        ciphertext, tag = sealed[:-_GCM_TAG_SIZE], sealed[-_GCM_TAG_SIZE:]
        oid = alg.OID_AES256_GCM if key_bits == 256 else alg.OID_AES128_GCM
        # aes-ICVlen is written although 16 is not its DEFAULT (12).
        params = alg.der_sequence(alg.der_octet_string(nonce), alg.der_integer(_GCM_TAG_SIZE))
        body = alg.der_sequence(
            alg.der_integer(0),  # RFC 5083 §2.1: version MUST be 0
            recipient_infos,
            _encrypted_content_info(oid, params, ciphertext),
            alg.der_octet_string(tag),
        )
        return alg.der_sequence(alg.der_oid(alg.OID_AUTH_ENVELOPED_DATA), alg.der_explicit(0, body))

    iv = os.urandom(16)
    padder = sym_padding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    oid = alg.OID_AES256_CBC if key_bits == 256 else alg.OID_AES128_CBC
    # RFC 5652 §6.1: version 0 when every RecipientInfo is version 0 (ktri
    # with issuerAndSerialNumber); a kari (version 3) makes it 2.
    version = 0 if all(v == 0 for _, v in infos) else 2
    body = alg.der_sequence(
        alg.der_integer(version),
        recipient_infos,
        _encrypted_content_info(oid, alg.der_octet_string(iv), ciphertext),
    )
    return alg.der_sequence(alg.der_oid(alg.OID_ENVELOPED_DATA), alg.der_explicit(0, body))


def _encrypted_content_info(oid: str, params: bytes, ciphertext: bytes) -> bytes:
    return alg.der_sequence(
        alg.der_oid(alg.OID_DATA),
        alg.algorithm_identifier(oid, params),
        # encryptedContent [0] IMPLICIT OCTET STRING
        alg.der_implicit_primitive(0, alg.der_octet_string(ciphertext)),
    )


def _recipient_info(cert: x509.Certificate, cek: bytes, *, rsa_oaep: bool) -> tuple[bytes, int]:
    """(DER RecipientInfo, its version)."""
    try:
        public_key = cert.public_key()
    except (ValueError, crypto_exceptions.UnsupportedAlgorithm) as exc:
        raise UnsupportedAlgorithmError("unsupported recipient key") from exc
    rid = alg.issuer_and_serial_number(cert)

    if isinstance(public_key, rsa.RSAPublicKey):
        if rsa_oaep:
            key_alg = alg.algorithm_identifier(alg.OID_RSAES_OAEP, alg.rsaes_oaep_parameters("sha256"))
            oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
            encrypted_key = public_key.encrypt(cek, oaep)
        else:
            key_alg = alg.algorithm_identifier(alg.OID_RSA_ENCRYPTION, alg.DER_NULL)
            encrypted_key = public_key.encrypt(cek, padding.PKCS1v15())
        ktri = alg.der_sequence(alg.der_integer(0), rid, key_alg, alg.der_octet_string(encrypted_key))
        return ktri, 0

    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve_name = public_key.curve.name
        if curve_name not in _EC_SCHEMES:
            raise UnsupportedAlgorithmError(f"unsupported recipient curve {curve_name}")
        ephemeral = ec.generate_private_key(public_key.curve)
        shared = ephemeral.exchange(ec.ECDH(), public_key)
        point = ephemeral.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        # RFC 5753 §3.1.1: id-ecPublicKey whose parameters SHOULD be absent
        # or ECParameters (namedCurve); the named curve is the explicit one.
        originator_alg = alg.algorithm_identifier(alg.OID_EC_PUBLIC_KEY, alg.der_oid(_CURVE_OIDS[curve_name]))
        scheme_oid = _EC_SCHEMES[curve_name]
    elif isinstance(public_key, x25519.X25519PublicKey | x448.X448PublicKey):
        if isinstance(public_key, x25519.X25519PublicKey):
            eph25519 = x25519.X25519PrivateKey.generate()
            shared = eph25519.exchange(public_key)
            raw_public = eph25519.public_key().public_bytes_raw()
            # RFC 8418 §2: id-X25519 with absent parameters; HKDF-SHA256.
            originator_alg = alg.algorithm_identifier(alg.OID_X25519)
            scheme_oid = alg.OID_ECDH_HKDF_SHA256
        else:
            eph448 = x448.X448PrivateKey.generate()
            shared = eph448.exchange(public_key)
            raw_public = eph448.public_key().public_bytes_raw()
            originator_alg = alg.algorithm_identifier(alg.OID_X448)
            scheme_oid = alg.OID_ECDH_HKDF_SHA512
        point = raw_public
    else:
        raise UnsupportedAlgorithmError(f"cannot encrypt to a {type(public_key).__name__} certificate")

    scheme = alg.KEY_AGREEMENT_SCHEMES[scheme_oid]
    kek = _derive_kek(scheme, shared, alg.OID_AES256_WRAP, None)
    wrapped = keywrap.aes_key_wrap(kek, cek)
    originator_key = alg.der_sequence(originator_alg, alg.der_bit_string(point))
    kari = alg.der_sequence(
        alg.der_integer(3),  # RFC 5652 §6.2.2: always 3
        # originator [0] EXPLICIT OriginatorIdentifierOrKey, whose
        # originatorKey alternative is [1] IMPLICIT OriginatorPublicKey.
        alg.der_explicit(0, alg.der_implicit_constructed(1, originator_key)),
        # KeyWrapAlgorithm as the parameters of the scheme (RFC 5753 §3.1.1);
        # AES key wrap takes absent parameters (RFC 3565 §2.3.2).
        alg.algorithm_identifier(scheme_oid, alg.algorithm_identifier(alg.OID_AES256_WRAP)),
        alg.der_sequence(alg.der_sequence(rid, alg.der_octet_string(wrapped))),
    )
    return alg.der_implicit_constructed(1, kari), 3  # RecipientInfo: kari [1]


def shared_info(wrap_oid: str, ukm: bytes | None) -> bytes:
    """DER ECC-CMS-SharedInfo (RFC 5753 §7.2), the KDF's SharedInfo/info.

    keyInfo is the wrap algorithm with absent parameters (the AES wraps take
    none); entityUInfo is the ukm when present; suppPubInfo is the KEK length
    in bits as a 32-bit big-endian integer.
    """
    parts = [alg.algorithm_identifier(wrap_oid)]
    if ukm is not None:
        parts.append(alg.der_explicit(0, alg.der_octet_string(ukm)))
    kek_bits = alg.KEY_WRAPS[wrap_oid] * 8
    parts.append(alg.der_explicit(2, alg.der_octet_string(kek_bits.to_bytes(4, "big"))))
    return alg.der_sequence(*parts)


def _derive_kek(scheme: alg.KeyAgreementScheme, shared: bytes, wrap_oid: str, ukm: bytes | None) -> bytes:
    info = shared_info(wrap_oid, ukm)
    length = alg.KEY_WRAPS[wrap_oid]
    h = alg.hash_algorithm(scheme.digest)
    if scheme.kdf is alg.KDF.X963:
        return X963KDF(algorithm=h, length=length, sharedinfo=info).derive(shared)
    # RFC 8418 §2.2: HKDF with the shared secret as IKM, no salt, and the
    # ECC-CMS-SharedInfo as info (the ukm travels inside it).
    return HKDF(algorithm=h, length=length, salt=None, info=info).derive(shared)


# --- decryption -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Envelope:
    authenticated: bool
    recipient_infos: list[cms.RecipientInfo]
    cipher_oid: str
    cipher_params: bytes | None
    ciphertext: bytes
    mac: bytes
    aad: bytes


@dataclass(frozen=True, slots=True)
class _UserKey:
    cert: x509.Certificate
    issuer: asn1_x509.Name
    serial: int
    ski: bytes | None
    key: PrivateKeyTypes


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A recipient info (or one RecipientEncryptedKey of a kari) naming a user key."""

    info: cms.RecipientInfo
    encrypted_key: bytes
    user: _UserKey


def decrypt_content(
    der: bytes,
    keys: Sequence[tuple[x509.Certificate, PrivateKeyTypes]],
    *,
    policy: AlgorithmPolicy | None = None,
) -> DecryptedContent:
    """Decrypt a DER (or BER) ContentInfo holding EnvelopedData or
    AuthEnvelopedData with one of the user's (certificate, key) pairs."""
    policy = policy or DEFAULT_POLICY.algorithms
    envelope = _parse_envelope(der)
    cipher = alg.CONTENT_CIPHERS.get(envelope.cipher_oid)
    if cipher is None:
        raise UnsupportedAlgorithmError(f"unsupported content encryption algorithm {envelope.cipher_oid}")
    if cipher.aead != envelope.authenticated:
        # RFC 5083 §2.1 requires an authenticated cipher in AuthEnvelopedData,
        # and EnvelopedData has no place for a tag.
        raise UnsupportedAlgorithmError(f"{cipher.name} cannot be used in this content type")

    users = [_user_key(cert, key) for cert, key in keys]
    candidates = _candidates(envelope.recipient_infos, users)
    if not candidates:
        raise DecryptionError(_NO_RECIPIENT)

    failure: DecryptionError | None = None
    unsupported: UnsupportedAlgorithmError | None = None
    for candidate in candidates:
        try:
            cek = _unwrap(candidate, cipher.key_size)
        except UnsupportedAlgorithmError as exc:
            unsupported = unsupported or exc
            continue
        try:
            plaintext = _decrypt(cipher, envelope, cek)
        except DecryptionError as exc:
            failure = exc
            continue
        return DecryptedContent(
            content=plaintext,
            integrity_protected=cipher.aead,
            content_cipher=cipher.name,
            weak_cipher=alg.is_weak_cipher(cipher, policy),
        )
    if failure is not None:
        raise failure
    assert unsupported is not None
    raise unsupported


def _parse_envelope(der: bytes) -> _Envelope:
    try:
        info = cms.ContentInfo.load(bytes(der), strict=True)
        content_type = info["content_type"].dotted
        body = info["content"]
        if content_type == alg.OID_ENVELOPED_DATA and isinstance(body, cms.EnvelopedData):
            authenticated = False
            eci = body["encrypted_content_info"]
            mac = b""
            aad = b""
        elif content_type == alg.OID_AUTH_ENVELOPED_DATA and isinstance(body, cms.AuthEnvelopedData):
            authenticated = True
            eci = body["auth_encrypted_content_info"]
            mac = bytes(body["mac"].native)
            auth_attrs = body["auth_attrs"]
            # RFC 5083 §2.2: the authenticated attributes, DER-encoded with
            # the SET OF tag, are the AEAD's additional data.
            aad = b"" if isinstance(auth_attrs, core.Void) else alg.der_tlv(0x31, auth_attrs.contents)
        else:
            raise InputError("not a CMS EnvelopedData or AuthEnvelopedData")
        recipient_infos = list(body["recipient_infos"])
        for ri in recipient_infos:
            ri.native  # noqa: B018 - parse now: broken ASN.1 is an InputError
        cipher_alg = eci["content_encryption_algorithm"]
        cipher_oid = cipher_alg["algorithm"].dotted
        params = cipher_alg["parameters"]
        cipher_params = None if isinstance(params, core.Void) else bytes(params.dump())
        encrypted = eci["encrypted_content"]
        if isinstance(encrypted, core.Void):
            raise InputError("detached encrypted content is not supported")
        ciphertext = encrypted.native
        if not isinstance(ciphertext, bytes):
            raise InputError("unreadable encrypted content")
    except InputError:
        raise
    except _PARSE_ERRORS as exc:
        raise InputError("unreadable CMS enveloped data") from exc
    return _Envelope(
        authenticated=authenticated,
        recipient_infos=recipient_infos,
        cipher_oid=cipher_oid,
        cipher_params=cipher_params,
        ciphertext=ciphertext,
        mac=mac,
        aad=aad,
    )


def _user_key(cert: x509.Certificate, key: PrivateKeyTypes) -> _UserKey:
    tbs = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))["tbs_certificate"]
    try:
        ski: bytes | None = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        ski = None
    return _UserKey(cert, tbs["issuer"], cert.serial_number, ski, key)


def _names(user: _UserKey, rid: core.Choice) -> bool:
    if rid.name == "issuer_and_serial_number":
        chosen = rid.chosen
        return bool(chosen["serial_number"].native == user.serial and chosen["issuer"] == user.issuer)
    if rid.name == "subject_key_identifier":
        return user.ski is not None and bytes(rid.chosen.native) == user.ski
    if rid.name == "r_key_id":
        return user.ski is not None and bytes(rid.chosen["subject_key_identifier"].native) == user.ski
    return False


def _candidates(infos: Sequence[cms.RecipientInfo], users: Sequence[_UserKey]) -> list[_Candidate]:
    found: list[_Candidate] = []
    for info in infos:
        if info.name == "ktri":
            ktri = info.chosen
            for user in users:
                if isinstance(user.key, rsa.RSAPrivateKey) and _names(user, ktri["rid"]):
                    found.append(_Candidate(info, bytes(ktri["encrypted_key"].native), user))
        elif info.name == "kari":
            for rek in info.chosen["recipient_encrypted_keys"]:
                for user in users:
                    agreeing = isinstance(
                        user.key,
                        ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey | x448.X448PrivateKey,
                    )
                    if agreeing and _names(user, rek["rid"]):
                        found.append(_Candidate(info, bytes(rek["encrypted_key"].native), user))
        # kekri, pwri and ori name no certificate: nothing to match.
    return found


def _unwrap(candidate: _Candidate, cek_size: int) -> bytes:
    """The content-encryption key, or random bytes of the right size when
    unwrapping fails: the failure surfaces later, indistinguishable from a
    bad ciphertext. Raises only UnsupportedAlgorithmError (a fact visible in
    the message itself, hence no oracle)."""
    if candidate.info.name == "ktri":
        cek = _unwrap_ktri(candidate.info.chosen, candidate.encrypted_key, candidate.user.key)
    else:
        cek = _unwrap_kari(candidate.info.chosen, candidate.encrypted_key, candidate.user.key)
    if cek is None or len(cek) != cek_size:
        return os.urandom(cek_size)
    return cek


def _unwrap_ktri(ktri: cms.KeyTransRecipientInfo, encrypted_key: bytes, key: PrivateKeyTypes) -> bytes | None:
    assert isinstance(key, rsa.RSAPrivateKey)
    key_alg = ktri["key_encryption_algorithm"]
    oid = key_alg["algorithm"].dotted
    pad: padding.AsymmetricPadding
    if oid == alg.OID_RSA_ENCRYPTION:
        pad = padding.PKCS1v15()
    elif oid == alg.OID_RSAES_OAEP:
        pad = _oaep_padding(key_alg)
    else:
        raise UnsupportedAlgorithmError(f"unsupported key transport algorithm {oid}")
    try:
        return key.decrypt(encrypted_key, pad)
    except ValueError:
        return None


def _oaep_padding(key_alg: cms.KeyEncryptionAlgorithm) -> padding.OAEP:
    """RSAES-OAEP-params (RFC 4055 §4.1), defaults SHA-1/MGF1-SHA-1/empty label."""
    params = key_alg["parameters"]
    hash_name, mgf_hash, label = "sha1", "sha1", b""
    if not isinstance(params, core.Void):
        hash_name = _digest_name(params["hash_algorithm"]["algorithm"].dotted)
        mgf = params["mask_gen_algorithm"]
        if mgf["algorithm"].dotted != alg.OID_MGF1:
            raise UnsupportedAlgorithmError("unsupported OAEP mask generation function")
        mgf_hash = _digest_name(mgf["parameters"]["algorithm"].dotted)
        source = params["p_source_algorithm"]
        if source["algorithm"].dotted != alg.OID_P_SPECIFIED:
            raise UnsupportedAlgorithmError("unsupported OAEP label source")
        label = bytes(source["parameters"].native or b"")
    return padding.OAEP(
        mgf=padding.MGF1(alg.hash_algorithm(mgf_hash)),
        algorithm=alg.hash_algorithm(hash_name),
        label=label or None,
    )


def _digest_name(oid: str) -> str:
    name = alg.DIGEST_NAMES.get(oid)
    if name is None or name == "shake256":
        raise UnsupportedAlgorithmError(f"unsupported digest algorithm {oid}")
    return name


def _unwrap_kari(kari: cms.KeyAgreeRecipientInfo, encrypted_key: bytes, key: PrivateKeyTypes) -> bytes | None:
    scheme_alg = kari["key_encryption_algorithm"]
    scheme = alg.KEY_AGREEMENT_SCHEMES.get(scheme_alg["algorithm"].dotted)
    if scheme is None:
        raise UnsupportedAlgorithmError(f"unsupported key agreement scheme {scheme_alg['algorithm'].dotted}")
    wrap_params = scheme_alg["parameters"]
    if isinstance(wrap_params, core.Void):
        raise UnsupportedAlgorithmError("key agreement without a key wrap algorithm")
    wrap_oid = algos.AlgorithmIdentifier.load(bytes(wrap_params.dump()))["algorithm"].dotted
    if wrap_oid not in alg.KEY_WRAPS:
        raise UnsupportedAlgorithmError(f"unsupported key wrap algorithm {wrap_oid}")
    originator = kari["originator"]
    if originator.name != "originator_key":
        # Static-static agreement (originator named by certificate) is not
        # used by S/MIME agents (RFC 8551 §2.3 asks for ephemeral-static).
        raise UnsupportedAlgorithmError("static-static key agreement is not supported")
    ukm_value = kari["ukm"]
    ukm = None if isinstance(ukm_value, core.Void) else bytes(ukm_value.native)

    shared = _agree(originator.chosen, key)
    if shared is None:
        return None
    kek = _derive_kek(scheme, shared, wrap_oid, ukm)
    try:
        return keywrap.aes_key_unwrap(kek, encrypted_key)
    except (keywrap.InvalidUnwrap, ValueError):
        return None


def _agree(originator_key: core.Sequence, key: PrivateKeyTypes) -> bytes | None:
    """The raw shared secret Z with the originator's ephemeral key, or None
    when that key is not a valid point of the recipient's curve."""
    key_alg = originator_key["algorithm"]
    oid = key_alg["algorithm"].dotted
    bits = bytes(originator_key["public_key"].contents)
    if not bits or bits[0] != 0:
        return None  # a BIT STRING with unused bits holds no key
    raw = bits[1:]
    try:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if oid != alg.OID_EC_PUBLIC_KEY:
                return None
            params = key_alg["parameters"]
            # RFC 5753 §3.1.1: absent, NULL or a namedCurve, which must then be
            # the recipient's curve; explicit curve parameters are refused.
            if isinstance(params, asn1_keys.ECDomainParameters):
                if params.name != "named" or params.chosen.dotted != _CURVE_OIDS.get(key.curve.name):
                    return None
            peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, raw)
            return key.exchange(ec.ECDH(), peer)
        if isinstance(key, x25519.X25519PrivateKey) and oid == alg.OID_X25519:
            return key.exchange(x25519.X25519PublicKey.from_public_bytes(raw))
        if isinstance(key, x448.X448PrivateKey) and oid == alg.OID_X448:
            return key.exchange(x448.X448PublicKey.from_public_bytes(raw))
    except (ValueError, crypto_exceptions.UnsupportedAlgorithm):
        # Includes the all-zero X25519/X448 output (RFC 7748 §6).
        return None
    return None


def _decrypt(cipher: alg.ContentCipher, envelope: _Envelope, cek: bytes) -> bytes:
    params = envelope.cipher_params
    ciphertext = envelope.ciphertext
    if cipher.mode is alg.CipherMode.GCM:
        nonce, icv_len = _gcm_parameters(params)
        if len(envelope.mac) != icv_len:
            raise IntegrityError(_INTEGRITY_FAILURE)
        try:
            decryptor = Cipher(
                algorithms.AES(cek), modes.GCM(nonce, envelope.mac, min_tag_length=icv_len)
            ).decryptor()
            decryptor.authenticate_additional_data(envelope.aad)
            # Nothing leaves this function before finalize() checked the tag.
            plaintext = decryptor.update(ciphertext)
            return plaintext + decryptor.finalize()
        except crypto_exceptions.InvalidTag as exc:
            raise IntegrityError(_INTEGRITY_FAILURE) from exc
    if cipher.mode is alg.CipherMode.CHACHA20_POLY1305:
        nonce = _octet_string_parameter(params)
        if len(nonce) != 12 or len(envelope.mac) != 16:
            raise InputError("malformed ChaCha20-Poly1305 parameters")
        try:
            return ChaCha20Poly1305(cek).decrypt(nonce, ciphertext + envelope.mac, envelope.aad)
        except crypto_exceptions.InvalidTag as exc:
            raise IntegrityError(_INTEGRITY_FAILURE) from exc
    return _decrypt_cbc(cipher, params, cek, ciphertext)


def _gcm_parameters(params: bytes | None) -> tuple[bytes, int]:
    try:
        if params is None:
            raise InputError("AES-GCM without parameters")
        parsed = _GCMParameters.load(params, strict=True)
        nonce = bytes(parsed["aes_nonce"].native)
        icv_len = int(parsed["aes_icv_len"].native)
    except _PARSE_ERRORS as exc:
        raise InputError("malformed AES-GCM parameters") from exc
    # RFC 5084 §3.2: ICV of 12 to 16 octets; cryptography takes 8..128-byte nonces.
    if icv_len not in range(12, 17) or not 8 <= len(nonce) <= 128:
        raise InputError("unsupported AES-GCM parameters")
    return nonce, icv_len


def _octet_string_parameter(params: bytes | None) -> bytes:
    try:
        if params is None:
            raise InputError("missing cipher parameters")
        value = core.OctetString.load(params, strict=True).native
    except _PARSE_ERRORS as exc:
        raise InputError("malformed cipher parameters") from exc
    if not isinstance(value, bytes):
        raise InputError("malformed cipher parameters")
    return value


def _cbc_algorithm(
    cipher: alg.ContentCipher, params: bytes | None, cek: bytes
) -> tuple[BlockCipherAlgorithm, bytes]:
    if cipher.family == "aes":
        return algorithms.AES(cek), _octet_string_parameter(params)
    if cipher.family == "3des":
        return decrepit.TripleDES(cek), _octet_string_parameter(params)
    if cipher.family == "des":
        # Single DES is 3DES with one key three times (EDE with K1=K2=K3).
        return decrepit.TripleDES(cek * 3), _octet_string_parameter(params)
    if cipher.family == "rc2":
        return decrepit.RC2(cek), _rc2_iv(params)
    raise UnsupportedAlgorithmError(f"unsupported content cipher {cipher.name}")


def _rc2_iv(params: bytes | None) -> bytes:
    """RC2-CBC-Parameter (RFC 3370 §5.2): only 128 effective key bits
    (version 58) can be decrypted with cryptography's RC2."""
    try:
        if params is None or params[:1] != b"\x30":
            raise UnsupportedAlgorithmError("RC2 with less than 128 effective key bits")
        parsed = algos.Rc2Params.load(params, strict=True)
        version = parsed["rc2_parameter_version"].native
        iv = bytes(parsed["iv"].native)
    except _PARSE_ERRORS as exc:
        raise InputError("malformed RC2 parameters") from exc
    if version != 58:
        raise UnsupportedAlgorithmError("RC2 with less than 128 effective key bits")
    return iv


def _decrypt_cbc(cipher: alg.ContentCipher, params: bytes | None, cek: bytes, ciphertext: bytes) -> bytes:
    algorithm, iv = _cbc_algorithm(cipher, params, cek)
    block = algorithm.block_size // 8
    if len(iv) != block:
        raise InputError("malformed CBC initialisation vector")
    if not ciphertext or len(ciphertext) % block:
        raise DecryptionError(_GENERIC_FAILURE)
    decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = sym_padding.PKCS7(block * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise DecryptionError(_GENERIC_FAILURE) from exc
