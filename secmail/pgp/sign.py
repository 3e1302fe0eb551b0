"""Detached OpenPGP signatures for PGP/MIME (RFC 3156 §5).

Who does the secret-key arithmetic:

* Ed25519, Ed448, ECDSA: Sequoia (``_backend.sign_detached``; a
  :class:`keys.HeldTSK` keeps the engine's signer between requests).
* RSA: OpenSSL, through ``cryptography`` (:func:`_rsa_sign`), with the
  signature packet written here. Sequoia's RSA is the RustCrypto ``rsa``
  crate, whose private-key operation is not constant time
  (RUSTSEC-2023-0071, "Marvin"); OpenSSL blinds every RSA private
  operation, and re-checks a CRT result before releasing it (a faulty
  CRT signature would leak a factor of the modulus). secmail used to have
  GnuPG make these signatures, in a fresh GNUPGHOME per message: ~40 ms
  each, against ~2 ms here, for the same protection (libgcrypt blinds
  too). The input is our own outgoing message, never attacker-chosen
  ciphertext; even so nothing about it reaches Sequoia's RSA.

The packet is a v4 binary-document signature (type 0x00) made as
RFC 9580 §5.2.4 says: the hash covers the signed data, then the version,
type, algorithms and hashed subpacket area, then the v4 trailer
(0x04 0xFF, four-octet length). The digest is computed by the same code
that verifies signatures (``keys.signature_digest``), over a packet
parsed back from the bytes written here. Hashed subpackets: Issuer
Fingerprint (§5.2.3.35) and Signature Creation Time (§5.2.3.11, which
MUST be hashed); unhashed: Issuer Key ID (§5.2.3.12), as GnuPG writes
them. Hash: SHA-256, which every implementation has (§9.5).

Every new signature, whoever made it, is verified by Sequoia before it
leaves (a wrong key, a faulty computation or a malformed packet are
refused), and the interop tests have GnuPG, sqop, gosop and PGPainless
verify it.
"""

from __future__ import annotations

import struct
from datetime import datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from secmail.errors import (
    ErrorReason,
    InputError,
    InvalidKeyError,
    KeyNotFoundError,
    SecmailError,
    UnsupportedAlgorithmError,
)
from secmail.pgp import _backend, keys
from secmail.pgp import packets as pk

#: SHA-256 (RFC 9580 §9.5), the hash of every RSA signature secmail makes.
_RSA_HASH = 8


def select_signing_key(tsk: bytes, at: datetime) -> tuple[keys.CertInfo, keys.KeyInfo]:
    """The newest usable signing key of ``tsk`` that has its secret.

    Raises KeyNotFoundError (reason KEY_UNUSABLE) when the key is revoked,
    expired, unbound or has no signing-capable secret key at ``at``.
    """
    try:
        info = keys.load_cert(tsk, at)
    except InputError as exc:
        raise InvalidKeyError("unreadable OpenPGP secret key") from exc
    candidates = [k for k in info.signing_keys() if k.key.is_secret and keys._has_secret_material(k.key)]
    for k in candidates:
        area = k.key.secret_area or b""
        if area[:1] != b"\x00":
            raise InvalidKeyError("the OpenPGP secret key is still passphrase protected")
    if not candidates:
        why = "; ".join(info.problems) or "no signing-capable secret key"
        raise KeyNotFoundError(
            f"OpenPGP key {info.fingerprint} cannot sign: {why}",
            reason=ErrorReason.KEY_UNUSABLE,
            metadata={"key_id": info.fingerprint},
        )
    best = max(candidates, key=lambda k: k.key.created)
    return info, best


