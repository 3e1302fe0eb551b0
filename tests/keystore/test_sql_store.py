"""SQLKeyStore on SQLite and PostgreSQL: the KeyStore contract, sealing,
atomic imports, restarts."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from keystore_pki import NOT_AFTER, NOT_BEFORE, VALID_AT, cert_pem, key_pem, make_ca, make_user, pkcs8_der
from sqlalchemy import Engine, LargeBinary, String, Text, select, text, update

from secmail.errors import InputError, KeyNotFoundError, NotFoundError, SecmailError
from secmail.keystore.api import EVERYONE, KeyStore, ParsedKey, StoredCRL, StoredKey, TrustEntry
from secmail.keystore.importer import PROBLEM_EXPIRED, PROBLEM_KU_NO_SIGNING, parse_key_file
from secmail.keystore.migrate import SchemaError, head_revision
from secmail.keystore.seal import Sealer, UnsealError
from secmail.keystore.sql import SQLKeyStore, StoreError, _Base, _SecretRow
from secmail.verdict import Scheme

MakeStore = Callable[..., SQLKeyStore]

ALICE = "alice@ac-test.fr"
BOB = "bob@ac-test.fr"


def _private() -> bytes:
    return pkcs8_der(ec.generate_private_key(ec.SECP256R1()))


def pk(
    seed: str,
    *,
    addresses: tuple[str, ...] = (ALICE,),
    private: bytes | None = None,
    scheme: Scheme = Scheme.SMIME,
    problems: tuple[str, ...] = (),
    not_after: datetime = NOT_AFTER,
    usable_for_signing: bool | None = None,
) -> ParsedKey:
    return ParsedKey(
        scheme=scheme,
        key_id=hashlib.sha256(seed.encode()).hexdigest(),
        public_data=b"public:" + seed.encode(),
        private_data=private,
        addresses=addresses,
        not_before=NOT_BEFORE,
        not_after=not_after,
        algorithm="ec-secp256r1",
        subject=f"CN={seed}",
        issuer="CN=Test CA",
        chain=(b"intermediate " + seed.encode(), b"", b"root"),
        problems=problems,
        usable_for_encryption=True,
        usable_for_signing=private is not None if usable_for_signing is None else usable_for_signing,
    )


def _engine(store: SQLKeyStore) -> Engine:
    return store._engine


def _count(store: SQLKeyStore, table: str) -> int:
    with _engine(store).connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def test_is_a_keystore(store: SQLKeyStore) -> None:
    ks: KeyStore = store
    assert ks.list_keys(ALICE) == []


# --- keys ---------------------------------------------------------------------


def test_add_list_and_unseal(store: SQLKeyStore) -> None:
    secret = _private()
    mine = pk("alice-smime", private=secret)
    correspondent = pk("bob-cert", addresses=(BOB,))
    stored = store.add_keys(ALICE, [mine, correspondent])
    assert [s.key_id for s in stored] == [mine.key_id, correspondent.key_id]
    assert [s.has_private_key for s in stored] == [True, False]

    listed = store.list_keys(ALICE)
    assert {s.key_id for s in listed} == {mine.key_id, correspondent.key_id}
    first = next(s for s in listed if s.key_id == mine.key_id)
    assert first.user == ALICE and first.scheme is Scheme.SMIME
    assert first.public_data == mine.public_data
    assert first.chain == mine.chain
    assert first.addresses == (ALICE,)
    assert first.not_before == NOT_BEFORE and first.not_after == NOT_AFTER
    assert first.not_after.tzinfo is not None and first.created_at.tzinfo is not None
    assert (first.algorithm, first.subject, first.issuer) == ("ec-secp256r1", "CN=alice-smime", "CN=Test CA")
    assert first.usable_for_signing and first.usable_for_encryption

    [(key, plaintext)] = store.private_keys(ALICE, Scheme.SMIME)
    assert key.key_id == mine.key_id and plaintext == secret
    assert store.private_keys(ALICE, Scheme.OPENPGP) == []
    assert store.private_keys(BOB, Scheme.SMIME) == []


def test_real_certificate_through_importer_and_store(store: SQLKeyStore) -> None:
    ca = make_ca("CA")
    user = make_user(ALICE, issuer=ca, key=ec.generate_private_key(ec.SECP256R1()))
    parsed = parse_key_file(key_pem(user.key) + cert_pem(user.cert) + cert_pem(ca.cert), None, now=VALID_AT)
    store.add_keys(ALICE, parsed)
    [(key, plaintext)] = store.private_keys(ALICE, Scheme.SMIME)
    assert plaintext == pkcs8_der(user.key)
    assert key.chain == parsed[0].chain and len(key.chain) == 1
    assert [k.key_id for k in store.find_public(ALICE, Scheme.SMIME, for_user=BOB)] == [parsed[0].key_id]


def test_restart_keeps_everything(make_store: MakeStore, master_key: bytes) -> None:
    first = make_store()
    secret = _private()
    first.add_keys(ALICE, [pk("k", private=secret)])
    first.add_trust([_trust("root", anchor=True)])
    first.add_crl(_crl("CN=CA", 1))
    before = first.list_keys(ALICE)
    first.close()

    again = make_store(with_sealer=Sealer(master_key))
    assert again.list_keys(ALICE) == before
    assert [p for _, p in again.private_keys(ALICE, Scheme.SMIME)] == [secret]
    assert [t.anchor_id for t in again.list_trust()] == ["root"]
    assert [c.issuer for c in again.list_crls()] == ["CN=CA"]


def test_reimport_replaces(store: SQLKeyStore) -> None:
    original = pk("k", private=_private(), addresses=(ALICE,))
    [first] = store.add_keys(ALICE, [original])
    updated = replace(
        original, addresses=("alice.new@ac-test.fr",), problems=("something",), private_data=_private()
    )
    [second] = store.add_keys(ALICE, [updated])
    assert len(store.list_keys(ALICE)) == 1
    assert second.created_at == first.created_at
    assert second.addresses == ("alice.new@ac-test.fr",) and second.problems == ("something",)
    assert store.find_public(ALICE, Scheme.SMIME, for_user=ALICE) == []
    assert [k.key_id for k in store.find_public("alice.new@ac-test.fr", Scheme.SMIME, for_user=ALICE)] == [
        original.key_id
    ]
    [(_, plaintext)] = store.private_keys(ALICE, Scheme.SMIME)
    assert plaintext == updated.private_data
    assert _count(store, "sealed_secrets") == 1 and _count(store, "key_addresses") == 1


def test_certificate_only_reimport_keeps_private_key(store: SQLKeyStore) -> None:
    secret = _private()
    with_key = pk("k", private=secret, problems=(PROBLEM_KU_NO_SIGNING,), usable_for_signing=True)
    store.add_keys(ALICE, [with_key])
    cert_only = replace(with_key, private_data=None, usable_for_signing=False, problems=())
    [stored] = store.add_keys(ALICE, [cert_only])
    assert stored.has_private_key
    assert stored.usable_for_signing  # what only the import with the key could tell
    assert stored.problems == (PROBLEM_KU_NO_SIGNING,)
    assert [p for _, p in store.private_keys(ALICE, Scheme.SMIME)] == [secret]


def test_certificate_only_reimport_with_new_problem_stops_signing(store: SQLKeyStore) -> None:
    with_key = pk("k", private=_private())
    store.add_keys(ALICE, [with_key])
    [stored] = store.add_keys(
        ALICE, [replace(with_key, private_data=None, usable_for_signing=False, problems=(PROBLEM_EXPIRED,))]
    )
    assert stored.has_private_key and not stored.usable_for_signing
    assert stored.problems == (PROBLEM_EXPIRED,)


def test_failed_import_leaves_nothing(store: SQLKeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = pk("existing", private=_private())
    store.add_keys(ALICE, [existing])
    snapshot = store.list_keys(ALICE)
    counts = {t: _count(store, t) for t in ("keys", "key_addresses", "sealed_secrets")}

    real_seal = store._sealer.seal
    calls = {"n": 0}

    def failing_seal(plaintext: bytes, *, aad: bytes) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure")
        return real_seal(plaintext, aad=aad)

    monkeypatch.setattr(store._sealer, "seal", failing_seal)
    batch = [
        pk("new-1", private=_private(), addresses=(BOB,)),
        replace(existing, addresses=("changed@ac-test.fr",), private_data=_private()),
        pk("new-2", private=_private()),
    ]
    with pytest.raises(RuntimeError, match="injected"):
        store.add_keys(ALICE, batch)
    assert calls["n"] == 3  # the failure came after two keys were written

    assert store.list_keys(ALICE) == snapshot
    assert {t: _count(store, t) for t in counts} == counts
    assert store.find_public(BOB, Scheme.SMIME, for_user=ALICE) == []
    assert [p for _, p in store.private_keys(ALICE, Scheme.SMIME)] == [existing.private_data]


def test_find_public_visibility(store: SQLKeyStore) -> None:
    own = pk("alice-own", addresses=(BOB,))  # alice's copy of a cert for bob
    bobs = pk("bob-own", addresses=(BOB,), private=_private())  # bob's own key
    everyone = pk("directory", addresses=(BOB,))
    hidden = pk("carol-private-import", addresses=(BOB,))
    store.add_keys(ALICE, [own])
    store.add_keys(BOB, [bobs])
    store.add_keys(EVERYONE, [everyone])
    store.add_keys("carol@ac-test.fr", [hidden])

    found = {k.key_id for k in store.find_public(BOB, Scheme.SMIME, for_user=ALICE)}
    assert found == {own.key_id, bobs.key_id, everyone.key_id}
    found_by_dave = {k.key_id for k in store.find_public(BOB, Scheme.SMIME, for_user="dave@ac-test.fr")}
    assert found_by_dave == {bobs.key_id, everyone.key_id}
    assert store.find_public("nobody@ac-test.fr", Scheme.SMIME, for_user=ALICE) == []


def test_find_public_dedupes_preferring_own_copy(store: SQLKeyStore) -> None:
    cert = pk("shared", addresses=(BOB,))
    store.add_keys(EVERYONE, [cert])
    store.add_keys(ALICE, [cert])
    [found] = store.find_public(BOB, Scheme.SMIME, for_user=ALICE)
    assert found.user == ALICE
    [found] = store.find_public(BOB, Scheme.SMIME, for_user="dave@ac-test.fr")
    assert found.user == EVERYONE


def test_find_public_order_prefers_usable_then_latest(store: SQLKeyStore) -> None:
    old = pk("old", addresses=(BOB,), not_after=NOT_AFTER - timedelta(days=300))
    new = pk("new", addresses=(BOB,))
    unusable = replace(pk("unusable", addresses=(BOB,), not_after=NOT_AFTER + timedelta(days=300)))
    unusable = replace(unusable, usable_for_encryption=False)
    store.add_keys(EVERYONE, [old, unusable, new])
    assert [k.key_id for k in store.find_public(BOB, Scheme.SMIME, for_user=ALICE)] == [
        new.key_id,
        old.key_id,
        unusable.key_id,
    ]


def test_find_public_normalises_and_filters_scheme(store: SQLKeyStore) -> None:
    smime = pk("smime", addresses=("Bob.Martin@AC-Test.FR",))
    pgp = pk("pgp", addresses=("Bob.Martin@ac-test.fr",), scheme=Scheme.OPENPGP)
    store.add_keys(EVERYONE, [smime, pgp])
    assert [k.key_id for k in store.find_public(" Bob.Martin@ac-TEST.fr ", Scheme.SMIME, for_user=ALICE)] == [
        smime.key_id
    ]
    assert [k.key_id for k in store.find_public("Bob.Martin@ac-test.fr", Scheme.OPENPGP, for_user=ALICE)] == [
        pgp.key_id
    ]
    # The local part is case-sensitive (RFC 5321 §2.4).
    assert store.find_public("bob.martin@ac-test.fr", Scheme.SMIME, for_user=ALICE) == []
    assert store.find_public("not an address", Scheme.SMIME, for_user=ALICE) == []


def test_delete_key(store: SQLKeyStore) -> None:
    key = pk("k", private=_private(), addresses=(ALICE, BOB))
    store.add_keys(ALICE, [key])
    with pytest.raises(KeyNotFoundError):
        store.delete_key(BOB, key.key_id)  # not bob's
    store.delete_key(ALICE, key.key_id)
    assert store.list_keys(ALICE) == []
    assert store.find_public(BOB, Scheme.SMIME, for_user=ALICE) == []
    assert {t: _count(store, t) for t in ("keys", "key_addresses", "sealed_secrets")} == {
        "keys": 0,
        "key_addresses": 0,
        "sealed_secrets": 0,
    }
    with pytest.raises(KeyNotFoundError):
        store.delete_key(ALICE, key.key_id)


def test_invalid_user_and_key_id(store: SQLKeyStore) -> None:
    with pytest.raises(InputError):
        store.add_keys("", [pk("k")])
    with pytest.raises(InputError):
        store.add_keys(ALICE, [replace(pk("k"), key_id="../../etc")])
    assert store.list_keys(ALICE) == []


def test_openpgp_keys_stored_alongside(store: SQLKeyStore) -> None:
    tsk = b"\xc5 fake transferable secret key"
    pgp = pk("pgp", scheme=Scheme.OPENPGP, private=tsk)
    store.add_keys(ALICE, [pgp, pk("smime", private=_private())])
    [(key, plaintext)] = store.private_keys(ALICE, Scheme.OPENPGP)
    assert key.scheme is Scheme.OPENPGP and plaintext == tsk


def test_concurrent_imports(make_store: MakeStore) -> None:
    stores = [make_store(), make_store()]
    errors: list[BaseException] = []
    shared = pk("shared", private=_private())

    def work(n: int) -> None:
        store = stores[n % 2]
        try:
            for i in range(5):
                store.add_keys(ALICE, [shared, pk(f"t{n}-{i}")])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(stores[0].list_keys(ALICE)) == 1 + 4 * 5


def _race_deletes(stores: list[SQLKeyStore], key_id: str) -> list[str]:
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def delete(store: SQLKeyStore) -> None:
        barrier.wait()
        try:
            store.delete_key(ALICE, key_id)
            outcomes.append("deleted")
        except KeyNotFoundError:
            outcomes.append("not found")

    threads = [threading.Thread(target=delete, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes)


def test_concurrent_deletes_one_wins(make_store: MakeStore) -> None:
    """Two replicas delete the same key at once: one succeeds, the other is
    told the key is gone (the row is locked, not deleted twice)."""
    stores = [make_store(), make_store()]
    for round_ in range(5):
        key = pk(f"contested-{round_}", private=_private())
        stores[0].add_keys(ALICE, [key])
        assert _race_deletes(stores, key.key_id) == ["deleted", "not found"]


# --- sealing in the database ------------------------------------------------------


def test_secret_moved_to_another_row_does_not_unseal(store: SQLKeyStore) -> None:
    store.add_keys(ALICE, [pk("alice", private=b"alice secret")])
    store.add_keys(BOB, [pk("bob", private=b"bob secret")])
    engine = _engine(store)
    with engine.begin() as conn:
        rows = {r.key_ref: r for r in conn.execute(select(_SecretRow.__table__))}
        (_a_ref, a), (b_ref, _b) = sorted(rows.items())
        # Copy alice's sealed secret over bob's: same master key, valid blob.
        conn.execute(
            update(_SecretRow)
            .where(_SecretRow.key_ref == b_ref)
            .values(sealed=a.sealed, wrapped_key=a.wrapped_key, master_key_id=a.master_key_id)
        )
    assert [p for _, p in store.private_keys(ALICE, Scheme.SMIME)] == [b"alice secret"]
    with pytest.raises(UnsealError):
        store.private_keys(BOB, Scheme.SMIME)


def test_wrong_master_key_cannot_unseal(make_store: MakeStore) -> None:
    make_store().add_keys(ALICE, [pk("k", private=_private())])
    other = make_store(with_sealer=Sealer(bytes(32)))
    assert len(other.find_public(ALICE, Scheme.SMIME, for_user=ALICE)) == 1  # public data still readable
    with pytest.raises(UnsealError):
        other.private_keys(ALICE, Scheme.SMIME)


def test_no_private_key_bytes_in_any_column(store: SQLKeyStore) -> None:
    secret = _private()
    key = pk("k", private=secret)
    store.add_keys(ALICE, [key])
    found_public = False
    with _engine(store).connect() as conn:
        for table in _Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for column, value in zip(table.columns, row, strict=True):
                    if isinstance(column.type, LargeBinary | String | Text) and value is not None:
                        raw = value if isinstance(value, bytes) else str(value).encode()
                        assert secret not in raw and secret[-32:] not in raw, f"{table.name}.{column.name}"
                        found_public |= key.public_data in raw
    assert found_public  # the scan did look at the stored data


def test_sqlite_file_holds_no_private_key_bytes(tmp_path: Path, sealer: Sealer) -> None:
    """The raw SQLite file (and its WAL) never contains the PKCS#8 DER nor a
    piece of it, while the public certificate is there in clear."""
    ca = make_ca("CA")
    user = make_user(ALICE, issuer=ca, key=ec.generate_private_key(ec.SECP256R1()))
    parsed = parse_key_file(key_pem(user.key) + cert_pem(user.cert), None, now=VALID_AT)
    secret = pkcs8_der(user.key)
    private_scalar = user.key.private_numbers().private_value.to_bytes(32, "big")

    def db_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in sorted(tmp_path.iterdir()) if p.name.startswith("secmail.db"))

    store = SQLKeyStore(f"sqlite:///{tmp_path / 'secmail.db'}", sealer)
    store.add_keys(ALICE, parsed)
    for phase in ("open", "closed"):
        raw = db_bytes()
        assert parsed[0].public_data in raw, phase
        assert secret not in raw, phase
        assert secret[20:52] not in raw, phase
        assert private_scalar not in raw, phase
        store.close()


def test_sqlite_settings_and_file_mode(tmp_path: Path, sealer: Sealer) -> None:
    path = tmp_path / "data" / "secmail.db"
    store = SQLKeyStore(f"sqlite:///{path}", sealer)
    try:
        store.add_keys(ALICE, [pk("k")])
        with _engine(store).connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000
    finally:
        store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A plain sqlite3 client reads the same database.
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM keys").fetchone() == (1,)


def test_default_database_in_data_dir(tmp_path: Path, sealer: Sealer) -> None:
    data_dir = tmp_path / "state"
    with SQLKeyStore(None, sealer, data_dir=data_dir) as store:
        store.add_keys(ALICE, [pk("k")])
    assert (data_dir / "secmail.db").is_file()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    with pytest.raises(SecmailError):
        SQLKeyStore(None, sealer)


# --- schema --------------------------------------------------------------------------


def test_schema_revision_stamped_and_checked(make_store: MakeStore) -> None:
    store = make_store()
    with _engine(store).begin() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            head_revision()
        ]
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match=r"9999.*does not know"):
        make_store()
    with pytest.raises(SchemaError, match="does not know"):
        make_store(auto_upgrade=False)


def test_unreachable_database_is_a_store_error(sealer: Sealer) -> None:
    with pytest.raises(StoreError):
        SQLKeyStore("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2", sealer)
    with pytest.raises(StoreError):
        SQLKeyStore("not a url", sealer)


# --- trust and CRLs ------------------------------------------------------------------


def _trust(anchor_id: str, *, anchor: bool, bundle: str = "académie") -> TrustEntry:
    return TrustEntry(
        anchor_id=anchor_id,
        bundle=bundle,
        scheme=Scheme.SMIME,
        data=b"der:" + anchor_id.encode(),
        is_anchor=anchor,
        subject=f"CN={anchor_id}",
        not_before=NOT_BEFORE,
        not_after=None,
    )


def test_trust_entries(store: SQLKeyStore) -> None:
    entries = [
        _trust("root", anchor=True),
        _trust("inter", anchor=False),
        _trust("other", anchor=True, bundle="b2"),
    ]
    assert store.add_trust(entries) == entries
    assert {t.anchor_id for t in store.list_trust()} == {"root", "inter", "other"}
    assert [t.anchor_id for t in store.list_trust("b2")] == ["other"]
    listed = {t.anchor_id: t for t in store.list_trust()}
    assert listed["root"] == entries[0]
    # Re-importing an anchor in another bundle moves it; anchor_id is unique.
    store.add_trust([_trust("root", anchor=True, bundle="b2")])
    assert {t.anchor_id for t in store.list_trust("b2")} == {"root", "other"}
    assert len(store.list_trust()) == 3
    store.remove_trust("inter")
    with pytest.raises(NotFoundError):
        store.remove_trust("inter")
    assert {t.anchor_id for t in store.list_trust()} == {"root", "other"}


def _crl(issuer: str, day: int, data: bytes | None = None) -> StoredCRL:
    this_update = datetime(2026, 5, day, tzinfo=UTC)
    return StoredCRL(
        issuer=issuer,
        data=data or f"crl {issuer} {day}".encode(),
        this_update=this_update,
        next_update=this_update + timedelta(days=7) if day % 2 else None,
    )


def test_crls_keep_newest(store: SQLKeyStore) -> None:
    store.add_crl(_crl("CN=A", 10))
    store.add_crl(_crl("CN=B", 3))
    store.add_crl(_crl("CN=A", 5))  # older: ignored
    assert {c.issuer: c.this_update.day for c in store.list_crls()} == {"CN=A": 10, "CN=B": 3}
    store.add_crl(_crl("CN=A", 11))
    [a, b] = store.list_crls()
    assert (a.issuer, a.this_update.day, a.next_update) == ("CN=A", 11, a.this_update + timedelta(days=7))
    assert b.next_update == _crl("CN=B", 3).next_update
    assert a.data == b"crl CN=A 11"


def test_stored_key_equality_survives_round_trip(store: SQLKeyStore) -> None:
    [added] = store.add_keys(ALICE, [pk("k", private=_private())])
    [listed] = store.list_keys(ALICE)
    assert isinstance(listed, StoredKey)
    assert listed == added
