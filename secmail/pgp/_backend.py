"""The one module that imports pysequoia (Sequoia-PGP, in-process).

Everything that crosses into Sequoia goes through the small functions
here, with bytes in and bytes (or plain data) out, so that the rest of
secmail never holds a pysequoia object and the engine can be swapped.

Known properties of pysequoia 0.1.35 that the callers compensate for:

* It holds the GIL for the whole of an operation (measured: a spinning
  Python thread made next to no progress during a 50 MB decryption).
* ``encrypt`` picks recipient keys with ``.alive().revoked(false)`` but
  falls back to *expired* keys, and never checks whether the certificate
  itself is revoked or expired: :mod:`secmail.pgp.encrypt` hands it
  minimised certificates that contain only keys secmail validated.
* ``verify`` raises the same ``RuntimeError`` for a bad signature, an
  unknown signer, a revoked key or a policy rejection, and reports only
  the signatures that verified: :mod:`secmail.pgp.verify` classifies
  failures from its own structured analysis of the certificate.
* ``decrypt`` returns the fully inflated plaintext and only the literal
  data, and its structure check rejects the common "encrypted, compressed,
  signed" layering: secmail decrypts in :mod:`secmail.pgp.decrypt`.
* Its RSA comes from the RustCrypto ``rsa`` crate (RUSTSEC-2023-0071):
  no RSA *secret* key is ever handed to this module.

Parsing a certificate (``Cert.from_bytes``, which also canonicalises it
and checks its self-signatures) is a pure function of its bytes and costs
~0.1 ms; parsed *public* certificates are memoised by their full bytes
(:func:`_engine_cert`). Everything Sequoia judges against the clock
(User IDs, revocation, expiry, message signatures) is asked again on
every call. TSKs are never memoised here; a holder that keeps a TSK
between requests (``keys.HeldTSK``) may keep the engine's signer for it
with it, as an opaque :class:`EngineSigner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pysequoia
from pysequoia import ArmorKind, Cert, CipherSuite, Profile, PySigner, Sig, SignatureMode, Tsk

from secmail.errors import InputError, InvalidKeyError, SecmailError
from secmail.pgp import packets as pk
from secmail.pgp._cache import BoundedMemo

#: Public certificate bytes -> Sequoia's parse of them.
_CERTS: BoundedMemo[bytes, Cert] = BoundedMemo(4096, 32 * 2**20)


def _engine_cert(cert: bytes) -> Cert:
    """``Cert.from_bytes(cert)``, memoised unless ``cert`` holds secrets.

    Raises what Sequoia raises. A pysequoia ``Cert`` is only ever read
    here (pysequoia holds the GIL for whole calls and copies a
    certificate it is handed), so one parse can serve every thread.
    """
    known = _CERTS.get(cert)
    if known is not None:
        return known
    parsed = Cert.from_bytes(cert)
    if _public_only(cert):
        _CERTS.put(cert, parsed, len(cert))
    return parsed


def _public_only(cert: bytes) -> bool:
    # Read with secmail's own packet reader (pysequoia's has_secret_keys
    # is deprecated and warns on every call). Unreadable: not memoised.
    secret = (pk.TAG_SECRET_KEY, pk.TAG_SECRET_SUBKEY)
    try:
        return not any(p.tag in secret for p in pk.iter_packets(pk.to_binary(cert)))
    except InputError:
        return False


@dataclass(frozen=True, slots=True)
class EngineCertView:
    """Sequoia's own view of a certificate (StandardPolicy, now)."""

    fingerprint: str
    user_ids: tuple[str, ...]
    revoked: bool
    expiration: datetime | None


@dataclass(frozen=True, slots=True)
class EngineGoodSignature:
    """A signature that Sequoia verified."""

    certificate: str
    signing_key: str


def cert_view(cert: bytes) -> EngineCertView:
    """Raises InvalidKeyError when Sequoia cannot parse the certificate.

    A certificate that parses but that StandardPolicy finds no valid
    binding for (e.g. RSA-1024, SHA-1 after 2023) has no User IDs here.
    """
    try:
        c = _engine_cert(cert)
        fingerprint = c.fingerprint.lower()
    except Exception as exc:  # pysequoia raises bare RuntimeError
        raise InvalidKeyError("OpenPGP certificate rejected by the engine") from _quiet(exc)
    try:
        user_ids = tuple(str(u) for u in c.user_ids)
    except Exception:
        user_ids = ()
    try:
        revoked = c.is_revoked
    except Exception:
        revoked = False
    try:
        expiration = c.expiration
    except Exception:
        expiration = None
    return EngineCertView(fingerprint, user_ids, revoked, expiration)


def check_tsk(tsk: bytes) -> str:
    """Parse an unprotected TSK with Sequoia; its primary fingerprint."""
    try:
        t = Tsk.from_bytes(tsk)
        return t.extract_certificate().fingerprint.lower()
    except Exception as exc:
        raise InvalidKeyError("OpenPGP secret key rejected by the engine") from _quiet(exc)