def sign_detached(data: bytes, tsk: bytes, *, at: datetime | None = None) -> tuple[bytes, str]:
    """Sign canonical (CRLF) ``data``: (ASCII-armored signature, micalg).

    The signature is a binary-document signature (type 0x00) over the
    exact bytes given, as RFC 3156 §5 requires of the signed MIME entity.
    RSA keys sign in OpenSSL, others in Sequoia (see the module's
    docstring); either way the result is checked before it is returned.
    """
    at = at or keys.now()
    info, key = select_signing_key(tsk, at)
    if key.key.algorithm in pk.RSA_ALGOS:
        if key.key.version != 4:
            raise UnsupportedAlgorithmError("signing with a v6 RSA key is not supported")
        binary = _rsa_sign(key.key, data, keys.now(), keys.rsa_private_key_of(tsk, key.key))
    else:
        # Binary from the engine, armored here: what is checked below is
        # exactly what is armored, with no dearmoring in between.
        binary = _backend.sign_detached(engine_signer(tsk, info.secret_packets(key)), data, armor=False)
    armored = _backend.armor(binary, "signature")
    sigs = [pk.parse_signature(p) for p in pk.read_packets(binary)]
    if len(sigs) != 1 or sigs[0].sig_type != pk.SIG_BINARY:
        raise SecmailError("the OpenPGP engine produced an unexpected signature")
    sig = sigs[0]
    if sig.issuer_fingerprint not in (None, key.key.fingerprint) or (
        sig.issuer_key_id not in (None, key.key.key_id)
    ):
        raise SecmailError("the OpenPGP engine signed with another key than requested")
    # Check the new signature with Sequoia before it leaves: catches a
    # faulty RSA computation (which could leak the key) or a wrong key.
    if _backend.verify_detached(data, binary, info.public_packets()) is None:
        raise SecmailError("the new OpenPGP signature does not verify")
    micalg = pk.MICALG_NAMES.get(sig.hash_algorithm)
    if micalg is None:
        raise UnsupportedAlgorithmError("signature made with an unknown hash algorithm")
    return armored, micalg


def engine_signer(tsk: bytes, reduced: bytes) -> _backend.EngineSigner | bytes:
    """What the engine signs with for ``reduced`` (a TSK derived from
    ``tsk`` holding only the chosen signing key): a signer kept on a
    :class:`keys.HeldTSK`, else the bytes, parsed by the engine per call.
    The chosen key is judged at the request's time before this is asked
    (:func:`select_signing_key`), whether the signer was kept or not."""
    if isinstance(tsk, keys.HeldTSK):
        return tsk.engine_signer(reduced)
    return reduced


def _subpacket(kind: int, value: bytes) -> bytes:
    # RFC 9580 §5.2.3.7: length (type octet included), type, value. Every
    # subpacket written here is shorter than 192 octets.
    return bytes([1 + len(value), kind]) + value


def _v4_body(key: pk.KeyPacket, hashed: bytes, unhashed: bytes, left16: bytes, value: bytes) -> bytes:
    return (
        bytes([4, pk.SIG_BINARY, key.algorithm, _RSA_HASH])
        + struct.pack(">H", len(hashed))
        + hashed
        + struct.pack(">H", len(unhashed))
        + unhashed
        + left16
        + pk.mpi_encode(value)
    )


def _rsa_sign(key: pk.KeyPacket, data: bytes, created: datetime, private: RSAPrivateKey) -> bytes:
    """A binary v4 signature packet by the RSA secret key ``key``
    (``private``: OpenSSL's object for it, :func:`keys.rsa_private_key`)."""
    hashed = _subpacket(pk.SP_ISSUER_FPR, b"\x04" + bytes.fromhex(key.fingerprint)) + _subpacket(
        pk.SP_CREATION_TIME, struct.pack(">I", int(created.timestamp()))
    )
    unhashed = _subpacket(pk.SP_ISSUER, bytes.fromhex(key.key_id))
    # The digest depends on the hashed part only (RFC 9580 §5.2.4); the
    # placeholder left16 and value are replaced below.
    draft = pk.parse_signature_body(_v4_body(key, hashed, unhashed, b"\0\0", b"\x01"))
    digest = keys.signature_digest(draft, data)
    if digest is None:
        raise SecmailError("could not hash the data to sign")
    value = private.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    return pk.encode_packet(pk.TAG_SIGNATURE, _v4_body(key, hashed, unhashed, digest[:2], value))
