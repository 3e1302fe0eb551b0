"""Cost of the key store per request, on SQLite and PostgreSQL (not a test).

    .venv/bin/python tests/keystore/bench_store.py [--keys 10000] [--lookups 2000] [--backend sqlite|postgres]

Fills a fresh database with ``--keys`` keys: 90% correspondents'
certificates imported for everyone, 10% users' own keys with a sealed
private key (one per user). Then times, per call:

- ``find_public`` of a random correspondent (recipient lookup, Encrypt);
- ``private_keys`` of a random user, with the unseal (Sign, Decrypt), the
  data keys wrapped by a local master key, then by a PKCS#11 (SoftHSM2)
  master key after a rotation onto the token, when SoftHSM2 is installed;
- one audit event written (every Sign and Decrypt writes one);
- the master key rotation itself (data keys re-wrapped per second).

PostgreSQL is the test server on 127.0.0.1:5432, in a database created and
dropped for the run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from secmail.audit import AuditAction, AuditEvent, AuditOutcome
from secmail.keystore.api import EVERYONE, ParsedKey
from secmail.keystore.seal import LocalKEK, Sealer
from secmail.keystore.sql import SQLKeyStore
from secmail.verdict import Scheme


def _key(n: int, address: str, private: bool) -> ParsedKey:
    return ParsedKey(
        scheme=Scheme.SMIME,
        key_id=hashlib.sha256(b"bench %d" % n).hexdigest(),
        public_data=secrets.token_bytes(1200),  # an RSA-2048 certificate's size
        private_data=secrets.token_bytes(1218) if private else None,  # PKCS#8 RSA-2048
        addresses=(address,),
        not_before=None,
        not_after=None,
        algorithm="rsa-2048",
        subject=f"CN={address}",
        usable_for_signing=private,
    )


def fill(store: SQLKeyStore, keys: int) -> tuple[list[str], list[str]]:
    users = [f"user{n}@ac-bench.fr" for n in range(keys // 10)]
    correspondents = [f"corr{n}@other.fr" for n in range(keys - len(users))]
    batch = 1000
    for start in range(0, len(correspondents), batch):
        chunk = correspondents[start : start + batch]
        store.add_keys(EVERYONE, [_key(start + i, a, False) for i, a in enumerate(chunk)])
    for n, user in enumerate(users):
        store.add_keys(user, [_key(len(correspondents) + n, user, True)])
    return users, correspondents


def per_call_ms(op: Callable[[], object], n: int) -> float:
    for _ in range(min(50, n)):
        op()
    started = time.perf_counter()
    for _ in range(n):
        op()
    return (time.perf_counter() - started) / n * 1000


@contextmanager
def postgres_url() -> Iterator[str]:
    import psycopg

    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
    name = f"secmail_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@contextmanager
def softhsm_kek() -> Iterator[object | None]:
    module = "/usr/lib/softhsm/libsofthsm2.so"
    util = shutil.which("softhsm2-util")
    if util is None or not Path(module).exists():
        yield None
        return
    from secmail.keystore.pkcs11 import PKCS11KEK, PKCS11Config, generate_master_key

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokens").mkdir()
        conf = Path(tmp) / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {tmp}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        os.environ["SOFTHSM2_CONF"] = str(conf)
        subprocess.run(
            [util, "--init-token", "--free", "--label", "bench", "--pin", "1234", "--so-pin", "5678"],
            check=True,
            capture_output=True,
        )
        config = PKCS11Config(module=module, token_label="bench", key_label="bench-master", pin="1234")
        generate_master_key(config)
        kek = PKCS11KEK(config)
        try:
            yield kek
        finally:
            kek.close()


def run(name: str, url: str, keys: int, lookups: int, token: object | None) -> None:
    master = secrets.token_bytes(32)
    store = SQLKeyStore(url, Sealer(master), auto_upgrade=True)
    started = time.perf_counter()
    users, correspondents = fill(store, keys)
    print(f"{name}: {keys} keys stored in {time.perf_counter() - started:.1f} s")
    rng = random.Random(1)
    print(
        f"  find_public                     {per_call_ms(lambda: store.find_public(rng.choice(correspondents), Scheme.SMIME, for_user=users[0]), lookups):.3f} ms"
    )
    print(
        f"  private_keys + unseal (file)    {per_call_ms(lambda: store.private_keys(rng.choice(users), Scheme.SMIME), lookups):.3f} ms"
    )
    sink = store.audit_sink()

    def audit() -> None:
        sink.record(
            AuditEvent(AuditAction.SIGN, AuditOutcome.OK, "webmail", user=rng.choice(users), key_id="k")
        )

    print(f"  audit event written             {per_call_ms(audit, lookups):.3f} ms")
    store.close()
    if token is None:
        print("  (SoftHSM2 not installed: no PKCS#11 figures)")
        return
    rotating = SQLKeyStore(url, Sealer(token, previous_keys=[master]))  # type: ignore[arg-type]
    started = time.perf_counter()
    result = rotating.rewrap_data_keys(batch_size=200)
    elapsed = time.perf_counter() - started
    print(
        f"  rotation file -> token          {result.rewrapped / elapsed:.0f} data keys/s ({result.rewrapped} keys)"
    )
    rotating.close()
    on_token = SQLKeyStore(url, Sealer(token))  # type: ignore[arg-type]
    print(
        f"  private_keys + unseal (PKCS#11) {per_call_ms(lambda: on_token.private_keys(rng.choice(users), Scheme.SMIME), lookups):.3f} ms"
    )
    on_token.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args()
    wrapped = secrets.token_bytes(32)
    local = LocalKEK(secrets.token_bytes(32))
    w = local.wrap(wrapped)
    print(f"local AES-KW unwrap               {per_call_ms(lambda: local.unwrap(w), 20_000):.4f} ms")
    with softhsm_kek() as token:
        if token is not None:
            tw = token.wrap(wrapped)  # type: ignore[attr-defined]
            print(f"PKCS#11 (SoftHSM2) unwrap         {per_call_ms(lambda: token.unwrap(tw), 5000):.4f} ms")  # type: ignore[attr-defined]
        if args.backend in ("sqlite", "both"):
            with tempfile.TemporaryDirectory() as tmp:
                run("SQLite", f"sqlite:///{tmp}/bench.db", args.keys, args.lookups, token)
        if args.backend in ("postgres", "both"):
            with postgres_url() as url:
                run("PostgreSQL", url, args.keys, args.lookups, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
