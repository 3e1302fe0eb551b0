"""Opening the key store as the server and the admin tools do.

Where the master key comes from, in order:

1. a PKCS#11 token (``pkcs11`` given): the key never leaves it;
2. the environment variable ``SECMAIL_MASTER_KEY`` (hex or base64);
3. ``master_key_file``, else ``<data_dir>/master.key``, created on first
   start when ``create`` (the server) and required otherwise.

``previous_key_files`` are master keys that may still wrap some data keys
(before, during and after a rotation): they unseal, never seal.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from secmail.keystore.masterkey import load_master_key, load_or_create_master_key, master_key_from_env
from secmail.keystore.pkcs11 import PKCS11KEK, PKCS11Config
from secmail.keystore.seal import KeyEncryptionKey, LocalKEK, Sealer
from secmail.keystore.sql import SQLKeyStore

__all__ = ["DEFAULT_MASTER_KEY_FILE", "current_kek", "load_sealer", "open_keystore"]

DEFAULT_MASTER_KEY_FILE = "master.key"


def current_kek(
    *,
    data_dir: Path,
    master_key_file: Path | None = None,
    pkcs11: PKCS11Config | None = None,
    create: bool = True,
) -> KeyEncryptionKey:
    """The key-encryption key new data keys are wrapped with (module doc)."""
    if pkcs11 is not None:
        return PKCS11KEK(pkcs11)
    from_env = master_key_from_env()
    if from_env is not None:
        return LocalKEK(from_env)
    path = master_key_file or data_dir / DEFAULT_MASTER_KEY_FILE
    return LocalKEK(load_or_create_master_key(path) if create else load_master_key(path))


def load_sealer(
    *,
    data_dir: Path,
    master_key_file: Path | None = None,
    pkcs11: PKCS11Config | None = None,
    previous_key_files: Sequence[Path] = (),
    create: bool = True,
) -> Sealer:
    current = current_kek(data_dir=data_dir, master_key_file=master_key_file, pkcs11=pkcs11, create=create)
    previous = [LocalKEK(load_master_key(p)) for p in previous_key_files]
    return Sealer(current, previous_keys=previous)


def open_keystore(
    *,
    database_url: str | None,
    data_dir: Path,
    sealer: Sealer,
    auto_upgrade: bool | None = None,
) -> SQLKeyStore:
    """The store on ``database_url`` (None: SQLite in ``data_dir``).

    The embedded SQLite database is brought to the current schema at start;
    any other database must have been upgraded with ``secmail db upgrade``
    (replicas share it, and an upgrade is an operator's decision).
    """
    return SQLKeyStore(database_url, sealer, data_dir=data_dir, auto_upgrade=auto_upgrade)
