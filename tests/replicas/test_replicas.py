"""Several `secmail serve` replicas on one PostgreSQL database.

A key imported through one replica is usable through another at once;
concurrent imports, deletes and trust changes through both neither corrupt
nor duplicate anything; a replica killed (SIGKILL) in the middle of an
import leaves no partial key behind.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from replica_support import Database, Replica
from testpki import PKI, Identity, end_entity, make_pki, message

from secmail.v1 import (
    keys_pb2,
    keys_pb2_grpc,
    message_security_pb2,
    message_security_pb2_grpc,
    trust_pb2,
    trust_pb2_grpc,
    verdict_pb2,
)

ALICE = "alice@ac-besancon.fr"
BOB = "bob@ac-besancon.fr"


@dataclass
class Stubs:
    channel: grpc.Channel
    messages: message_security_pb2_grpc.MessageSecurityStub
    keys: keys_pb2_grpc.KeyServiceStub
    trust: trust_pb2_grpc.TrustServiceStub


def _stubs(replica: Replica) -> Stubs:
    channel = grpc.insecure_channel(replica.address)
    return Stubs(
        channel,
        message_security_pb2_grpc.MessageSecurityStub(channel),
        keys_pb2_grpc.KeyServiceStub(channel),
        trust_pb2_grpc.TrustServiceStub(channel),
    )


@pytest.fixture(scope="module")
def pki() -> PKI:
    return make_pki()


@pytest.fixture(scope="module")
def pair(start_replica: Callable[..., Replica]) -> Iterator[tuple[Stubs, Stubs]]:
    a, b = _stubs(start_replica()), _stubs(start_replica())
    yield a, b
    a.channel.close()
    b.channel.close()


def _key_id(ident: Identity) -> str:
    return ident.cert.fingerprint(hashes.SHA256()).hex()


def _import(stubs: Stubs, user: str, ident: Identity) -> keys_pb2.ImportKeyResponse:
    return stubs.keys.ImportKey(keys_pb2.ImportKeyRequest(user=user, data=ident.p12(b"pw"), passphrase="pw"))


def test_imported_through_one_usable_through_the_other(
    pair: tuple[Stubs, Stubs], pki: PKI, database: Database
) -> None:
    a, b = pair
    alice, bob = end_entity(pki.intermediate, ALICE), end_entity(pki.intermediate, BOB)
    a.trust.ImportTrustBundle(trust_pb2.ImportTrustBundleRequest(name="ac-besancon", data=pki.bundle_pem))
    _import(a, ALICE, alice)
    _import(a, BOB, bob)
    a.keys.ImportKey(keys_pb2.ImportKeyRequest(user=ALICE, data=bob.cert_pem))  # bob's cert, for alice

    # Sign through B with the key A imported; A and B both judge it GREEN.
    signed = b.messages.Sign(message_security_pb2.SignRequest(user=ALICE, message=message())).message
    for replica in (a, b):
        verdict = replica.messages.Verify(
            message_security_pb2.VerifyRequest(user=BOB, message=signed)
        ).verdict
        assert verdict.banner == verdict_pb2.BANNER_GREEN
    # Encrypt through A, decrypt through B.
    encrypted = a.messages.Encrypt(
        message_security_pb2.EncryptRequest(user=ALICE, message=message(), recipients=[BOB], sign=True)
    ).message
    opened = b.messages.Decrypt(message_security_pb2.DecryptRequest(user=BOB, message=encrypted))
    assert opened.verdict.lock and opened.verdict.banner == verdict_pb2.BANNER_GREEN
    assert b"Le conseil de classe est jeudi." in opened.display_message

    # A delete through B is seen by A at once.
    b.keys.DeleteKey(keys_pb2.DeleteKeyRequest(user=ALICE, key_id=_key_id(alice)))
    with pytest.raises(grpc.RpcError) as info:
        a.messages.Sign(message_security_pb2.SignRequest(user=ALICE, message=message()))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND

    # Both replicas audit into the shared table.
    rows = database.query(
        "SELECT action, outcome, caller, mailbox, key_id FROM audit_events WHERE action IN "
        "('sign', 'decrypt', 'key.delete') ORDER BY id"
    )
    assert rows == [
        ("sign", "ok", "local", ALICE, _key_id(alice)),
        ("sign", "ok", "local", ALICE, _key_id(alice)),
        ("decrypt", "ok", "local", BOB, _key_id(bob)),
        ("key.delete", "ok", "local", ALICE, _key_id(alice)),
        ("sign", "failed", "local", ALICE, ""),
    ]


def test_concurrent_imports_deletes_and_trust_changes(
    pair: tuple[Stubs, Stubs], pki: PKI, database: Database
) -> None:
    a, b = pair
    user = "conseil@ac-besancon.fr"
    people = [end_entity(pki.intermediate, f"prof{n}@ac-besancon.fr") for n in range(3)]
    p12s = [p.p12(b"pw") for p in people]
    other_pki = make_pki()
    errors: list[str] = []
    deadline = time.monotonic() + 60

    def worker(n: int) -> None:
        stubs = (a, b)[n % 2]
        for i in range(6):
            if time.monotonic() > deadline:
                return
            try:
                if n < 4:  # importers and deleters of the same keys
                    k = (n + i) % len(people)
                    if (n + i) % 3 == 2:
                        stubs.keys.DeleteKey(keys_pb2.DeleteKeyRequest(user=user, key_id=_key_id(people[k])))
                    else:
                        stubs.keys.ImportKey(
                            keys_pb2.ImportKeyRequest(user=user, data=p12s[k], passphrase="pw")
                        )
                elif i % 2 == 0:  # trust importers and removers of one bundle
                    stubs.trust.ImportTrustBundle(
                        trust_pb2.ImportTrustBundleRequest(
                            name="churn", data=other_pki.bundle_pem, domains=[f"d{n}.fr"]
                        )
                    )
                else:
                    stubs.trust.RemoveTrustBundle(trust_pb2.RemoveTrustBundleRequest(name="churn"))
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.NOT_FOUND:  # a delete that lost the race
                    errors.append(f"worker {n}: {exc.code().name} {exc.details()}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    # Nothing duplicated, nothing orphaned, nothing half-written.
    assert (
        database.query(
            "SELECT key_id, COUNT(*) FROM keys WHERE owner = %s GROUP BY key_id HAVING COUNT(*) > 1", user
        )
        == []
    )
    assert database.query(
        "SELECT COUNT(*) FROM keys k LEFT JOIN sealed_secrets s ON s.key_ref = k.id "
        "WHERE k.owner = %s AND s.key_ref IS NULL",
        user,
    ) == [(0,)]  # every imported .p12 key has its sealed private key
    assert database.query(
        "SELECT COUNT(*) FROM key_addresses a LEFT JOIN keys k ON k.id = a.key_ref WHERE k.id IS NULL"
    ) == [(0,)]
    assert database.query(
        "SELECT COUNT(*) FROM sealed_secrets s LEFT JOIN keys k ON k.id = s.key_ref WHERE k.id IS NULL"
    ) == [(0,)]
    assert database.query(
        "SELECT COUNT(*) FROM keys k WHERE owner = %s AND "
        "(SELECT COUNT(*) FROM key_addresses a WHERE a.key_ref = k.id) != 1",
        user,
    ) == [(0,)]
    # Trust: either the bundle with both its certificates and one scope, or nothing.
    bundles = database.query("SELECT name, domains::text FROM trust_bundles WHERE name = 'churn'")
    entries = database.query("SELECT COUNT(*) FROM trust_entries WHERE bundle = 'churn'")[0][0]
    assert (len(bundles), entries) in ((0, 0), (1, 2))
    assert database.query(
        "SELECT COUNT(*) FROM trust_entries e LEFT JOIN trust_bundles b ON b.name = e.bundle WHERE b.name IS NULL"
    ) == [(0,)]

    # Both replicas see the same state, and every key left signs through either.
    listed = [
        sorted(k.key_id for k in s.keys.ListKeys(keys_pb2.ListKeysRequest(user=user)).keys) for s in (a, b)
    ]
    assert listed[0] == listed[1]
    for p in people:
        _import(a, user, p)
    assert len(b.keys.ListKeys(keys_pb2.ListKeysRequest(user=user)).keys) == 3


def test_replica_killed_mid_import_leaves_no_partial_key(
    start_replica: Callable[..., Replica], pair: tuple[Stubs, Stubs], pki: PKI, database: Database
) -> None:
    _, b = pair
    # The test-only hook holds the import's transaction open after every row
    # is written, so the kill lands inside it.
    slow = start_replica(env={"SECMAIL_TEST_IMPORT_DELAY": "60"})
    victim = "crash@ac-besancon.fr"
    ident = end_entity(pki.intermediate, victim)
    c = _stubs(slow)
    outcome: list[object] = []

    def import_through_slow() -> None:
        try:
            outcome.append(_import(c, victim, ident))
        except grpc.RpcError as exc:
            outcome.append(exc.code())

    t = threading.Thread(target=import_through_slow)
    t.start()
    slow.wait_for_log("holding the import transaction open", timeout=30)
    # The rows are written, uncommitted: PostgreSQL shows the transaction open.
    assert (
        database.query(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'"
        )[0][0]
        >= 1
    )
    assert b.keys.ListKeys(keys_pb2.ListKeysRequest(user=victim)).keys == []
    os.kill(slow.proc.pid, signal.SIGKILL)
    slow.proc.wait(timeout=10)
    t.join(timeout=30)
    c.channel.close()
    assert outcome == [grpc.StatusCode.UNAVAILABLE]

    assert b.keys.ListKeys(keys_pb2.ListKeysRequest(user=victim)).keys == []
    assert database.query("SELECT COUNT(*) FROM keys WHERE owner = %s", victim) == [(0,)]
    assert database.query("SELECT COUNT(*) FROM key_addresses WHERE owner = %s", victim) == [(0,)]
    assert database.query(
        "SELECT COUNT(*) FROM audit_events WHERE mailbox = %s AND outcome = 'ok'", victim
    ) == [(0,)]
    # No lock was left behind: the same import through B goes straight through.
    started = time.monotonic()
    [info] = _import(b, victim, ident).keys
    assert time.monotonic() - started < 10
    assert info.has_private_key and info.key_id == _key_id(ident)
    signed = b.messages.Sign(message_security_pb2.SignRequest(user=victim, message=message(sender=victim)))
    assert signed.message.startswith(b"From:") or b"multipart/signed" in signed.message
