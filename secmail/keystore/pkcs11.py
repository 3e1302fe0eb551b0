"""A master key that never leaves a PKCS#11 token (HSM, SoftHSM2).

The token holds an AES-256 secret key (label configurable) created
non-extractable and sensitive, usable only to wrap and unwrap. Each data
key is wrapped by the token itself with ``CKM_AES_KEY_WRAP`` (RFC 3394,
PKCS#11 v2.40 §2.14.6): the output has the same 40-byte form as the local
wrap of :class:`secmail.keystore.seal.LocalKEK`, so the stored rows do not
change shape when a site moves its master key onto a token. Only data keys
ever cross the token boundary, and only as long as one request needs them.

The master key id of a token key is derived from a key check value: the
token wraps a fixed, public 32-byte value, and the id is a hash of that
output. It names the key material, not its label, so a label reused for
another key cannot make rows look openable by it.

The PIN comes from ``$SECMAIL_PKCS11_PIN`` (never from the command line,
where ``ps`` shows it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Final

from secmail.errors import SecmailError
from secmail.keystore.seal import UnsealError

__all__ = [
    "DEFAULT_KEY_LABEL",
    "PIN_ENV",
    "PKCS11KEK",
    "PKCS11Config",
    "TokenError",
    "generate_master_key",
]

log = logging.getLogger(__name__)

PIN_ENV: Final = "SECMAIL_PKCS11_PIN"
DEFAULT_KEY_LABEL: Final = "secmail-master-key"

#: The public value wrapped to compute a token key's id (see module doc).
_CHECK_VALUE: Final = hashlib.sha256(b"secmail/v1 master key check value").digest()
_DATA_KEY_LEN: Final = 32


class TokenError(SecmailError):
    """The PKCS#11 module, token, PIN or master key is missing or unusable."""


@dataclass(frozen=True, slots=True)
class PKCS11Config:
    """Where the master key lives: ``module`` is the PKCS#11 library
    (e.g. ``/usr/lib/softhsm/libsofthsm2.so``), ``token_label`` the token,
    ``key_label`` the AES key on it. ``pin`` None reads ``$SECMAIL_PKCS11_PIN``."""

    module: str
    token_label: str
    key_label: str = DEFAULT_KEY_LABEL
    pin: str | None = None

    def __repr__(self) -> str:  # never show the PIN
        return (
            f"PKCS11Config(module={self.module!r}, token_label={self.token_label!r}, "
            f"key_label={self.key_label!r})"
        )

    def resolved_pin(self) -> str:
        pin = self.pin if self.pin is not None else os.environ.get(PIN_ENV)
        if not pin:
            raise TokenError(f"the PKCS#11 token PIN is not set: put it in ${PIN_ENV}")
        return pin


def _library() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise TokenError("PKCS#11 support needs python-pkcs11: pip install 'secmail[pkcs11]'") from None
    return pkcs11


def _open_session(config: PKCS11Config, *, rw: bool) -> Any:
    p11 = _library()
    try:
        lib = p11.lib(config.module)
    except (OSError, RuntimeError) as exc:
        raise TokenError(f"cannot load the PKCS#11 module {config.module}: {type(exc).__name__}") from None
    try:
        token = lib.get_token(token_label=config.token_label)
    except p11.NoSuchToken:
        raise TokenError(f"no PKCS#11 token labelled {config.token_label!r}") from None
    except p11.MultipleTokensReturned:
        raise TokenError(f"several PKCS#11 tokens are labelled {config.token_label!r}") from None
    pin = config.resolved_pin()
    try:
        return token.open(user_pin=pin, rw=rw)
    except p11.UserAlreadyLoggedIn:
        # The login state belongs to the application, not the session
        # (PKCS#11 v2.40 §5.6): another session of this process (a second
        # master key on the same token) logged in already, and every new
        # session shares that login.
        return token.open(rw=rw)
    except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
        raise TokenError(f"the PIN in ${PIN_ENV} was refused by token {config.token_label!r}") from None
    except p11.PinLocked:
        raise TokenError(f"the PIN of token {config.token_label!r} is locked") from None
    except p11.PKCS11Error as exc:
        raise TokenError(f"cannot open token {config.token_label!r}: {type(exc).__name__}") from None


def _find_key(session: Any, config: PKCS11Config) -> Any:
    p11 = _library()
    try:
        return session.get_key(
            object_class=p11.ObjectClass.SECRET_KEY, key_type=p11.KeyType.AES, label=config.key_label
        )
    except p11.NoSuchKey:
        raise TokenError(
            f"token {config.token_label!r} has no AES key labelled {config.key_label!r}: "
            "create it with `secmail admin pkcs11-keygen`"
        ) from None
    except p11.MultipleObjectsReturned:
        raise TokenError(
            f"token {config.token_label!r} has several AES keys labelled {config.key_label!r}"
        ) from None


