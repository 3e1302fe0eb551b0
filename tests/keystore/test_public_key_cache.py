"""The public keys a process reuses between requests (``Secmail._public``,
``Settings.public_key_cache_seconds``), the store's per-owner key stamps
that keep them current (``KeyStore.keys_stamps``), and the OpenPGP private
keys Decrypt now takes from the held keys; on SQLite and PostgreSQL.

What must hold: cached lookups answer exactly as the store does; an import
or delete made through this process or through another instance on the
same store is seen at once; the holding time bounds how long a change the
stamp cannot see goes unseen; 0 turns the cache off; the cache is bounded;
validity is judged at each request's time; every private-key use is
audited by key id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from keystore_support import CallCounter, Clock
from testpki import message

import secmail.service.app as app_module
from secmail.errors import RecipientKeyMissingError
from secmail.keystore.api import EVERYONE, StoredKey
from secmail.keystore.sql import SQLAuditSink, SQLKeyStore, StoreError
from secmail.pgp import _backend
from secmail.pgp.keys import HeldTSK
from secmail.service.app import Secmail, Settings
from secmail.verdict import ProcessedMessage, Scheme, Verdict

MakeStore = Callable[..., SQLKeyStore]
ALICE = "alice@ac-besancon.fr"
BOB = "bob@ac-besancon.fr"
CAROL = "carol@ac-besancon.fr"
PGP = Scheme.OPENPGP


@pytest.fixture(scope="module")
def alice_tsk() -> bytes:
    return _backend.generate_tsk([f"Alice <{ALICE}>"])


@pytest.fixture(scope="module")
def bob_tsk() -> bytes:
    return _backend.generate_tsk([f"Bob <{BOB}>"])


@pytest.fixture
def counting(store: SQLKeyStore, monkeypatch: pytest.MonkeyPatch) -> CallCounter:
    """Counts the store's public-key reads, stamp reads and private-key reads."""
    return CallCounter(
        store,
        monkeypatch,
        lists="list_keys",
        finds="find_public",
        stamps="keys_stamps",
        private="private_keys",
        find_stamps="find_public_stamp",
    )


def _app(store: SQLKeyStore, seconds: float = 30.0) -> Secmail:
    return Secmail(store, Settings(public_key_cache_seconds=seconds), audit=store.audit_sink())


def _fpr(tsk: bytes) -> str:
    return _backend.cert_view(_backend.public_cert(tsk)).fingerprint


def _setup(app: Secmail, alice_tsk: bytes, bob_tsk: bytes, *, bob_knows_alice: bool = True) -> None:
    """Alice and Bob hold their key pairs; Bob's address book has Alice's
    certificate (and Alice's has Bob's)."""
    app.import_key(ALICE, alice_tsk, None)
    app.import_key(BOB, bob_tsk, None)
    app.import_key(ALICE, _backend.public_cert(bob_tsk), None)
    if bob_knows_alice:
        app.import_key(BOB, _backend.public_cert(alice_tsk), None)


def _signed(app: Secmail) -> bytes:
    return app.sign(ALICE, message(sender=ALICE, to=BOB), PGP, opaque=False, header_protection=False)


def _verdict(result: ProcessedMessage) -> Verdict:
    # The same request at another time differs only by its validation time.
    return dataclasses.replace(result.verdict, validation_time=datetime(2000, 1, 1, tzinfo=UTC))


def _banner(app: Secmail, signed: bytes) -> str:
    return app.verify(BOB, signed, None).verdict.banner.name


# --- the store's stamps ------------------------------------------------------------


