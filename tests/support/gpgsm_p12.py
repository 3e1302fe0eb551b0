"""Hand a private key to gpgsm 2.2, whose only secret-key import is PKCS#12.

gpgsm 2.2's own PKCS#12 reader (minip12) fails on about 3 % of files that
OpenSSL and cryptography read without complaint ("decryption failed; trying
charset ...", "possibly bad passphrase given"). The failure is deterministic
for a given file and follows the random salts: 3 of 120 freshly serialised
files failed here, each of them on every retry, while the same key and
certificate re-serialised with new salts imported. So the helper serialises
again when, and only when, gpgsm reports that parse failure; any other
error is returned to the caller's assertion unchanged.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.hazmat.primitives.serialization.pkcs12 import PKCS12PrivateKeyTypes

MINIP12_FAILURE = b"error parsing or decrypting the PKCS#12 file"
ATTEMPTS = 6


def legacy_p12(key: PKCS12PrivateKeyTypes, cert: x509.Certificate, passphrase: str) -> bytes:
    """3DES/SHA-1 PBE with a SHA-1 MAC: the only PKCS#12 form gpgsm 2.2 reads."""
    return pkcs12.serialize_key_and_certificates(
        b"interop",
        key,
        cert,
        None,
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(passphrase.encode()),
    )


def import_into_gpgsm(
    run_import: Callable[[Path], subprocess.CompletedProcess[bytes]],
    key: PKCS12PrivateKeyTypes,
    cert: x509.Certificate,
    passphrase: str,
    path: Path,
) -> subprocess.CompletedProcess[bytes]:
    """Write a .p12 at `path` and import it with `run_import`, re-salting on minip12's failure."""
    for _ in range(ATTEMPTS):
        path.write_bytes(legacy_p12(key, cert, passphrase))
        result = run_import(path)
        if result.returncode == 0 or MINIP12_FAILURE not in result.stderr:
            return result
    return result
