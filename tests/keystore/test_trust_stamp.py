"""The trust store's stamp (``KeyStore.trust_stamp``) and the per-process
trust snapshot it keeps current (``Secmail._trust``), on SQLite and
PostgreSQL.

What must hold: every change to the trust store (a bundle imported,
re-scoped or removed, one entry removed, a CRL imported or replaced) changes
the stamp and nothing else does; a CA imported or removed through another
instance on the same store applies to that instance's very next message,
whatever its snapshot's age; the snapshot is not reloaded while the stamp
holds, and ``trust_cache_seconds`` still bounds its age.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from keystore_support import Clock
from testpki import PKI, Identity, message

from secmail.audit import AuditAction, AuditEvent, AuditOutcome
from secmail.keystore.api import TrustEntry
from secmail.keystore.seal import Sealer
from secmail.keystore.sql import SQLKeyStore, StoreError
from secmail.service.app import Secmail, Settings
from secmail.verdict import Banner, Reason, Scheme

MakeStore = Callable[..., SQLKeyStore]
ALICE = "alice@ac-besancon.fr"
BOB = "bob@ac-besancon.fr"


def _crl(issuer: Identity, revoked: x509.Certificate | None, this_update: datetime, number: int = 1) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(this_update)
        .next_update(this_update + timedelta(days=7))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    if revoked is not None:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(revoked.serial_number)
            .revocation_date(this_update)
            .build()
        )
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(Encoding.DER)  # type: ignore[arg-type]


def _count_loads(store: SQLKeyStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the trust store's full reads (in the returned one-item list)."""
    loads = [0]
    list_trust = store.list_trust

    def counting(bundle: str | None = None) -> list[TrustEntry]:
        loads[0] += 1
        return list_trust(bundle)

    monkeypatch.setattr(store, "list_trust", counting)
    return loads


def _app(store: SQLKeyStore, seconds: float = 30.0) -> Secmail:
    return Secmail(store, Settings(trust_cache_seconds=seconds), audit=store.audit_sink())


def test_every_trust_change_changes_the_stamp(make_store: MakeStore, pki: PKI, alice: Identity) -> None:
    store = make_store()
    app = _app(store)
    seen = [store.trust_stamp()]

    def changed() -> None:
        stamp = store.trust_stamp()
        assert stamp not in seen
        assert store.trust_stamp() == stamp  # stable while nothing changes
        seen.append(stamp)

    app.import_trust("academie", pki.bundle_pem)
    changed()
    app.import_trust("academie", pki.bundle_pem, domains=["ac-besancon.fr"])  # same rows, new scope
    changed()
    app.import_trust("other", pki.other_root.cert.public_bytes(Encoding.PEM))
    changed()
    now = datetime.now(UTC).replace(microsecond=0)
    app.import_crl(_crl(pki.intermediate, None, now - timedelta(hours=2)))
    changed()
    app.import_crl(_crl(pki.intermediate, alice.cert, now - timedelta(hours=1), 2))  # replaces it
    changed()
    intermediate = next(e for e in app.list_trust("academie") if not e.is_anchor)
    app.remove_trust(intermediate.anchor_id)
    changed()
    app.remove_trust_bundle("other")
    changed()
    app.import_trust("other", pki.other_root.cert.public_bytes(Encoding.PEM))  # the same row again
    changed()


def test_a_ca_imported_elsewhere_applies_to_the_next_message(
    make_store: MakeStore, clock: Clock, pki: PKI, alice: Identity
) -> None:
    a, b = _app(make_store()), _app(make_store())
    a.import_key(ALICE, alice.p12(b"pw"), "pw")
    signed = a.sign(ALICE, message(), Scheme.SMIME, opaque=False, header_protection=False)
    before = b.verify(BOB, signed, None).verdict
    assert before.banner is Banner.YELLOW and Reason.UNTRUSTED_CHAIN in before.reasons

    a.import_trust("academie", pki.bundle_pem)  # through the other instance, same second
    assert b.verify(BOB, signed, None).verdict.banner is Banner.GREEN

    root = next(e for e in a.list_trust("academie") if e.is_anchor)
    a.remove_trust(root.anchor_id)
    after = b.verify(BOB, signed, None).verdict
    assert after.banner is Banner.YELLOW and Reason.UNTRUSTED_CHAIN in after.reasons


