"""The private keys a process holds between Sign/Decrypt requests
(``Secmail._held_keys``, ``Settings.key_cache_seconds``) and the store's
key stamp that keeps them current, on SQLite and PostgreSQL.

What must hold: the held keys sign exactly as freshly read ones; a change
made through this process or through another instance on the same store
(import, re-import, delete) is seen at once; the holding time bounds how
long unsealed keys stay in memory (also when the stamp says nothing
changed); 0 turns holding off; validity dates are checked at each
request's time; every use is audited by key id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from keystore_support import CallCounter, Clock
from testpki import PKI, Identity, end_entity, message

import secmail.service.app as app_module
from secmail.errors import KeyNotFoundError
from secmail.keystore.api import StoredKey
from secmail.keystore.sql import SQLAuditSink, SQLKeyStore, StoreError
from secmail.message import SMIMESigningKey
from secmail.service.app import Secmail, Settings
from secmail.smime.sign import sign_content
from secmail.verdict import Scheme

MakeStore = Callable[..., SQLKeyStore]
ALICE = "alice@ac-besancon.fr"
BOB = "bob@ac-besancon.fr"
T = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def bob(pki: PKI) -> Identity:
    return end_entity(pki.intermediate, BOB)


@pytest.fixture
def counting(store: SQLKeyStore, monkeypatch: pytest.MonkeyPatch) -> CallCounter:
    """Counts the store's private-key reads and stamp reads."""
    return CallCounter(store, monkeypatch, reads="private_keys", stamps="private_keys_stamp")


def _app(store: SQLKeyStore, seconds: float = 2.0) -> Secmail:
    return Secmail(store, Settings(key_cache_seconds=seconds), audit=store.audit_sink())


def _import(app: Secmail, ident: Identity, user: str = ALICE) -> str:
    (stored,) = [k for k in app.import_key(user, ident.p12(b"pw"), "pw") if k.has_private_key]
    return stored.key_id


def _smime_key(app: Secmail, user: str = ALICE, at: datetime = T) -> SMIMESigningKey:
    key = app.signing_key(user, Scheme.SMIME, at)
    assert isinstance(key, SMIMESigningKey)
    return key


def _sign(app: Secmail, user: str = ALICE) -> bytes:
    return app.sign(user, message(sender=user), Scheme.SMIME, opaque=False, header_protection=False)


def _key_id(ident: Identity) -> str:
    return ident.cert.fingerprint(hashes.SHA256()).hex()


# --- the store's stamp -------------------------------------------------------------


def test_stamp_changes_with_every_key_change_and_only_then(
    make_store: MakeStore, alice: Identity, bob: Identity
) -> None:
    store = make_store()
    app = _app(store)
    empty = store.private_keys_stamp(ALICE, Scheme.SMIME)
    assert empty == store.private_keys_stamp(ALICE, Scheme.SMIME)
    _import(app, alice)
    imported = store.private_keys_stamp(ALICE, Scheme.SMIME)
    assert imported != empty
    assert imported == store.private_keys_stamp(ALICE, Scheme.SMIME)
    # Other users, other schemes, certificates without private keys: no change.
    _import(app, bob, BOB)
    app.import_key(ALICE, bob.cert_pem, None)
    assert store.private_keys_stamp(ALICE, Scheme.SMIME) == imported
    assert store.private_keys_stamp(ALICE, Scheme.OPENPGP) == ()
    # Re-wrapping the data keys leaves the secrets (and the stamp) as they are.
    store.rewrap_data_keys()
    assert store.private_keys_stamp(ALICE, Scheme.SMIME) == imported
    # A re-import, through another store object on the same database.
    _import(_app(make_store()), alice)
    reimported = store.private_keys_stamp(ALICE, Scheme.SMIME)
    assert reimported not in (imported, empty)
    app.delete_key(ALICE, _key_id(alice))
    assert store.private_keys_stamp(ALICE, Scheme.SMIME) == empty


def test_stamp_failure_is_a_store_error(store: SQLKeyStore) -> None:
    with store._engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE sealed_secrets")
    with pytest.raises(StoreError, match="key store database failed"):
        store.private_keys_stamp(ALICE, Scheme.SMIME)


# --- holding keys ------------------------------------------------------------------