class PKCS11KEK:
    """:class:`secmail.keystore.seal.KeyEncryptionKey` on a PKCS#11 token.

    One logged-in session per process, used under a lock: PKCS#11 lets a
    session serve one thread at a time (v2.40 §5.1.2), and the token's
    wrap and unwrap take well under a millisecond, far below the cost of the
    signature that follows.
    """

    def __init__(self, config: PKCS11Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._session: Any = None
        self._key: Any = None
        with self._lock:
            self._connect()
            check = self._wrap_locked(_CHECK_VALUE)
        self._id = hashlib.sha256(b"secmail pkcs11 key id|" + check).digest()[:8].hex()

    def __repr__(self) -> str:
        return (
            f"PKCS11KEK(token={self._config.token_label!r}, key={self._config.key_label!r}, id={self._id!r})"
        )

    @property
    def id(self) -> str:
        return self._id

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                try:
                    self._session.close()
                except Exception:  # closing a dead session is not worth an error
                    pass
                self._session = self._key = None

    def wrap(self, data_key: bytes) -> bytes:
        p11 = _library()
        with self._lock:
            try:
                return bytes(self._retrying(lambda: self._wrap_locked(data_key)))
            except p11.PKCS11Error as exc:
                raise TokenError(f"the token could not wrap a data key: {type(exc).__name__}") from None

    def unwrap(self, wrapped: bytes) -> bytes:
        p11 = _library()
        with self._lock:
            try:
                return bytes(self._retrying(lambda: self._unwrap_locked(wrapped)))
            except (
                p11.WrappedKeyInvalid,
                p11.WrappedKeyLenRange,
                p11.EncryptedDataInvalid,
                p11.EncryptedDataLenRange,
                p11.FunctionFailed,
                p11.GeneralError,
            ):
                # A failed RFC 3394 integrity check: SoftHSM2 reports it as
                # CKR_GENERAL_ERROR, other tokens as WRAPPED_KEY_INVALID or
                # FUNCTION_FAILED.
                raise UnsealError(
                    "sealed secret could not be opened: wrong master key or corrupted data key"
                ) from None
            except p11.PKCS11Error as exc:
                raise TokenError(f"the token could not unwrap a data key: {type(exc).__name__}") from None

    # -- internals (called with the lock held) -------------------------------

    def _connect(self) -> None:
        session = _open_session(self._config, rw=False)
        try:
            self._key = _find_key(session, self._config)
        except BaseException:
            session.close()
            raise
        self._session = session

    def _retrying(self, op: Any) -> Any:
        # A session can die under us (token reset, HSM failover): reconnect
        # once. Errors about the data itself are not retried.
        p11 = _library()
        lost = (p11.SessionClosed, p11.SessionHandleInvalid, p11.DeviceRemoved, p11.TokenNotPresent)
        try:
            return op()
        except lost:
            log.warning("PKCS#11 session to token %r lost; reconnecting", self._config.token_label)
            self._connect()
            return op()

    def _wrap_locked(self, data_key: bytes) -> bytes:
        p11 = _library()
        attr = p11.Attribute
        # The data key enters the token as a short-lived session object: the
        # standard has no way to wrap bytes that are not a key object.
        obj = self._session.create_object(
            {
                attr.CLASS: p11.ObjectClass.SECRET_KEY,
                attr.KEY_TYPE: p11.KeyType.AES,
                attr.VALUE: data_key,
                attr.TOKEN: False,
                attr.EXTRACTABLE: True,
                attr.SENSITIVE: False,
            }
        )
        try:
            return bytes(self._key.wrap_key(obj, mechanism=p11.Mechanism.AES_KEY_WRAP))
        finally:
            obj.destroy()

    def _unwrap_locked(self, wrapped: bytes) -> bytes:
        p11 = _library()
        attr = p11.Attribute
        obj = self._key.unwrap_key(
            p11.ObjectClass.SECRET_KEY,
            p11.KeyType.AES,
            wrapped,
            mechanism=p11.Mechanism.AES_KEY_WRAP,
            store=False,
            template={attr.TOKEN: False, attr.SENSITIVE: False, attr.EXTRACTABLE: True},
        )
        try:
            value = bytes(obj[attr.VALUE])
        finally:
            obj.destroy()
        if len(value) != _DATA_KEY_LEN:
            raise UnsealError("sealed secret could not be opened: corrupted data key")
        return value


def generate_master_key(config: PKCS11Config) -> str:
    """Create the AES-256 master key on the token; returns its master key id.

    The key is a token object, private (needs the PIN), sensitive and never
    extractable, and allowed to wrap and unwrap only. Refuses when a key
    with that label exists: replacing a master key would make every stored
    private key unrecoverable.
    """
    p11 = _library()
    attr = p11.Attribute
    session = _open_session(config, rw=True)
    try:
        try:
            _find_key(session, config)
        except TokenError:
            pass
        else:
            raise TokenError(f"token {config.token_label!r} already has a key labelled {config.key_label!r}")
        try:
            session.generate_key(
                p11.KeyType.AES,
                256,
                label=config.key_label,
                store=True,
                template={
                    attr.TOKEN: True,
                    attr.PRIVATE: True,
                    attr.SENSITIVE: True,
                    attr.EXTRACTABLE: False,
                    attr.WRAP: True,
                    attr.UNWRAP: True,
                    attr.ENCRYPT: False,
                    attr.DECRYPT: False,
                    attr.SIGN: False,
                    attr.VERIFY: False,
                    attr.DERIVE: False,
                },
            )
        except p11.PKCS11Error as exc:
            raise TokenError(f"the token refused to create the key: {type(exc).__name__}") from None
    finally:
        session.close()
    kek = PKCS11KEK(config)
    try:
        log.warning(
            "created master key %r on token %r (key id %s)", config.key_label, config.token_label, kek.id
        )
        return kek.id
    finally:
        kek.close()
