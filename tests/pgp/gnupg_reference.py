"""GnuPG (python-gnupg) as an independent reference for the tests; not shipped.

No secmail operation runs here any more. RSA secret-key operations run in
OpenSSL (``cryptography``), which blinds them: session-key unwrapping in
``secmail.pgp.decrypt._unwrap_rsa`` and signing in ``secmail.pgp.sign``.
GnuPG 2.2 cannot open v6 PKESKs (SEIPDv2), rejects bad padding explicitly
(an observable difference), and a fresh GNUPGHOME per operation costs
~40 ms against ~2 ms in-process. :func:`rsa_session_key` stays as the
reference the tests compare OpenSSL's session keys and cost with.

Every operation runs in a fresh temporary GNUPGHOME that holds only the
one secret key, and its gpg-agent is stopped and the directory removed
afterwards: no secret key outlives the operation on disk. (Measured costs
are in the test suite's report; see ``tests/pgp/test_pgp_gnupg_cost.py``.)

GnuPG is never asked to judge anything. The only thing read from its
status stream is the session key (``SESSION_KEY``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gnupg

from secmail.errors import DecryptionError, SecmailError
from secmail.pgp import packets as pk

_GPG_OPTIONS = [
    "--batch",
    "--no-tty",
    "--no-auto-key-retrieve",
    "--no-auto-key-locate",
    "--pinentry-mode",
    "loopback",
    "--trust-model",
    "always",
]


class _SessionKeyCrypt(gnupg.Crypt):
    """python-gnupg's decryption result, also keeping SESSION_KEY."""

    def __init__(self, gpg: Any) -> None:
        super().__init__(gpg)
        self.session_key: str | None = None

    def handle_status(self, key: str, value: str) -> None:
        if key == "SESSION_KEY":
            self.session_key = value
            return
        super().handle_status(key, value)


@contextmanager
def _home() -> Iterator[gnupg.GPG]:
    # Short path: gpg-agent's socket path must fit in sun_path.
    home = tempfile.mkdtemp(prefix="smg-", dir="/tmp" if os.path.isdir("/tmp") else None)
    try:
        os.chmod(home, 0o700)
        try:
            gpg = gnupg.GPG(gnupghome=home, options=list(_GPG_OPTIONS))
        except (OSError, ValueError) as exc:
            raise SecmailError("GnuPG is not available for RSA operations") from exc
        gpg.result_map = dict(gpg.result_map)
        gpg.result_map["crypt"] = _SessionKeyCrypt
        yield gpg
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", home, "--kill", "gpg-agent"],
            check=False,
            capture_output=True,
            timeout=10,
        )
        shutil.rmtree(home, ignore_errors=True)


def _import_secret(gpg: gnupg.GPG, tsk: bytes) -> None:
    result = gpg.import_keys(tsk)
    if not getattr(result, "sec_imported", 0):
        raise SecmailError("GnuPG could not import the RSA secret key")


def rsa_session_key(tsk: bytes, pkesk: bytes) -> tuple[int, bytes] | None:
    """Unwrap one v3 RSA PKESK with GnuPG: (cipher id, session key).

    GnuPG gets the PKESK followed by a dummy SEIPDv1 packet (random bytes):
    it unwraps the session key, reports it, and then fails on the dummy
    body, so it never sees (or outputs) the real ciphertext. None when the
    key does not open this PKESK.
    """
    dummy = pk.encode_packet(pk.TAG_SEIPD, b"\x01" + os.urandom(64))
    with _home() as gpg:
        _import_secret(gpg, tsk)
        result = gpg.decrypt(pkesk + dummy, extra_args=["--show-session-key"])
    value = getattr(result, "session_key", None)
    if not value:
        return None
    algo, _, hexkey = value.partition(":")
    try:
        return int(algo), bytes.fromhex(hexkey)
    except ValueError as exc:
        raise DecryptionError("could not decrypt the message") from exc