def test_held_keys_sign_exactly_as_freshly_read_ones(
    store: SQLKeyStore, counting: CallCounter, clock: Clock, alice: Identity
) -> None:
    held_app, fresh_app = _app(store), _app(store, 0)
    _import(held_app, alice)
    first = _smime_key(held_app)
    again = _smime_key(held_app)
    fresh = _smime_key(fresh_app)
    assert counting.reads == 2  # the held app read once, the other every time
    assert again is first and fresh is not first
    content = b"Content-Type: text/plain\r\n\r\nbonjour\r\n"
    # RSA PKCS#1 v1.5 is deterministic: the same key signs the same bytes.
    signed = [
        sign_content(content, private_key=k.private_key, cert=k.cert, chain=k.chain, signing_time=T)
        for k in (first, again, fresh)
    ]
    assert signed[0] == signed[1] == signed[2]
    assert (first.cert, first.chain, first.addresses) == (fresh.cert, fresh.chain, fresh.addresses)


def test_a_held_key_is_checked_against_the_stamp_not_reread(
    store: SQLKeyStore, counting: CallCounter, clock: Clock, alice: Identity
) -> None:
    app = _app(store)
    _import(app, alice)
    for _ in range(3):
        _sign(app)
    assert (counting.reads, counting.stamps) == (1, 3)
    # Every use is still audited, by key id.
    sink = app.audit
    assert isinstance(sink, SQLAuditSink)
    signs = [(e.outcome.value, e.key_id) for e in sink.query() if e.action.value == "sign"]
    assert signs == [("ok", _key_id(alice))] * 3


def test_holding_time_expiry_reads_the_store_again(
    store: SQLKeyStore, counting: CallCounter, clock: Clock, alice: Identity
) -> None:
    app = _app(store, 2.0)
    _import(app, alice)
    first = _smime_key(app)
    clock.now += 1.9
    assert _smime_key(app) is first and counting.reads == 1
    clock.now += 0.2  # 2.1 s after the read
    assert _smime_key(app) is not first and counting.reads == 2
    assert app._key_cache  # held again, from the new read


def test_zero_disables_holding(
    store: SQLKeyStore, counting: CallCounter, clock: Clock, alice: Identity
) -> None:
    app = _app(store, 0)
    _import(app, alice)
    keys = [_smime_key(app) for _ in range(3)]
    assert counting.reads == 3 and counting.stamps == 0
    assert len({id(k) for k in keys}) == 3
    assert not app._key_cache


def test_local_delete_drops_held_keys_at_once(
    store: SQLKeyStore, clock: Clock, monkeypatch: pytest.MonkeyPatch, alice: Identity
) -> None:
    app = _app(store)
    _import(app, alice)
    _sign(app)
    # Even with a stamp that never changes, the local delete takes effect.
    monkeypatch.setattr(store, "private_keys_stamp", lambda user, scheme: "frozen")
    _sign(app)
    app.delete_key(ALICE, _key_id(alice))
    assert not app._key_cache
    with pytest.raises(KeyNotFoundError):
        _sign(app)


def test_local_import_replaces_held_keys_at_once(
    store: SQLKeyStore, counting: CallCounter, clock: Clock, pki: PKI, alice: Identity
) -> None:
    app = _app(store)
    _import(app, alice)
    assert app.signing_key(ALICE, Scheme.SMIME, T) is _smime_key(app)
    newer = end_entity(pki.intermediate, ALICE)
    clock.now += 0.1
    _import(app, newer)
    assert _smime_key(app).cert == newer.cert  # the newest key signs


def test_delete_through_another_instance_is_seen_at_once(
    make_store: MakeStore, clock: Clock, alice: Identity
) -> None:
    a, b = _app(make_store()), _app(make_store())
    _import(a, alice)
    _sign(a)
    _sign(b)
    b.delete_key(ALICE, _key_id(alice))
    assert a._key_cache  # still held by A, but no longer current
    with pytest.raises(KeyNotFoundError):
        _sign(a)


def test_import_through_another_instance_is_seen_at_once(
    make_store: MakeStore, clock: Clock, pki: PKI, alice: Identity
) -> None:
    a, b = _app(make_store()), _app(make_store())
    _import(a, alice)
    assert _smime_key(a).cert == alice.cert
    newer = end_entity(pki.intermediate, ALICE)
    _import(b, newer)
    assert _smime_key(a).cert == newer.cert


