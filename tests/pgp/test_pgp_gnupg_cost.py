"""What the constant-time RSA paths cost.

RSA secret-key operations never run in Sequoia's RSA (RUSTSEC-2023-0071):
they run in OpenSSL (``cryptography``: blinding, and implicit rejection
for PKCS#1 v1.5 decryption), see ``secmail.pgp.decrypt._unwrap_rsa`` and
``secmail.pgp.sign``. GnuPG (a fresh GNUPGHOME per operation: import the
key, operate, stop the agent, delete) is kept as the reference. Measured
on the 2-core reference machine, RSA-3072, one v3 PKESK: GnuPG ~40 ms per
unwrap, OpenSSL ~1-2 ms (key loading included, OpenSSL's 130 ms
primality check skipped); a whole RSA decryption ~2-3 ms, an RSA
signature ~2-3 ms (it was ~40 ms through GnuPG), an Ed25519 signature
~0.5 ms. The test prints the numbers (pytest -s) and guards against a
regression by an order of magnitude.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

import gnupg_reference as _gnupg
from pgp_support import KeyPair, ctx_with

from secmail.pgp import keys
from secmail.pgp import packets as pk
from secmail.pgp.decrypt import _unwrap_rsa, decrypt
from secmail.pgp.encrypt import encrypt
from secmail.pgp.sign import sign_detached


def _median_ms(fn: Callable[[], object], n: int = 5) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def test_rsa_path_costs(bob_rsa: KeyPair, alice: KeyPair) -> None:
    data = b"x" * 4096
    rsa_sign = _median_ms(lambda: sign_detached(data, bob_rsa.tsk))
    ed_sign = _median_ms(lambda: sign_detached(data, alice.tsk))
    rsa_msg = encrypt(data, [bob_rsa.cert])
    ed_msg = encrypt(data, [alice.cert])
    rsa_dec = _median_ms(lambda: decrypt(rsa_msg, [bob_rsa.tsk], ctx_with([])))
    ed_dec = _median_ms(lambda: decrypt(ed_msg, [alice.tsk], ctx_with([])))

    (esk,) = [pk.parse_pkesk(p) for p in pk.read_packets(pk.to_binary(rsa_msg)) if p.tag == pk.TAG_PKESK]
    (enc,) = keys.load_cert(bob_rsa.tsk, datetime.now(UTC)).encryption_keys()
    via_gnupg = _median_ms(lambda: _gnupg.rsa_session_key(bob_rsa.tsk, esk.raw))
    via_openssl = _median_ms(lambda: _unwrap_rsa(esk, enc.key, None), n=20)
    print(
        f"\nRSA-3072 PKESK unwrap: GnuPG {via_gnupg:.1f} ms/op, OpenSSL {via_openssl:.2f} ms/op; "
        f"RSA decrypt (OpenSSL) {rsa_dec:.1f} ms, RSA sign (OpenSSL) {rsa_sign:.1f} ms; "
        f"Ed25519/X25519 in-process: sign {ed_sign:.1f} ms, decrypt {ed_dec:.1f} ms"
    )
    assert rsa_sign < 100 and rsa_dec < 100
    assert via_openssl * 5 < via_gnupg
    assert ed_sign < rsa_sign
