"""OpenPGP decryption with no release of unauthenticated plaintext.

Why secmail decrypts here rather than in ``pysequoia.decrypt``:
pysequoia 0.1.35 returns only the literal data (the signature packets
inside the message are lost), its structure check rejects the common
"encrypted, compressed, signed" layering that GnuPG produces, it inflates
compressed data without a bound, and it would do RSA secret-key
operations in the RustCrypto ``rsa`` crate. So:

1. the outer packets are walked (``packets.py``): only PKESK/SKESK then
   exactly one SEIPD (tag 18) is accepted. SED (tag 9, no integrity) and
   anything else is refused before any key is touched;
2. the session key is unwrapped with ``cryptography`` (OpenSSL):
   X25519/X448/ECDH, and RSA (see :func:`_unwrap_rsa` for why RSA runs
   in OpenSSL rather than GnuPG, and how a bad PKESK is made
   indistinguishable from a tampered message);
3. SEIPDv1 is CFB-decrypted and its MDC checked, SEIPDv2 is AEAD-decrypted
   chunk by chunk and its final tag checked (RFC 9580 §5.13) — *all* of it
   before any byte is returned; any failure is IntegrityError and nothing
   else leaves this module;
4. the inner message is decompressed with a hard output bound and parsed
   strictly; its signatures are verified by Sequoia (``verify.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, x448, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from secmail.context import VerifyContext
from secmail.errors import (
    DecryptionError,
    InputError,
    IntegrityError,
    MessageTooLargeError,
    UnsupportedAlgorithmError,
)
from secmail.pgp import keys, verify
from secmail.pgp import packets as pk
from secmail.verdict import SignerResult

#: (PKESK, own key) pairs tried at most per message. PKESKs are attacker
#: supplied, and every RSA attempt runs a whole integrity check (below).
MAX_SESSION_KEY_ATTEMPTS = 16
#: Cipher of the stand-in session key for a v3 PKESK that did not open.
_STAND_IN_CIPHER = 9  # AES-256


@dataclass(frozen=True)
class DecryptedPGP:
    content: bytes
    #: Always True when returned: the MDC or the AEAD tags verified.
    integrity_protected: bool
    #: Signatures inside the encrypted message (one-pass or not).
    signers: tuple[SignerResult, ...]
    #: e.g. "seipdv1-aes256", "seipdv2-ocb-aes256".
    algorithm: str

    def __repr__(self) -> str:  # never print plaintext
        return (
            f"DecryptedPGP(algorithm={self.algorithm!r}, content_length={len(self.content)}, "
            f"signers={len(self.signers)})"
        )


@dataclass(frozen=True, slots=True)
class _OwnKey:
    tsk: bytes
    cert: keys.CertInfo
    key: keys.KeyInfo


def _load_tsks(tsks: Sequence[bytes], ctx: VerifyContext) -> list[tuple[bytes, keys.CertInfo]]:
    # Each TSK is judged once per message, at the message's time; it is
    # never memoised (it holds unsealed secrets), but a keys.HeldTSK that
    # the caller keeps carries its own parse. Unreadable ones are skipped.
    out: list[tuple[bytes, keys.CertInfo]] = []
    for tsk in tsks:
        try:
            out.append((tsk, keys.load_cert(tsk, ctx.at)))
        except InputError:
            continue
    return out


def _own_keys(loaded: Sequence[tuple[bytes, keys.CertInfo]]) -> list[_OwnKey]:
    # Decryption may use a key that has since expired or been revoked (old
    # mail stays readable), but only a key validly bound to its
    # certificate, with secret material, of an encryption algorithm.
    out: list[_OwnKey] = []
    for tsk, info in loaded:
        for k in info.all_keys:
            if (
                k.bound
                and k.key.is_secret
                and (k.key.secret_area or b"")[:1] == b"\x00"
                and k.key.algorithm in keys._ENCRYPTION_ALGOS
                and k.flags & pk.KF_ENCRYPT
            ):
                out.append(_OwnKey(tsk, info, k))
    return out


def _unsupported_ids(loaded: Sequence[tuple[bytes, keys.CertInfo]]) -> set[str]:
    ids: set[str] = set()
    for _, info in loaded:
        for k in info.all_keys:
            if k.key.algorithm not in keys._ENCRYPTION_ALGOS:
                ids.update((k.key.key_id, k.key.fingerprint))
    return ids


def _secret_material(key: pk.KeyPacket) -> bytes:
    area = key.secret_area or b""
    return area[1:]


def _unpad(m: bytes) -> bytes:
    # PKCS#5 padding (RFC 9580 §11.5). Implementations pad to 8 octets or
    # to a fixed 40 (as GnuPG and rpgp do), so any consistent pad is read.
    n = m[-1] if m else 0
    if not 1 <= n < len(m) or m[-n:] != bytes([n]) * n:
        raise DecryptionError("could not decrypt the message")
    return m[:-n]


def _check_v3_session(blob: bytes, with_algo: bool) -> tuple[int | None, bytes]:
    if with_algo:
        algo, sk, cks = blob[0], blob[1:-2], blob[-2:]
    else:
        algo, sk, cks = None, blob[:-2], blob[-2:]
    if len(blob) < 3 or not hmac.compare_digest(keys._checksum(sk), cks):
        raise DecryptionError("could not decrypt the message")
    return algo, sk


def _unwrap_ecdh(pkesk: pk.PKESK, key: pk.KeyPacket, tsk: bytes = b"") -> tuple[int | None, bytes]:
    # ``tsk``: the TSK ``key`` came from, which may keep the OpenSSL key
    # object between requests (keys.private_key_object).
    r = pk._Reader(pkesk.material)
    bits = r.u16()
    ephemeral = r.take((bits + 7) // 8)
    wrapped = r.take(r.u8())
    oid, _point, kdf = key.params
    if len(kdf) != 3:
        raise UnsupportedAlgorithmError("unsupported ECDH KDF parameters")
    hash_id, sym = kdf[1], kdf[2]
    d = pk._Reader(_secret_material(key)).mpi()
    if key.curve == "cv25519":
        if len(ephemeral) != 33 or ephemeral[0] != 0x40:
            raise DecryptionError("could not decrypt the message")
        # The legacy Curve25519 secret is stored big-endian (reversed).
        native = d.rjust(32, b"\0")[::-1]
        own = keys.private_key_object(
            tsk, "cv25519", key, lambda: x25519.X25519PrivateKey.from_private_bytes(native)
        )
        shared = own.exchange(x25519.X25519PublicKey.from_public_bytes(ephemeral[1:]))
    else:
        curve = keys._CURVES.get(key.curve or "")
        if curve is None:
            raise UnsupportedAlgorithmError("unsupported ECDH curve")
        priv = keys.private_key_object(
            tsk, f"ecdh-{key.curve}", key, lambda: ec.derive_private_key(int.from_bytes(d, "big"), curve)
        )
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, ephemeral)
        shared = priv.exchange(ec.ECDH(), peer)
    fpr = bytes.fromhex(key.fingerprint)
    param = bytes([len(oid)]) + oid + bytes([pk.PK_ECDH, 3, 1, hash_id, sym]) + b"Anonymous Sender    " + fpr
    name = pk.HASH_NAMES.get(hash_id)
    if name is None or sym not in (7, 8, 9):
        raise UnsupportedAlgorithmError("unsupported ECDH KDF parameters")
    kek = hashlib.new(name, b"\x00\x00\x00\x01" + shared + param).digest()
    kek = kek[: keys.CIPHERS[sym][0]]
    try:
        m = _unpad(aes_key_unwrap(kek, wrapped))
    except InvalidUnwrap:
        raise DecryptionError("could not decrypt the message") from None
    return _check_v3_session(m, with_algo=pkesk.version == 3)


def _unwrap_x(pkesk: pk.PKESK, key: pk.KeyPacket, tsk: bytes = b"") -> tuple[int | None, bytes]:
    # ``tsk`` as for _unwrap_ecdh.
    is448 = key.algorithm == pk.PK_X448
    size = 56 if is448 else 32
    r = pk._Reader(pkesk.material)
    ephemeral = r.take(size)
    rest = r.take(r.u8())
    algo: int | None = None
    if pkesk.version == 3:
        if not rest:  # no room for the cipher octet: not ours to open
            raise DecryptionError("could not decrypt the message")
        algo, rest = rest[0], rest[1:]
    secret = _secret_material(key)[:size]
    public = key.params[0]
    shared: bytes
    if is448:
        own448 = keys.private_key_object(
            tsk, "x448", key, lambda: x448.X448PrivateKey.from_private_bytes(secret)
        )
        shared = own448.exchange(x448.X448PublicKey.from_public_bytes(ephemeral))
        kek = HKDF(algorithm=hashes.SHA512(), length=32, salt=None, info=b"OpenPGP X448").derive(
            ephemeral + public + shared
        )
    else:
        own25519 = keys.private_key_object(
            tsk, "x25519", key, lambda: x25519.X25519PrivateKey.from_private_bytes(secret)
        )
        shared = own25519.exchange(x25519.X25519PublicKey.from_public_bytes(ephemeral))
        kek = HKDF(algorithm=hashes.SHA256(), length=16, salt=None, info=b"OpenPGP X25519").derive(
            ephemeral + public + shared
        )
    try:
        return algo, aes_key_unwrap(kek, rest)
    except InvalidUnwrap:
        raise DecryptionError("could not decrypt the message") from None


def _unwrap_rsa(
    pkesk: pk.PKESK, key: pk.KeyPacket, seipd_cipher: int | None, tsk: bytes | None = None
) -> tuple[int | None, bytes]:
    """RSA PKESK (RFC 9580 §5.1.3), v3 or v6, to v4 or v6 keys.

    Always returns a session key: the real one, or a random stand-in of
    the size the message expects when anything about the decrypted block
    is wrong. The stand-in then fails the SEIPD integrity check like any
    tampered message, on the same code path, so that neither the error nor
    the work done tells an attacker whether a chosen PKESK was PKCS#1
    conformant (Bleichenbacher; RFC 9580 §13.5 "Avoiding Leaks from
    PKCS#1 Errors", and RFC 3218 §2.3.2 for the same rule in CMS).

    Why OpenSSL (``cryptography``) and not GnuPG or Sequoia:

    * Sequoia's RSA is the RustCrypto ``rsa`` crate, not constant time
      (RUSTSEC-2023-0071, "Marvin"): never on attacker input.
    * OpenSSL blinds every RSA private operation, and since 3.2 its
      PKCS#1 v1.5 decryption uses *implicit rejection*: bad padding yields
      a deterministic synthetic message instead of an error, so the
      padding check leaks neither by result nor by an exception's timing.
      cryptography 50 bundles OpenSSL 4.0 where this is on (asserted by
      ``tests/pgp/test_pgp_rsa_openssl.py``). Should a build ever raise
      instead, the ValueError is caught and handled as a bad block.
    * GnuPG 2.2 cannot handle v6 PKESKs (SEIPDv2), which every sender
      using Sequoia 2 writes to keys advertising SEIPDv2 (Sequoia-made v4
      RSA keys do); it rejects bad padding explicitly (no session key is
      reported, a visible difference); and a fresh GNUPGHOME per message
      costs ~40 ms against ~1 ms here (measured in
      ``tests/pgp/test_pgp_gnupg_cost.py``).
    """
    try:
        # ``tsk`` (the TSK that ``key`` came from) may keep the OpenSSL key
        # object between requests (keys.HeldTSK): the same key, loaded once.
        private = keys.rsa_private_key(key) if tsk is None else keys.rsa_private_key_of(tsk, key)
    except (ValueError, InputError) as exc:
        raise DecryptionError("unusable RSA secret key") from exc
    size = (private.key_size + 7) // 8
    r = pk._Reader(pkesk.material)
    c = r.mpi()
    if r.remaining or len(c) > size:
        # Malformed in public view (independent of any secret).
        raise DecryptionError("could not decrypt the message")
    # Every value below is computed whatever happens before it; the one
    # branch is on the final verdict, and both arms go on to the same
    # integrity check.
    stand_in = os.urandom(keys.CIPHERS[seipd_cipher or _STAND_IN_CIPHER][0])
    try:
        m = private.decrypt(c.rjust(size, b"\0"), padding.PKCS1v15())
    except ValueError:
        m = b""
    if pkesk.version == 3:
        # algorithm octet || session key || checksum
        algo: int | None = m[0] if m else 0
        sk, cks = m[1:-2], m[-2:]
    else:
        # v6: session key || checksum; the cipher is the SEIPDv2's.
        algo = seipd_cipher
        sk, cks = m[:-2], m[-2:]
    expected = keys.CIPHERS.get(algo or 0, (0, 0))[0]
    checksum_ok = hmac.compare_digest(keys._checksum(sk), cks)
    ok = checksum_ok & (len(sk) == expected) & (expected > 0) & (len(m) >= 3)
    if ok:
        return algo, sk
    return (None if pkesk.version == 6 else _STAND_IN_CIPHER), stand_in


def _session_key(pkesk: pk.PKESK, own: _OwnKey, seipd_cipher: int | None) -> tuple[int | None, bytes]:
    a = own.key.key.algorithm
    if pkesk.algorithm != a and not (a in pk.RSA_ALGOS and pkesk.algorithm in pk.RSA_ALGOS):
        raise DecryptionError("could not decrypt the message")
    if a in pk.RSA_ALGOS:
        return _unwrap_rsa(pkesk, own.key.key, seipd_cipher, own.tsk)
    if a == pk.PK_ECDH:
        return _unwrap_ecdh(pkesk, own.key.key, own.tsk)
    if a in (pk.PK_X25519, pk.PK_X448):
        return _unwrap_x(pkesk, own.key.key, own.tsk)
    raise UnsupportedAlgorithmError("unsupported public-key encryption algorithm")


def _addressed(pkesk: pk.PKESK, own: _OwnKey) -> bool:
    if not pkesk.recipient:
        return True
    return pkesk.recipient in (own.key.key.key_id, own.key.key.fingerprint)


_INTEGRITY_FAILED = "the encrypted message failed its integrity check"


def _decrypt_seipd_v1(body: bytes, cipher: int, sk: bytes) -> bytes:
    if cipher not in keys.CIPHERS or len(sk) != keys.CIPHERS[cipher][0]:
        raise DecryptionError("could not decrypt the message")
    bs = keys.CIPHERS[cipher][1]
    plain = keys.cfb_decrypt(cipher, sk, bytes(bs), body[1:])
    # One message for every failure here: which one it was would tell an
    # attacker whether a forged RSA session key opened (RFC 3218 §2.3.2).
    if len(plain) < bs + 2 + 22:
        raise IntegrityError(_INTEGRITY_FAILED)
    # The MDC is SHA-1 over prefix, data and the MDC packet header
    # (RFC 9580 §5.13.1); the quick-check octets are not relied upon.
    mdc_ok = plain[-22:-20] == b"\xd3\x14" and hmac.compare_digest(
        hashlib.sha1(plain[:-20]).digest(), plain[-20:]
    )
    if not mdc_ok:
        raise IntegrityError(_INTEGRITY_FAILED)
    return plain[bs + 2 : -22]


def _decrypt_seipd_v2(body: bytes, sk: bytes, limit: int) -> tuple[bytes, int, int]:
    r = pk._Reader(body)
    r.u8()
    cipher, aead, c = r.u8(), r.u8(), r.u8()
    salt = r.take(32)
    if cipher not in (7, 8, 9) or aead not in keys.AEAD_NONCE or c > 16:
        raise UnsupportedAlgorithmError("unsupported SEIPDv2 parameters")
    if len(sk) != keys.CIPHERS[cipher][0]:
        raise DecryptionError("could not decrypt the message")
    key_len = keys.CIPHERS[cipher][0]
    nonce_len = keys.AEAD_NONCE[aead]
    info = bytes([0xC0 | pk.TAG_SEIPD, 2, cipher, aead, c])
    okm = HKDF(algorithm=hashes.SHA256(), length=key_len + nonce_len - 8, salt=salt, info=info).derive(sk)
    mkey, iv = okm[:key_len], okm[key_len:]
    chunk = 1 << (c + 6)
    data = r.rest()
    if len(data) < 16:
        raise IntegrityError("the encrypted message is truncated")
    chunks, final_tag = data[:-16], data[-16:]
    out: list[bytes] = []
    total = 0
    index = 0
    pos = 0
    try:
        while pos < len(chunks):
            piece = chunks[pos : pos + chunk + 16]
            pos += len(piece)
            plain = keys.aead_decrypt(aead, cipher, mkey, iv + index.to_bytes(8, "big"), piece, info)
            total += len(plain)
            if total > limit:
                raise MessageTooLargeError("the decrypted OpenPGP message exceeds the size limit")
            out.append(plain)
            index += 1
        keys.aead_decrypt(
            aead,
            cipher,
            mkey,
            iv + index.to_bytes(8, "big"),
            final_tag,
            info + total.to_bytes(8, "big"),
        )
    except InvalidTag:
        raise IntegrityError("the encrypted message failed its integrity check (AEAD)") from None
    return b"".join(out), cipher, aead


def decrypt(
    data: bytes, tsks: Sequence[bytes], ctx: VerifyContext, *, max_output: int = 64 * 2**20
) -> DecryptedPGP:
    """Decrypt an OpenPGP message with one of the unprotected TSKs.

    Raises IntegrityError (no plaintext) for SED packets and for any MDC or
    AEAD failure, MessageTooLargeError when the content (after
    decompression) would exceed ``max_output``, DecryptionError when no
    key opens the message. An RSA PKESK addressed to one of our keys that
    does not open is an IntegrityError, like a tampered message (see
    :func:`_unwrap_rsa`).
    """
    binary = pk.to_binary(data)
    esks: list[pk.PKESK] = []
    container: pk.Packet | None = None
    for p in pk.iter_packets(binary):
        if p.tag in (pk.TAG_MARKER, pk.TAG_PADDING):
            continue
        if p.tag == pk.TAG_SED:
            raise IntegrityError("the message is not integrity protected (SED packet)")
        if container is not None:
            raise InputError("unexpected data after the encrypted OpenPGP packet")
        if p.tag == pk.TAG_PKESK:
            try:
                esks.append(pk.parse_pkesk(p))
            except InputError:
                continue
        elif p.tag == pk.TAG_SKESK:
            continue
        elif p.tag == pk.TAG_SEIPD:
            container = p
        elif p.tag == pk.TAG_AED:
            raise UnsupportedAlgorithmError("the OCB Encrypted Data packet (tag 20) is not supported")
        else:
            raise InputError("not an OpenPGP encrypted message")
    if container is None or not container.body:
        raise InputError("not an OpenPGP encrypted message")
    version = container.body[0]
    if version not in (1, 2):
        raise UnsupportedAlgorithmError(f"unsupported SEIPD version {version}")
    if len(container.body) > max_output + verify.STREAM_SLACK + 4096:
        # Plaintext is never larger than the ciphertext (bar compression,
        # which is bounded separately).
        raise MessageTooLargeError("the encrypted OpenPGP message exceeds the size limit")

    seipd_cipher: int | None = None
    if version == 2:
        seipd_cipher = container.body[1] if len(container.body) > 1 else 0
        if seipd_cipher not in (7, 8, 9):
            raise UnsupportedAlgorithmError("unsupported SEIPDv2 parameters")

    loaded = _load_tsks(tsks, ctx)
    own = _own_keys(loaded)
    unsupported_ids = _unsupported_ids(loaded)
    unsupported: UnsupportedAlgorithmError | None = None
    if any(esk.recipient and esk.recipient in unsupported_ids for esk in esks):
        unsupported = UnsupportedAlgorithmError(
            "the message is encrypted to a key of an unsupported algorithm (e.g. ElGamal)"
        )
    integrity: IntegrityError | None = None
    attempts = 0
    for esk, k in ((e, k) for e in esks for k in own):
        if (esk.version == 3) != (version == 1):
            continue  # RFC 9580 §5.1: v3 PKESK go with SEIPDv1, v6 with v2
        if not _addressed(esk, k):
            continue
        attempts += 1
        if attempts > MAX_SESSION_KEY_ATTEMPTS:
            break
        try:
            algo, sk = _session_key(esk, k, seipd_cipher)
        except UnsupportedAlgorithmError as exc:
            unsupported = exc
            continue
        except (DecryptionError, InputError, ValueError):
            continue
        try:
            return _finish(container.body, version, algo, sk, ctx, max_output)
        except IntegrityError as exc:
            # Either the message was tampered with, or this PKESK did not
            # open (an RSA stand-in key, or an anonymous PKESK meant for
            # another of our keys): try the others, release nothing.
            integrity = exc
    if integrity is not None:
        raise integrity
    if unsupported is not None:
        raise unsupported
    raise DecryptionError("could not decrypt the message: no matching secret key")


def _finish(
    body: bytes,
    version: int,
    algo: int | None,
    sk: bytes,
    ctx: VerifyContext,
    max_output: int,
) -> DecryptedPGP:
    stream_limit = max_output + verify.STREAM_SLACK
    if version == 1:
        if algo is None:
            raise DecryptionError("could not decrypt the message")
        stream = _decrypt_seipd_v1(body, algo, sk)
        name = f"seipdv1-{keys.CIPHER_NAMES.get(algo, str(algo))}"
    else:
        stream, cipher, aead = _decrypt_seipd_v2(body, sk, stream_limit)
        name = f"seipdv2-{keys.AEAD_NAMES[aead]}-{keys.CIPHER_NAMES[cipher]}"
    # Everything below works on authenticated plaintext only.
    inner = verify.unwrap_message(stream, max_output)
    signers = verify.judge_signature_packets(inner.signatures, inner.literal.content, ctx)
    return DecryptedPGP(
        content=inner.literal.content,
        integrity_protected=True,
        signers=signers,
        algorithm=name,
    )