def test_holding_time_bounds_a_remote_delete_even_without_the_stamp(
    make_store: MakeStore, clock: Clock, monkeypatch: pytest.MonkeyPatch, alice: Identity
) -> None:
    store_a = make_store()
    a, b = _app(store_a, 2.0), _app(make_store())
    _import(a, alice)
    monkeypatch.setattr(store_a, "private_keys_stamp", lambda user, scheme: "frozen")
    _sign(a)
    b.delete_key(ALICE, _key_id(alice))
    clock.now += 1.0
    _sign(a)  # held, and the (disabled) stamp cannot tell
    clock.now += 1.5
    with pytest.raises(KeyNotFoundError):
        _sign(a)


def test_validity_is_checked_at_the_request_time(
    store: SQLKeyStore, counting: CallCounter, clock: Clock, pki: PKI
) -> None:
    now = datetime.now(UTC)  # the import judges the certificate at its own time
    short = end_entity(
        pki.intermediate, ALICE, not_before=now - timedelta(days=1), not_after=now + timedelta(days=1)
    )
    app = _app(store)
    _import(app, short)
    assert _smime_key(app, at=now).cert == short.cert
    for at in (now + timedelta(days=2), now - timedelta(days=2)):
        with pytest.raises(KeyNotFoundError):
            _smime_key(app, at=at)
    assert counting.reads == 1  # from the held keys, judged at each time


def test_decryption_uses_and_audits_held_keys(
    store: SQLKeyStore, counting: CallCounter, clock: Clock, alice: Identity
) -> None:
    app = _app(store)
    key_id = _import(app, alice)
    assert app._smime_private_keys(ALICE) == app._smime_private_keys(ALICE)
    held = app._smime_private_keys(ALICE)
    assert held[0][0] == alice.cert and held[0][1] is _smime_key(app).private_key
    assert counting.reads == 1
    encrypted = app.encrypt(
        ALICE, message(to=ALICE), Scheme.SMIME, [ALICE], sign=False, header_protection=False
    )
    for _ in range(2):
        assert app.decrypt(ALICE, encrypted, None).verdict.lock
    sink = app.audit
    assert isinstance(sink, SQLAuditSink)
    assert [e.key_id for e in sink.query() if e.action.value == "decrypt"] == [key_id] * 2


def test_a_read_that_raced_with_a_local_change_is_not_kept(
    store: SQLKeyStore, clock: Clock, monkeypatch: pytest.MonkeyPatch, alice: Identity
) -> None:
    app = _app(store)
    _import(app, alice)
    read = store.private_keys

    def racing(user: str, scheme: Scheme) -> list[tuple[StoredKey, bytes]]:
        found = read(user, scheme)
        app._keys_changed(user)  # a delete or import through this process, meanwhile
        return found

    monkeypatch.setattr(store, "private_keys", racing)
    _smime_key(app)  # used for this request ...
    assert not app._key_cache  # ... but not kept


def test_the_cache_is_bounded_and_drops_expired_entries(
    store: SQLKeyStore, clock: Clock, monkeypatch: pytest.MonkeyPatch, pki: PKI
) -> None:
    monkeypatch.setattr(app_module, "_KEY_CACHE_MAX", 2)
    app = _app(store)
    users = [f"user{n}@ac-besancon.fr" for n in range(3)]
    for user in users:
        _import(app, end_entity(pki.intermediate, user), user)
    for user in users:
        _smime_key(app, user)
        assert len(app._key_cache) <= 2
    assert [u for u, _ in app._key_cache] == users[1:]  # the oldest load went first
    clock.now += 5
    _smime_key(app, users[0])
    assert [u for u, _ in app._key_cache] == users[:1]  # the expired ones are gone


def test_held_keys_never_show_private_material(store: SQLKeyStore, clock: Clock, alice: Identity) -> None:
    app = _app(store)
    _import(app, alice)
    _smime_key(app)
    (entry,) = app._key_cache.values()
    shown = repr(entry)
    assert "_HeldKey(key_id=" in shown and "secret" not in shown.lower()


def test_held_keys_are_dropped_in_an_idle_process(store: SQLKeyStore, alice: Identity) -> None:
    """No request after a Sign: the sweeper still drops the unsealed keys
    once they are older than key_cache_seconds (real time here)."""
    app = _app(store, 0.2)
    _import(app, alice)
    _smime_key(app, at=datetime.now(UTC))
    assert app._key_cache
    deadline = time.monotonic() + 5
    while app._key_cache and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not app._key_cache
    assert app._key_sweeper is None  # the sweeper ends with the last held key