def test_a_revoking_crl_imported_elsewhere_applies_to_the_next_message(
    make_store: MakeStore, clock: Clock, pki: PKI, alice: Identity
) -> None:
    a, b = _app(make_store()), _app(make_store())
    a.import_trust("academie", pki.bundle_pem)
    a.import_key(ALICE, alice.p12(b"pw"), "pw")
    signed = a.sign(ALICE, message(), Scheme.SMIME, opaque=False, header_protection=False)
    assert b.verify(BOB, signed, None).verdict.banner is Banner.GREEN
    now = datetime.now(UTC).replace(microsecond=0)
    a.import_crl(_crl(pki.intermediate, alice.cert, now - timedelta(minutes=5)))
    verdict = b.verify(BOB, signed, None).verdict
    assert verdict.banner is Banner.RED and Reason.CERT_REVOKED in verdict.reasons


def test_the_snapshot_is_kept_while_the_stamp_holds(
    make_store: MakeStore, clock: Clock, monkeypatch: pytest.MonkeyPatch, pki: PKI
) -> None:
    store = make_store()
    app = _app(store, seconds=30.0)
    app.import_trust("academie", pki.bundle_pem)
    loads = _count_loads(store, monkeypatch)
    first = app.trust_context(BOB)
    for _ in range(5):
        clock.now += 1.0
        assert app.trust_context(BOB).anchors == first.anchors
    assert loads[0] == 1
    clock.now += 30.0  # past trust_cache_seconds: reloaded even with the same stamp
    app.trust_context(BOB)
    assert loads[0] == 2


def test_zero_reloads_every_time(
    make_store: MakeStore, clock: Clock, monkeypatch: pytest.MonkeyPatch, pki: PKI
) -> None:
    store = make_store()
    app = _app(store, seconds=0)
    app.import_trust("academie", pki.bundle_pem)
    loads = _count_loads(store, monkeypatch)
    for _ in range(3):
        app.trust_context(BOB)
    assert loads[0] == 3


def test_an_update_stamped_older_than_another_row_still_changes_the_stamp(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch, pki: PKI, alice: Identity
) -> None:
    """Two writers (or replicas with different clocks) may commit a row
    whose updated_at is older than another row's: the stamp must still
    change (a newest-timestamp aggregate would not)."""
    import secmail.keystore.sql as sql_module

    store = make_store()
    app = _app(store)
    app.import_trust("academie", pki.bundle_pem)
    app.import_trust("other", pki.other_root.cert.public_bytes(Encoding.PEM))
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    clock = [base]

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return clock[0]

    monkeypatch.setattr(sql_module, "datetime", Frozen)
    other_root = pki.other_root
    clock[0] = base + timedelta(seconds=10)
    app.import_crl(_crl(other_root, None, base, 1))  # the newest updated_at from now on
    clock[0] = base + timedelta(seconds=5)
    app.import_crl(_crl(pki.intermediate, None, base, 1))
    before = store.trust_stamp()
    clock[0] = base + timedelta(seconds=9)  # older than the other CRL's row
    app.import_crl(_crl(pki.intermediate, alice.cert, base + timedelta(hours=1), 2))
    assert store.trust_stamp() != before


def test_an_unreachable_database_is_a_store_error_on_the_direct_statements(
    tmp_path: Path, sealer: Sealer
) -> None:
    """The statements run on every call (stamps, audit insert) bypass
    SQLAlchemy's Connection: a database that cannot be opened must still be
    the StoreError the service maps to a clean status, not a driver error."""
    folder = tmp_path / "db"
    folder.mkdir()
    store = SQLKeyStore(f"sqlite:///{folder / 'secmail.db'}", sealer)
    try:
        store._engine.dispose()
        shutil.rmtree(folder)
        with pytest.raises(StoreError):
            store.trust_stamp()
        with pytest.raises(StoreError):
            store.private_keys_stamp(ALICE, Scheme.SMIME)
        with pytest.raises(StoreError):
            store.keys_stamps([ALICE], Scheme.OPENPGP)
        with pytest.raises(StoreError):
            store.audit_sink().record(AuditEvent(AuditAction.SIGN, AuditOutcome.OK, "test", user=ALICE))
    finally:
        store.close()