def test_stamps_change_with_every_key_change_of_the_owner_and_only_then(
    make_store: MakeStore, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    store = make_store()
    app = _app(store)
    empty = store.keys_stamps([ALICE, EVERYONE], PGP)
    assert empty == {ALICE: (), EVERYONE: ()}
    app.import_key(ALICE, alice_tsk, None)
    imported = store.keys_stamps([ALICE, EVERYONE], PGP)
    assert imported[ALICE] != empty[ALICE] and imported[EVERYONE] == ()
    assert imported == store.keys_stamps([EVERYONE, ALICE, ALICE], PGP)
    # Other owners, other schemes: no change.
    app.import_key(BOB, bob_tsk, None)
    assert store.keys_stamps([ALICE], PGP)[ALICE] == imported[ALICE]
    assert store.keys_stamps([ALICE], Scheme.SMIME) == {ALICE: ()}
    # A certificate added to the owner's address book is a change.
    app.import_key(ALICE, _backend.public_cert(bob_tsk), None)
    with_bob = store.keys_stamps([ALICE], PGP)[ALICE]
    assert with_bob != imported[ALICE]
    # A re-import, through another store object on the same database.
    _app(make_store()).import_key(ALICE, _backend.public_cert(bob_tsk), None)
    reimported = store.keys_stamps([ALICE], PGP)[ALICE]
    assert reimported != with_bob
    app.delete_key(ALICE, _fpr(bob_tsk))
    app.delete_key(ALICE, _fpr(alice_tsk))
    assert store.keys_stamps([ALICE], PGP)[ALICE] == ()


def test_stamps_of_many_owners_take_several_statements(make_store: MakeStore, bob_tsk: bytes) -> None:
    store = make_store()
    app = _app(store)
    owners = [f"user{n}@ac-besancon.fr" for n in range(19)]
    for owner in owners[::3]:
        app.import_key(owner, _backend.public_cert(bob_tsk), None)
    together = store.keys_stamps(owners, PGP)
    assert list(together) == owners
    assert together == {o: store.keys_stamps([o], PGP)[o] for o in owners}
    assert [o for o in owners if together[o]] == owners[::3]


def test_stamp_failure_is_a_store_error(store: SQLKeyStore) -> None:
    with store._engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE keys RENAME TO keys_gone")
    with pytest.raises(StoreError, match="key store database failed"):
        store.keys_stamps([ALICE], PGP)


# --- same answers as the store -----------------------------------------------------


def test_cached_lookups_answer_as_the_store_does(
    store: SQLKeyStore, clock: Clock, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    cached, uncached = _app(store), _app(store, 0)
    _setup(cached, alice_tsk, bob_tsk)
    cached.import_key(EVERYONE, _backend.public_cert(alice_tsk), None)
    signed = _signed(cached)
    for _ in range(2):  # the second time from the cache
        assert _verdict(cached.verify(BOB, signed, None)) == _verdict(uncached.verify(BOB, signed, None))
        assert cached.verify(BOB, signed, None).verdict.banner.name == "GREEN"
        view = cached._public.view(PGP, 30.0, [ALICE, BOB, CAROL, EVERYONE])
        for owner in (ALICE, BOB, CAROL, EVERYONE):
            assert list(view.owned(owner)) == [k for k in store.list_keys(owner) if k.scheme is PGP]
        now = datetime.now(UTC)
        assert cached.recipient_keys(ALICE, PGP, [BOB, ALICE], now) == uncached.recipient_keys(
            ALICE, PGP, [BOB, ALICE], now
        )


def test_a_verification_reads_stamps_not_keys(
    store: SQLKeyStore, counting: CallCounter, clock: Clock, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    app = _app(store)
    _setup(app, alice_tsk, bob_tsk)
    signed = _signed(app)
    counting.lists = counting.stamps = 0
    for _ in range(3):
        assert _banner(app, signed) == "GREEN"
    # Bob's and everyone's keys read once; one stamp statement per request.
    assert (counting.lists, counting.stamps) == (2, 3)


def test_recipient_lookups_read_their_own_stamps_not_keys(
    store: SQLKeyStore, counting: CallCounter, clock: Clock, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    app = _app(store)
    _setup(app, alice_tsk, bob_tsk)
    counting.finds = counting.stamps = counting.find_stamps = 0
    for _ in range(3):
        app.encrypt(ALICE, message(sender=ALICE, to=BOB), PGP, [], sign=False, header_protection=False)
    # Bob and Alice (the sender) read once; one address stamp per recipient
    # and request; no owner stamp (it would cover every key of everyone).
    assert (counting.finds, counting.find_stamps, counting.stamps) == (2, 6, 0)


def test_a_recipient_stamp_does_not_grow_with_everyone_keys(
    store: SQLKeyStore, clock: Clock, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    app = _app(store)
    _setup(app, alice_tsk, bob_tsk)
    before = store.find_public_stamp(BOB, PGP, for_user=ALICE)
    for n in range(5):
        other = _backend.generate_tsk([f"Someone <someone{n}@ac-besancon.fr>"])
        app.import_key(EVERYONE, _backend.public_cert(other), None)
    assert store.find_public_stamp(BOB, PGP, for_user=ALICE) == before
    # A key for Bob's address imported for everyone is part of the lookup.
    bob_again = _backend.generate_tsk([f"Bob <{BOB}>"])
    app.import_key(EVERYONE, _backend.public_cert(bob_again), None)
    assert store.find_public_stamp(BOB, PGP, for_user=ALICE) != before


def test_a_recipient_key_deleted_elsewhere_is_not_used(
    make_store: MakeStore, clock: Clock, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    a, b = _app(make_store()), _app(make_store())
    _setup(a, alice_tsk, bob_tsk)
    now = datetime.now(UTC)
    assert a.recipient_keys(ALICE, PGP, [BOB], now).pgp
    for key in [k for k in b.list_keys(ALICE) if k.scheme is PGP and BOB in k.addresses]:
        b.delete_key(ALICE, key.key_id)
    for key in [k for k in b.list_keys(BOB) if k.scheme is PGP]:
        b.delete_key(BOB, key.key_id)
    with pytest.raises(RecipientKeyMissingError):
        a.recipient_keys(ALICE, PGP, [BOB], now)


# --- changes are seen at once --------------------------------------------------------


def test_delete_through_another_instance_is_seen_at_once(
    make_store: MakeStore, clock: Clock, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    a, b = _app(make_store()), _app(make_store())
    _setup(a, alice_tsk, bob_tsk)
    signed = _signed(a)
    assert _banner(a, signed) == "GREEN"
    assert _banner(b, signed) == "GREEN"
    a.encrypt(ALICE, message(sender=ALICE, to=BOB), PGP, [], sign=False, header_protection=False)
    # Bob removes Alice's certificate from his address book through B:
    # through A, her signature is at once only the sender's own key's.
    b.delete_key(BOB, _fpr(alice_tsk))
    assert a._public._entries  # still held by A, but no longer current
    assert _banner(a, signed) == "YELLOW"
    # Bob's key goes from his keys and from Alice's address book, through
    # B: A can no longer encrypt to him.
    b.delete_key(BOB, _fpr(bob_tsk))
    a.encrypt(ALICE, message(sender=ALICE, to=BOB), PGP, [], sign=False, header_protection=False)
    b.delete_key(ALICE, _fpr(bob_tsk))
    with pytest.raises(RecipientKeyMissingError):
        a.encrypt(ALICE, message(sender=ALICE, to=BOB), PGP, [], sign=False, header_protection=False)


def test_import_through_another_instance_is_seen_at_once(
    make_store: MakeStore, clock: Clock, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    a, b = _app(make_store()), _app(make_store())
    _setup(a, alice_tsk, bob_tsk, bob_knows_alice=False)
    signed = _signed(a)
    assert _banner(a, signed) == "YELLOW"
    b.import_key(BOB, _backend.public_cert(alice_tsk), None)
    assert _banner(a, signed) == "GREEN"
    carol = _backend.generate_tsk([f"Carol <{CAROL}>"])
    with pytest.raises(RecipientKeyMissingError):
        a.encrypt(ALICE, message(sender=ALICE, to=CAROL), PGP, [], sign=False, header_protection=False)
    b.import_key(EVERYONE, _backend.public_cert(carol), None)
    a.encrypt(ALICE, message(sender=ALICE, to=CAROL), PGP, [], sign=False, header_protection=False)


def test_local_changes_drop_entries_at_once(
    store: SQLKeyStore, clock: Clock, monkeypatch: pytest.MonkeyPatch, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    app = _app(store)
    _setup(app, alice_tsk, bob_tsk)
    signed = _signed(app)
    assert _banner(app, signed) == "GREEN"
    # Even with stamps that never change, a change made here applies at once.
    monkeypatch.setattr(store, "keys_stamps", lambda owners, scheme: dict.fromkeys(owners, "frozen"))
    assert _banner(app, signed) == "GREEN"
    app.delete_key(BOB, _fpr(alice_tsk))
    assert not [slot for slot, e in app._public._entries.items() if BOB in e.owners]
    assert _banner(app, signed) == "YELLOW"
    app.import_key(BOB, _backend.public_cert(alice_tsk), None)
    assert _banner(app, signed) == "GREEN"


def test_holding_time_bounds_a_remote_change_even_without_the_stamp(
    make_store: MakeStore, clock: Clock, monkeypatch: pytest.MonkeyPatch, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    store_a = make_store()
    a, b = _app(store_a, 30.0), _app(make_store())
    _setup(a, alice_tsk, bob_tsk)
    signed = _signed(a)
    monkeypatch.setattr(store_a, "keys_stamps", lambda owners, scheme: dict.fromkeys(owners, "frozen"))
    assert _banner(a, signed) == "GREEN"
    b.delete_key(BOB, _fpr(alice_tsk))
    clock.now += 29.0
    assert _banner(a, signed) == "GREEN"  # held, and the (disabled) stamp cannot tell
    clock.now += 1.5
    assert _banner(a, signed) == "YELLOW"


def test_zero_disables_the_cache(
    store: SQLKeyStore, counting: CallCounter, clock: Clock, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    app = _app(store, 0)
    _setup(app, alice_tsk, bob_tsk)
    signed = _signed(app)
    counting.lists = counting.stamps = 0
    for _ in range(3):
        assert _banner(app, signed) == "GREEN"
    assert (counting.lists, counting.stamps) == (6, 0)
    assert not app._public._entries


def test_a_read_that_raced_with_a_local_change_is_not_kept(
    store: SQLKeyStore, clock: Clock, monkeypatch: pytest.MonkeyPatch, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    app = _app(store)
    _setup(app, alice_tsk, bob_tsk)
    signed = _signed(app)
    read = store.list_keys

    def racing(user: str) -> list[StoredKey]:
        found = read(user)
        app._keys_changed(user)  # a delete or import through this process, meanwhile
        return found

    monkeypatch.setattr(store, "list_keys", racing)
    assert _banner(app, signed) == "GREEN"  # used for this request ...
    assert not app._public._entries  # ... but not kept


def test_the_cache_is_bounded_and_drops_expired_entries(
    store: SQLKeyStore, clock: Clock, monkeypatch: pytest.MonkeyPatch, bob_tsk: bytes
) -> None:
    monkeypatch.setattr(app_module, "_PUBLIC_CACHE_MAX", 2)
    app = _app(store, 30.0)
    users = [f"user{n}@ac-besancon.fr" for n in range(3)]
    for user in users:
        app.import_key(user, _backend.public_cert(bob_tsk), None)
        app._public.view(PGP, 30.0, [user]).owned(user)
        assert len(app._public._entries) <= 2
    assert [slot[-1] for slot in app._public._entries] == users[1:]  # the oldest load went first
    clock.now += 31
    app._public.view(PGP, 30.0, [users[0]]).owned(users[0])
    assert [slot[-1] for slot in app._public._entries] == users[:1]  # the expired ones are gone


def test_validity_is_judged_at_the_request_time(store: SQLKeyStore, clock: Clock, alice_tsk: bytes) -> None:
    app = _app(store)
    app.import_key(ALICE, alice_tsk, None)
    short = _backend.generate_tsk([f"Carol <{CAROL}>"], validity_seconds=3600)
    app.import_key(ALICE, _backend.public_cert(short), None)
    (stored,) = store.find_public(CAROL, PGP, for_user=ALICE)
    now = datetime.now(UTC)
    assert app.recipient_keys(ALICE, PGP, [CAROL], now).pgp == (stored.public_data,)
    for at in (now + timedelta(hours=2), now - timedelta(days=1)):
        with pytest.raises(RecipientKeyMissingError):
            app.recipient_keys(ALICE, PGP, [CAROL], at)
    assert app.recipient_keys(ALICE, PGP, [CAROL], now + timedelta(minutes=30)).pgp


# --- OpenPGP decryption keys ---------------------------------------------------------


def test_openpgp_decryption_uses_and_audits_held_keys(
    store: SQLKeyStore, counting: CallCounter, clock: Clock, alice_tsk: bytes, bob_tsk: bytes
) -> None:
    app = _app(store)
    _setup(app, alice_tsk, bob_tsk)
    encrypted = app.encrypt(ALICE, message(sender=ALICE, to=BOB), PGP, [], sign=True, header_protection=False)
    counting.private = 0
    results = [app.decrypt(BOB, encrypted, None) for _ in range(3)]
    assert counting.private == 1  # read once, then held
    fresh = _app(store).decrypt(BOB, encrypted, None)
    assert all(r.display_message == fresh.display_message for r in results)
    assert all(_verdict(r) == _verdict(fresh) for r in results)
    assert fresh.verdict.lock and fresh.verdict.banner.name == "GREEN"
    (held,) = app._held_keys(BOB, PGP)
    assert isinstance(held.pgp_tsk(), HeldTSK) and held.pgp_tsk() is held.pgp_tsk()
    assert held.pgp_tsk() == dict((k.key_id, s) for k, s in store.private_keys(BOB, PGP))[_fpr(bob_tsk)]
    sink = app.audit
    assert isinstance(sink, SQLAuditSink)
    decrypts = [(e.outcome.value, e.key_id) for e in sink.query() if e.action.value == "decrypt"]
    assert decrypts[:3] == [("ok", _fpr(bob_tsk))] * 3
