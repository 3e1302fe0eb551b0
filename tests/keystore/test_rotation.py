"""Master key rotation (SQLKeyStore.rewrap_data_keys, `secmail admin
rotate-master-key`): only the wrapped data keys change, replicas keep
working throughout, the old key alone opens nothing afterwards, and every
key still signs and decrypts under the new one."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from testpki import end_entity, make_pki, message

from secmail.audit import AuditAction, AuditOutcome
from secmail.keystore.api import ParsedKey
from secmail.keystore.seal import LocalKEK, Sealer, UnsealError
from secmail.keystore.sql import SQLKeyStore, _SecretRow
from secmail.service.app import Secmail
from secmail.verdict import Banner, Scheme

MakeStore = Callable[..., SQLKeyStore]
ALICE = "alice@ac-besancon.fr"


def _key(n: int, *, private: bool = True) -> ParsedKey:
    return ParsedKey(
        scheme=Scheme.SMIME,
        key_id=hashlib.sha256(b"key %d" % n).hexdigest(),
        public_data=b"cert %d" % n,
        private_data=b"private key %d " % n + secrets.token_bytes(16) if private else None,
        addresses=(ALICE,),
        not_before=None,
        not_after=None,
        algorithm="ec-secp256r1",
        subject=f"CN=k{n}",
    )


def _rows(store: SQLKeyStore) -> dict[int, tuple[str, bytes, bytes]]:
    with store._engine.connect() as conn:
        return {
            r.key_ref: (r.master_key_id, r.wrapped_key, r.sealed)
            for r in conn.execute(select(_SecretRow.__table__).order_by(_SecretRow.key_ref))
        }


def _secrets(store: SQLKeyStore) -> dict[str, bytes]:
    return {k.key_id: s for k, s in store.private_keys(ALICE, Scheme.SMIME)}


def test_rotation_rewraps_only_the_data_keys(make_store: MakeStore) -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    before_store = make_store(with_sealer=Sealer(old))
    keys = [_key(n, private=n != 3) for n in range(8)]
    before_store.add_keys(ALICE, keys)
    expected = {k.key_id: k.private_data for k in keys if k.private_data}
    before = _rows(before_store)
    assert len(before) == 7 and {mk for mk, _, _ in before.values()} == {LocalKEK(old).id}

    rotating = make_store(with_sealer=Sealer(new, previous_keys=[old]))
    batches: list[int] = []
    result = rotating.rewrap_data_keys(batch_size=3, progress=batches.append)
    assert (result.rewrapped, result.under_current, result.remaining) == (7, 7, 0)
    assert batches == [3, 6, 7]  # three transactions
    assert result.master_key_id == LocalKEK(new).id

    after = _rows(rotating)
    assert after.keys() == before.keys()
    for ref, (mk, wrapped, sealed) in after.items():
        old_mk, old_wrapped, old_sealed = before[ref]
        assert sealed == old_sealed  # the secret itself was not re-encrypted
        assert wrapped != old_wrapped and len(wrapped) == 40
        assert (old_mk, mk) == (LocalKEK(old).id, LocalKEK(new).id)
        with pytest.raises(UnsealError):
            LocalKEK(old).unwrap(wrapped)

    # The new key alone opens everything; the old key alone opens nothing.
    assert _secrets(make_store(with_sealer=Sealer(new))) == expected
    with pytest.raises(UnsealError, match="not loaded"):
        make_store(with_sealer=Sealer(old)).private_keys(ALICE, Scheme.SMIME)
    # Even a sealer that claims the new key's id with the old key's bytes fails.
    impostor = Sealer(old)
    impostor._keys[LocalKEK(new).id] = LocalKEK(old)
    with pytest.raises(UnsealError, match="wrong master key"):
        make_store(with_sealer=impostor).private_keys(ALICE, Scheme.SMIME)

    again = rotating.rewrap_data_keys(batch_size=3)
    assert (again.rewrapped, again.remaining) == (0, 0)
    assert _rows(rotating) == after


def test_replicas_keep_working_during_rotation(make_store: MakeStore) -> None:
    """A replica that knows both keys (whichever seals) reads every key at
    every point of the rotation, between batches included."""
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    make_store(with_sealer=Sealer(old)).add_keys(ALICE, [_key(n) for n in range(5)])
    replicas = [
        make_store(with_sealer=Sealer(old, previous_keys=[new])),  # step 1 of the procedure
        make_store(with_sealer=Sealer(new, previous_keys=[old])),  # step 3
    ]
    expected = _secrets(replicas[0])
    rotating = make_store(with_sealer=Sealer(new, previous_keys=[old]))
    seen: list[int] = []

    def between_batches(done: int) -> None:
        seen.append(done)
        mixed = {mk for mk, _, _ in _rows(rotating).values()}
        if done < 5:
            assert mixed == {LocalKEK(old).id, LocalKEK(new).id}
        for replica in replicas:
            assert _secrets(replica) == expected

    assert rotating.rewrap_data_keys(batch_size=2, progress=between_batches).rewrapped == 5
    assert seen == [2, 4, 5]
    for replica in replicas:
        assert _secrets(replica) == expected


def test_key_sealed_by_a_lagging_replica_is_caught_by_the_next_run(make_store: MakeStore) -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    lagging = make_store(with_sealer=Sealer(old, previous_keys=[new]))
    lagging.add_keys(ALICE, [_key(n) for n in range(4)])
    rotating = make_store(with_sealer=Sealer(new, previous_keys=[old]))

    def import_meanwhile(done: int) -> None:
        if done == 2:
            # Re-seals all four under the old key (two already re-wrapped,
            # two not yet) and adds a fifth, after the run's position.
            lagging.add_keys(ALICE, [*(_key(n) for n in range(4)), _key(9)])

    result = rotating.rewrap_data_keys(batch_size=2, progress=import_meanwhile)
    assert (result.rewrapped, result.remaining) == (5, 2)  # the two the run had passed
    assert rotating.master_key_ids() == {LocalKEK(new).id: 3, LocalKEK(old).id: 2}
    second = rotating.rewrap_data_keys()
    assert (second.rewrapped, second.remaining, second.under_current) == (2, 0, 5)
    assert len(_secrets(make_store(with_sealer=Sealer(new)))) == 5


def test_unknown_master_key_stops_the_run_and_it_resumes(make_store: MakeStore) -> None:
    k1, k2, k3 = (secrets.token_bytes(32) for _ in range(3))
    make_store(with_sealer=Sealer(k1)).add_keys(ALICE, [_key(n) for n in range(3)])
    make_store(with_sealer=Sealer(k2)).add_keys(ALICE, [_key(n) for n in range(3, 6)])
    partial = make_store(with_sealer=Sealer(k3, previous_keys=[k1]))
    with pytest.raises(UnsealError, match="not loaded"):
        partial.rewrap_data_keys(batch_size=3)
    assert partial.master_key_ids() == {LocalKEK(k3).id: 3, LocalKEK(k2).id: 3}  # first batch kept
    done = make_store(with_sealer=Sealer(k3, previous_keys=[k1, k2])).rewrap_data_keys(batch_size=3)
    assert (done.rewrapped, done.remaining) == (3, 0)
    assert len(_secrets(make_store(with_sealer=Sealer(k3)))) == 6


# --- end to end: sign and decrypt after rotation, through the CLI ----------------------


def _write_key(path: Path, key: bytes) -> Path:
    path.write_bytes(key)
    path.chmod(0o600)
    return path


def test_cli_rotation_then_sign_and_decrypt_with_the_new_key_only(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from secmail.cli import main

    old_file = _write_key(tmp_path / "old.key", secrets.token_bytes(32))
    new_file = tmp_path / "new.key"  # created by the command
    pki = make_pki()
    alice = end_entity(pki.intermediate, ALICE)
    bob = end_entity(pki.intermediate, "bob@ac-besancon.fr")

    with SQLKeyStore(db_url, Sealer(old_file.read_bytes()), auto_upgrade=True) as store:
        app = Secmail(store, audit=store.audit_sink())
        app.import_trust("ac-besancon", pki.bundle_pem)
        app.import_key(ALICE, alice.p12(b"pw"), "pw")
        app.import_key(ALICE, bob.cert_pem, None)  # bob's certificate, to encrypt to him
        app.import_key("bob@ac-besancon.fr", bob.p12(b"pw"), "pw")
        before = _rows(store)

    assert main(["admin", "rotate-master-key", "--new-key-file", str(new_file), "--old-key-file", str(old_file),
                 "--database-url", db_url, "--batch-size", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    new_id = LocalKEK(new_file.read_bytes()).id
    assert f"re-wrapped 2 data keys under master key {new_id}; 2 under it now, 0 under other keys" in out

    with SQLKeyStore(db_url, Sealer(new_file.read_bytes()), auto_upgrade=False) as store:
        after = _rows(store)
        assert {r: s for r, (_, _, s) in after.items()} == {r: s for r, (_, _, s) in before.items()}
        app = Secmail(store, audit=store.audit_sink())
        signed = app.sign(ALICE, message(), Scheme.SMIME, opaque=False, header_protection=False)
        assert app.verify("bob@ac-besancon.fr", signed, None).verdict.banner is Banner.GREEN
        encrypted = app.encrypt(
            ALICE, message(), Scheme.SMIME, ["bob@ac-besancon.fr"], sign=True, header_protection=False
        )
        opened = app.decrypt("bob@ac-besancon.fr", encrypted, None)
        assert opened.verdict.lock and opened.verdict.banner is Banner.GREEN
        assert b"Le conseil de classe est jeudi." in opened.display_message
        rotations = store.audit_sink().query(action=AuditAction.MASTER_KEY_ROTATE)
        assert [(e.outcome, e.key_id) for e in rotations] == [(AuditOutcome.OK, new_id)]

    with (
        SQLKeyStore(db_url, Sealer(old_file.read_bytes()), auto_upgrade=False) as store,
        pytest.raises(UnsealError),
    ):
        Secmail(store).sign(ALICE, message(), Scheme.SMIME, opaque=False, header_protection=False)