class EngineSigner:
    """Sequoia's signer for one TSK, opaque outside this module.

    Made once for a TSK that its holder keeps (``keys.HeldTSK``), it saves
    parsing the TSK on every signature (~0.1 ms). The engine's choice of
    key is fixed when it is made; the callers hand it a TSK reduced to the
    one signing key that secmail validated at the request's time, and
    check every signature it makes (``sign.py``).
    """

    __slots__ = ("_signer",)

    def __init__(self, signer: PySigner) -> None:
        self._signer = signer

    def __repr__(self) -> str:  # never print private material
        return "EngineSigner()"


def engine_signer(tsk: bytes) -> EngineSigner:
    """The engine's signer for the only signing key of ``tsk``."""
    try:
        return EngineSigner(Tsk.from_bytes(tsk).signer())
    except Exception as exc:
        raise SecmailError("OpenPGP signing failed") from _quiet(exc)


def sign_detached(tsk: bytes | EngineSigner, data: bytes, *, armor: bool = True) -> bytes:
    """Detached binary-document signature with the only signing key of
    ``tsk`` (the caller strips every other key); ASCII-armored unless
    ``armor`` is False."""
    try:
        signer = tsk if isinstance(tsk, EngineSigner) else engine_signer(tsk)
        return bytes(pysequoia.sign(signer._signer, data, mode=SignatureMode.DETACHED, armor=armor))
    except Exception as exc:
        raise SecmailError("OpenPGP signing failed") from _quiet(exc)


def encrypt(data: bytes, certs: Sequence[bytes], signer_tsk: bytes | EngineSigner | None) -> bytes:
    """The binary OpenPGP message (the caller checks it, then armors it)."""
    try:
        recipients = [_engine_cert(c) for c in certs]
        signer: PySigner | None = None
        if isinstance(signer_tsk, EngineSigner):
            signer = signer_tsk._signer
        elif signer_tsk is not None:
            signer = Tsk.from_bytes(signer_tsk).signer()
        return bytes(pysequoia.encrypt(data, recipients, signer=signer, armor=False))
    except Exception as exc:
        raise SecmailError("OpenPGP encryption failed") from _quiet(exc)


def verify_detached(data: bytes, signature: bytes, cert: bytes) -> EngineGoodSignature | None:
    """Verify one signature packet over ``data`` with one certificate.

    None when Sequoia does not accept it, for whatever reason; the caller
    finds the reason from structure, never from the engine's message.
    """
    try:
        c = _engine_cert(cert)
        sig = Sig.from_bytes(signature)
    except Exception as exc:
        raise InputError("signature or certificate unreadable by the engine") from _quiet(exc)
    try:
        result = pysequoia.verify(bytes=data, store=lambda _ids: [c], signature=sig)
    except Exception:
        return None
    good = [
        EngineGoodSignature(str(v.certificate).lower(), str(v.signing_key).lower()) for v in result.valid_sigs
    ]
    return good[0] if good else None


def armor(data: bytes, kind: str) -> bytes:
    kinds = {
        "message": ArmorKind.Message,
        "signature": ArmorKind.Signature,
        "public-key": ArmorKind.PublicKey,
        "secret-key": ArmorKind.SecretKey,
    }
    return pysequoia.armor(data, kinds[kind]).encode("ascii")


# --------------------------------------------------------------------------
# Key generation and maintenance (tests and tooling)

_SUITES = {
    "cv25519": CipherSuite.Cv25519,
    "cv448": CipherSuite.Cv448,
    "rsa2k": CipherSuite.RSA2k,
    "rsa3k": CipherSuite.RSA3k,
    "rsa4k": CipherSuite.RSA4k,
    "p256": CipherSuite.P256,
    "p384": CipherSuite.P384,
    "p521": CipherSuite.P521,
}


def generate_tsk(
    user_ids: Sequence[str],
    *,
    suite: str = "cv25519",
    v6: bool = False,
    validity_seconds: int | None = None,
) -> bytes:
    """A new unprotected TSK: certification primary, signing and
    encryption subkeys (Sequoia's general-purpose layout)."""
    tsk = Tsk.generate(
        user_ids=list(user_ids),
        profile=Profile.RFC9580 if v6 else Profile.RFC4880,
        cipher_suite=_SUITES[suite],
        validity_seconds=validity_seconds,
    )
    return bytes(tsk)


def revoke_cert(tsk: bytes) -> bytes:
    """The public certificate of ``tsk`` with a key revocation merged in."""
    t = Tsk.from_bytes(tsk)
    cert = t.extract_certificate()
    rev = cert.revoke(certifier=t.certifier())
    return bytes(cert) + bytes(rev)


def revoke_user_id(tsk: bytes, index: int) -> bytes:
    t = Tsk.from_bytes(tsk)
    cert = t.extract_certificate()
    rev = cert.revoke_user_id(user_id=cert.user_ids[index], certifier=t.certifier())
    return bytes(cert) + bytes(rev)


def inline_sign(tsk: bytes, data: bytes, *, cleartext: bool = False) -> bytes:
    mode = SignatureMode.CLEAR if cleartext else SignatureMode.INLINE
    return bytes(pysequoia.sign(Tsk.from_bytes(tsk).signer(), data, mode=mode, armor=True))


def public_cert(tsk: bytes) -> bytes:
    return bytes(Tsk.from_bytes(tsk).extract_certificate())


def _quiet(exc: Exception) -> Exception | None:
    # The engine's message carries a Rust backtrace and may quote input;
    # it is never shown to clients. Keep only the type for debugging.
    return RuntimeError(type(exc).__name__)
