"""Envelope encryption of stored private keys.

Each secret gets its own random 256-bit *data key*; the secret is encrypted
with AES-256-GCM under that data key, with associated data that binds it to
its owner and key id (so a sealed blob copied into another user's row does
not open). The data key is then *wrapped* by the master key.

Wrapping uses AES Key Wrap (RFC 3394) rather than a second AES-GCM:

- it is the construction made for this job (CMS KEKRecipientInfo, JWE
  ``A256KW``): deterministic, so there is no nonce to draw or to repeat
  under a long-lived master key, and 40 bytes per data key;
- its integrity check (the RFC 3394 §2.2.3 initial value) makes a wrong or
  corrupted master key fail loudly instead of yielding a wrong data key;
- the plaintext it protects is a uniformly random key, the case in which a
  deterministic wrap reveals nothing (no two data keys are equal).

The master key is never used directly: HKDF-SHA256 (RFC 5869) derives the
key-encryption key and, separately, the public *master key id* stored with
each wrapped data key. Rotating the master key therefore means re-wrapping
the 40-byte data keys only; the sealed secrets stay as they are.

The key-encryption key is an interface (:class:`KeyEncryptionKey`): a
master key in a file or the environment (:class:`LocalKEK`), or an AES-256
key that never leaves a PKCS#11 token, which then does the RFC 3394 wrap
and unwrap itself (``secmail/keystore/pkcs11.py``). The stored format is
the same for both.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from secmail.errors import SecmailError

__all__ = [
    "SEAL_VERSION",
    "KeyEncryptionKey",
    "LocalKEK",
    "SealedBlob",
    "Sealer",
    "UnsealError",
    "master_key_id",
]

#: Format of :class:`SealedBlob`; part of the GCM associated data so a blob
#: cannot be replayed under another format's rules.
SEAL_VERSION = 1

_MASTER_KEY_LEN = 32
_DATA_KEY_LEN = 32
_NONCE_LEN = 12  # 96-bit GCM nonce, NIST SP 800-38D §8.2.2 (random construction)
_TAG_LEN = 16


class UnsealError(SecmailError):
    """A sealed secret could not be opened (wrong master key, tampered or
    moved blob). Deliberately uninformative beyond that."""


@dataclass(frozen=True, slots=True)
class SealedBlob:
    """A secret encrypted under a data key, and that data key wrapped.

    ``sealed`` is ``nonce || ciphertext || tag``; ``wrapped_key`` is the
    RFC 3394 wrap of the data key under the master key named by
    ``master_key_id``. Nothing here is secret.
    """

    version: int
    master_key_id: str
    wrapped_key: bytes
    sealed: bytes

    def __repr__(self) -> str:
        return (
            f"SealedBlob(version={self.version}, master_key_id={self.master_key_id!r}, "
            f"sealed_len={len(self.sealed)})"
        )


def _hkdf(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


def master_key_id(master: bytes) -> str:
    """The public identifier of a master key: the first 8 bytes (hex) of
    SHA-256 over an HKDF output, so it reveals nothing usable about the key."""
    return hashlib.sha256(_hkdf(master, b"secmail key id")).digest()[:8].hex()


class KeyEncryptionKey(Protocol):
    """What wraps and unwraps data keys: a master key held here
    (:class:`LocalKEK`) or on a PKCS#11 token
    (:class:`secmail.keystore.pkcs11.PKCS11KEK`).

    Both produce RFC 3394 wraps of the 32-byte data key, so a blob's only
    tie to its key-encryption key is ``master_key_id``. ``unwrap`` raises
    :class:`UnsealError` when the wrap does not open under this key (the
    RFC 3394 §2.2.3 integrity check), never returns a wrong key.
    """

    @property
    def id(self) -> str: ...

    def wrap(self, data_key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


class LocalKEK:
    """A 32-byte master key from a file or the environment.

    The AES key wrap key is HKDF-derived from the master key (never the
    master key itself), as it always was: blobs sealed before the
    key-encryption key became an interface open unchanged.
    """

    __slots__ = ("_id", "_kek")

    def __init__(self, master: bytes) -> None:
        if len(master) != _MASTER_KEY_LEN:
            raise SecmailError(f"the master key must be {_MASTER_KEY_LEN} bytes long")
        self._id = master_key_id(master)
        self._kek = _hkdf(master, b"secmail/v1 key-encryption key")

    def __repr__(self) -> str:
        return f"LocalKEK(id={self._id!r})"

    @property
    def id(self) -> str:
        return self._id

    def wrap(self, data_key: bytes) -> bytes:
        return aes_key_wrap(self._kek, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self._kek, wrapped)
        except (InvalidUnwrap, ValueError):
            raise UnsealError(
                "sealed secret could not be opened: wrong master key or corrupted data key"
            ) from None


def _as_kek(key: bytes | KeyEncryptionKey) -> KeyEncryptionKey:
    return LocalKEK(key) if isinstance(key, bytes | bytearray) else key


class Sealer:
    """Seals and unseals secrets with envelope encryption.

    ``master_key`` (raw bytes, or any :class:`KeyEncryptionKey`) seals;
    ``previous_keys`` can still unseal what they wrapped. Unsealing picks
    the key by the blob's ``master_key_id``, so during a rotation a replica
    that knows both keys opens rows on either side of it.
    """

    def __init__(
        self,
        master_key: bytes | KeyEncryptionKey,
        *,
        previous_keys: Iterable[bytes | KeyEncryptionKey] = (),
    ) -> None:
        self._current = _as_kek(master_key)
        self._keys: dict[str, KeyEncryptionKey] = {self._current.id: self._current}
        for old in previous_keys:
            kek = _as_kek(old)
            self._keys.setdefault(kek.id, kek)

    def __repr__(self) -> str:
        return f"Sealer(master_key_id={self._current.id!r})"

    @property
    def master_key_id(self) -> str:
        return self._current.id

    @property
    def known_key_ids(self) -> frozenset[str]:
        """The ids of every master key this sealer can unseal with."""
        return frozenset(self._keys)

    def seal(self, plaintext: bytes, *, aad: bytes) -> SealedBlob:
        data_key = AESGCM.generate_key(bit_length=8 * _DATA_KEY_LEN)
        nonce = secrets.token_bytes(_NONCE_LEN)
        sealed = nonce + AESGCM(data_key).encrypt(nonce, plaintext, self._content_aad(aad))
        wrapped = self._current.wrap(data_key)
        return SealedBlob(
            version=SEAL_VERSION,
            master_key_id=self._current.id,
            wrapped_key=wrapped,
            sealed=sealed,
        )

    def unseal(self, blob: SealedBlob, *, aad: bytes) -> bytes:
        if blob.version != SEAL_VERSION:
            raise UnsealError(f"sealed secret has unknown format version {blob.version}")
        if len(blob.sealed) < _NONCE_LEN + _TAG_LEN:
            raise UnsealError("sealed secret is truncated")
        data_key = self.unwrap_data_key(blob.master_key_id, blob.wrapped_key)
        nonce, body = blob.sealed[:_NONCE_LEN], blob.sealed[_NONCE_LEN:]
        try:
            return AESGCM(data_key).decrypt(nonce, body, self._content_aad(aad))
        except (InvalidTag, ValueError):
            # Same message for "moved to another row" and "tampered": the
            # caller has nothing to act on beyond "this secret is unusable".
            raise UnsealError(
                "sealed secret could not be opened: it was altered or belongs to another key"
            ) from None

    def unwrap_data_key(self, master_key_id: str, wrapped: bytes) -> bytes:
        """The data key in ``wrapped``, opened by the master key named
        ``master_key_id``. For :meth:`rewrap` and :meth:`unseal` only."""
        kek = self._keys.get(master_key_id)
        if kek is None:
            raise UnsealError(f"sealed secret was wrapped by master key {master_key_id}, which is not loaded")
        data_key = kek.unwrap(wrapped)
        if len(data_key) != _DATA_KEY_LEN:
            raise UnsealError("sealed secret could not be opened: corrupted data key")
        return data_key

    def rewrap(self, blob: SealedBlob) -> SealedBlob:
        """The same sealed secret with its data key wrapped by the current
        master key. ``sealed`` is returned as is: rotating the master key
        never decrypts or re-encrypts the secret itself."""
        data_key = self.unwrap_data_key(blob.master_key_id, blob.wrapped_key)
        return SealedBlob(
            version=blob.version,
            master_key_id=self._current.id,
            wrapped_key=self._current.wrap(data_key),
            sealed=blob.sealed,
        )

    @staticmethod
    def _content_aad(aad: bytes) -> bytes:
        # The version is bound too, so the caller's AAD cannot be confused
        # with that of another blob format.
        return b"secmail/seal/v%d|" % SEAL_VERSION + aad
