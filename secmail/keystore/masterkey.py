"""Loading or generating the master key that wraps every stored data key.

The master key is 32 raw random bytes, in a file readable by its owner only,
or given through the environment (base64 or hex). Losing it makes every
stored private key unrecoverable, hence the loud warning when one is made.
"""

from __future__ import annotations

import base64
import binascii
import errno
import logging
import os
import secrets
import stat
import string
from pathlib import Path

from secmail.errors import SecmailError
from secmail.keystore.seal import master_key_id

__all__ = [
    "MASTER_KEY_LEN",
    "MasterKeyError",
    "load_master_key",
    "load_or_create_master_key",
    "master_key_from_env",
]

log = logging.getLogger(__name__)

MASTER_KEY_LEN = 32


class MasterKeyError(SecmailError):
    """The master key file or variable is missing, malformed or exposed."""


def load_master_key(path: Path) -> bytes:
    """Read the master key at ``path``, which must exist (same checks as
    :func:`load_or_create_master_key`)."""
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        raise MasterKeyError(f"master key file {path} does not exist") from None


def load_or_create_master_key(path: Path) -> bytes:
    """Read the master key at ``path``, or create it when there is none.

    A new key is written, mode 0600, to a temporary file opened with
    ``O_CREAT | O_EXCL``, made durable, then hard-linked to ``path``: the
    link fails if ``path`` appeared meanwhile, so two processes starting
    together agree on one key (the loser reads the winner's) and no reader
    ever sees a half-written file. An existing file is refused when group
    or others have any permission on it, or when it does not hold exactly
    32 bytes.
    """
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_bytes(MASTER_KEY_LEN)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    _write_new_file(tmp, key)
    try:
        os.link(tmp, path)
    except FileExistsError:
        # Another process won the race: use its key.
        return _read_key_file(path)
    except OSError as exc:
        raise MasterKeyError(f"cannot create master key file {path}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    log.warning(
        "generated a new master key in %s (key id %s): back it up now; without it "
        "the stored private keys cannot be recovered",
        path,
        master_key_id(key),
    )
    return key


def _write_new_file(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise MasterKeyError(f"cannot create master key file {path}: {exc.strerror}") from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise MasterKeyError(f"cannot write master key file {path}: {exc.strerror}") from None


def master_key_from_env(var: str = "SECMAIL_MASTER_KEY") -> bytes | None:
    """The master key from environment variable ``var``, or None when unset.

    The value is 64 hex digits or the base64 (standard or URL-safe, padding
    optional) of 32 bytes. Error messages never repeat the value.
    """
    raw = os.environ.get(var)
    if raw is None:
        return None
    value = raw.strip()
    if not value:
        raise MasterKeyError(f"${var} is set but empty")
    key: bytes | None = None
    # 64 hex digits are also valid base64 (of 48 bytes): try hex first.
    if len(value) == 2 * MASTER_KEY_LEN and all(c in string.hexdigits for c in value):
        key = bytes.fromhex(value)
    else:
        b64 = value.replace("-", "+").replace("_", "/")
        b64 += "=" * (-len(b64) % 4)
        try:
            key = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise MasterKeyError(f"${var} is neither hex nor base64") from None
    if len(key) != MASTER_KEY_LEN:
        raise MasterKeyError(f"${var} must encode exactly {MASTER_KEY_LEN} bytes (it encodes {len(key)})")
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MasterKeyError(f"master key file {path} is a symbolic link") from None
        raise MasterKeyError(f"cannot open master key file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MasterKeyError(f"master key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise MasterKeyError(
                f"master key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
            )
        data = os.read(fd, MASTER_KEY_LEN + 1)
    finally:
        os.close(fd)
    if len(data) != MASTER_KEY_LEN:
        what = "more than" if len(data) > MASTER_KEY_LEN else f"{len(data)} bytes, not"
        raise MasterKeyError(
            f"master key file {path} holds {what} {MASTER_KEY_LEN} bytes; "
            "it must hold exactly 32 raw random bytes"
        )
    return data


def _fsync_dir(directory: Path) -> None:
    # Makes the new directory entry durable (POSIX leaves it to the caller).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
