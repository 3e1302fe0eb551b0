"""The audit log: the SQL sink (audit_events), the events the application
core records for every private-key use and key or trust change, and
`secmail audit`."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select
from testpki import PKI, Identity, end_entity, message

from secmail.audit import AuditAction, AuditEvent, AuditOutcome, current_caller
from secmail.errors import KeyNotFoundError, SecmailError
from secmail.keystore.sql import SQLAuditSink, SQLKeyStore, StoreError, _AuditRow
from secmail.service.app import Secmail
from secmail.verdict import Scheme

MakeStore = Callable[..., SQLKeyStore]
ALICE = "alice@ac-besancon.fr"
BOB = "bob@ac-besancon.fr"
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def _event(minutes: int, action: AuditAction = AuditAction.SIGN, **kw: str) -> AuditEvent:
    fields = {"caller": "webmail-1", "user": ALICE, "key_id": "k1"} | kw
    return AuditEvent(action, AuditOutcome.OK, at=T0 + timedelta(minutes=minutes), **fields)


def test_sql_sink_records_and_queries(store: SQLKeyStore) -> None:
    sink = store.audit_sink()
    events = [
        _event(0),
        _event(1, AuditAction.DECRYPT),
        _event(2, user=BOB),
        _event(3, AuditAction.KEY_DELETE, caller="x" * 600, key_id="k" * 200, reason="R" * 100),
    ]
    for e in events:
        sink.record(e)
    assert sink.query() == [
        *events[:3],
        AuditEvent(
            AuditAction.KEY_DELETE,
            AuditOutcome.OK,
            "x" * 512,
            user=ALICE,
            key_id="k" * 128,
            reason="R" * 64,
            at=events[3].at,
        ),
    ]
    assert sink.query(user=BOB) == [events[2]]
    assert sink.query(action=AuditAction.DECRYPT) == [events[1]]
    assert sink.query(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == events[1:3]
    assert [e.at for e in sink.query(limit=2)] == [events[2].at, events[3].at]  # the newest two
    assert all(e.at.tzinfo is not None for e in sink.query())


def test_sql_sink_failure_is_a_store_error(store: SQLKeyStore) -> None:
    sink = store.audit_sink()
    with store._engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE audit_events")
    with pytest.raises(StoreError, match="audit log could not be written"):
        sink.record(_event(0))


# --- events recorded by the application core ------------------------------------------


@pytest.fixture(scope="module")
def people(pki: PKI) -> dict[str, Identity]:
    return {ALICE: end_entity(pki.intermediate, ALICE), BOB: end_entity(pki.intermediate, BOB)}


@pytest.fixture
def app(store: SQLKeyStore) -> Secmail:
    return Secmail(store, audit=store.audit_sink())


def _log(app: Secmail) -> list[tuple[str, str, str, str, str]]:
    sink = app.audit
    assert isinstance(sink, SQLAuditSink)
    return [(e.action.value, e.outcome.value, e.user, e.key_id, e.reason) for e in sink.query()]


def _key_id(ident: Identity) -> str:
    return ident.cert.fingerprint(hashes.SHA256()).hex()


def _crl(pki: PKI) -> bytes:
    issuer = pki.intermediate
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(now - timedelta(hours=1))
        .next_update(now + timedelta(days=1))
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


@pytest.fixture
def caller() -> Iterator[None]:
    token = current_caller.set("webmail-besancon")
    yield
    current_caller.reset(token)


def test_every_key_and_trust_change_and_private_key_use_is_recorded(
    app: Secmail, pki: PKI, people: dict[str, Identity], caller: None
) -> None:
    alice, bob = people[ALICE], people[BOB]
    anchors = app.import_trust("ac-besancon", pki.bundle_pem)
    app.import_key(ALICE, alice.p12(b"pw"), "pw")
    app.import_key(BOB, bob.p12(b"pw"), "pw")
    with pytest.raises(SecmailError):
        app.import_key(BOB, bob.p12(b"pw"), "not the passphrase")
    app.import_key(ALICE, bob.cert_pem, None)
    signed = app.sign(ALICE, message(), Scheme.SMIME, opaque=False, header_protection=False)
    with pytest.raises(KeyNotFoundError):
        app.sign("carol@ac-besancon.fr", message(), Scheme.SMIME, opaque=False, header_protection=False)
    app.verify(BOB, signed, None)  # no private key: not audited
    app.encrypt(ALICE, message(), Scheme.SMIME, [BOB], sign=False, header_protection=False)  # not audited
    encrypted = app.encrypt(ALICE, message(), Scheme.SMIME, [BOB], sign=True, header_protection=False)
    app.decrypt(BOB, encrypted, None)
    app.decrypt(BOB, message(), None)  # not encrypted: no key used, not audited
    app.import_crl(_crl(pki))
    app.delete_key(ALICE, _key_id(bob))
    app.remove_trust(anchors[1].anchor_id)
    app.remove_trust_bundle("ac-besancon")

    root_id, inter_id = anchors[0].anchor_id, anchors[1].anchor_id
    assert {a.anchor_id for a in anchors} == {_key_id(pki.root), _key_id(pki.intermediate)}
    a, b = _key_id(alice), _key_id(bob)
    assert _log(app) == [
        ("trust.import", "ok", "", root_id, ""),
        ("trust.import", "ok", "", inter_id, ""),
        ("key.import", "ok", ALICE, a, ""),
        ("key.import", "ok", BOB, b, ""),
        ("key.import", "failed", BOB, "", "WRONG_PASSPHRASE"),
        ("key.import", "ok", ALICE, b, ""),
        ("sign", "ok", ALICE, a, ""),
        ("sign", "failed", "carol@ac-besancon.fr", "", "KEY_NOT_FOUND"),
        ("sign", "ok", ALICE, a, ""),
        ("decrypt", "ok", BOB, b, ""),
        ("crl.import", "ok", "", _key_id(pki.intermediate), ""),
        ("key.delete", "ok", ALICE, b, ""),
        ("trust.remove", "ok", "", inter_id, ""),
        ("trust.remove", "ok", "", root_id, ""),
    ]
    assert {e.caller for e in app.audit.query()} == {"webmail-besancon"}  # type: ignore[attr-defined]


def test_audit_rows_hold_no_content_or_secrets(
    app: Secmail, store: SQLKeyStore, people: dict[str, Identity], pki: PKI
) -> None:
    alice = people[ALICE]
    passphrase = "correct horse " + secrets.token_hex(4)
    body = b"Secret body " + secrets.token_hex(8).encode()
    app.import_trust("ac-besancon", pki.bundle_pem)
    app.import_key(ALICE, alice.p12(passphrase.encode()), passphrase)
    with pytest.raises(SecmailError):
        app.import_key(ALICE, alice.p12(passphrase.encode()), passphrase + "x")
    app.sign(ALICE, message(body=body), Scheme.SMIME, opaque=False, header_protection=False)
    private = alice.key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with store._engine.connect() as conn:
        rows = [tuple(str(v) for v in row) for row in conn.execute(select(_AuditRow.__table__))]
    assert len(rows) == 5
    flat = "\n".join("|".join(r) for r in rows)
    assert passphrase not in flat and body.decode() not in flat
    assert private.hex() not in flat and "Conseil de classe" not in flat


def test_an_operation_that_cannot_be_audited_fails(
    store: SQLKeyStore, people: dict[str, Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Secmail(store, audit=store.audit_sink())
    app.import_key(ALICE, people[ALICE].p12(b"pw"), "pw")

    def broken(event: AuditEvent) -> None:
        raise StoreError("the audit log could not be written (OperationalError)")

    monkeypatch.setattr(app.audit, "record", broken)
    with pytest.raises(StoreError, match="audit log"):
        app.sign(ALICE, message(), Scheme.SMIME, opaque=False, header_protection=False)


def test_default_sink_is_the_log(store: SQLKeyStore, caplog: pytest.LogCaptureFixture) -> None:
    app = Secmail(store)
    with caplog.at_level("INFO", logger="secmail.audit"), pytest.raises(KeyNotFoundError):
        app.delete_key(ALICE, "00ff")
    assert "action=key.delete outcome=failed caller=local user=alice@ac-besancon.fr key=00ff" in caplog.text


# --- secmail audit ---------------------------------------------------------------


def test_audit_command(tmp_path: Path, sealer: object, capsys: pytest.CaptureFixture[str]) -> None:
    from secmail.cli import main
    from secmail.keystore.seal import Sealer

    assert isinstance(sealer, Sealer)
    data_dir = tmp_path / "state"
    with SQLKeyStore(None, sealer, data_dir=data_dir) as store:
        sink = store.audit_sink()
        for e in (_event(0), _event(5, AuditAction.DECRYPT, key_id="k2"), _event(10, user=BOB)):
            sink.record(e)
    assert main(["audit", "--data-dir", str(data_dir), "--since", "2026-05-01T08:01", "--user", ALICE]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "2026-05-01T08:05:00+00:00  decrypt           ok      caller=webmail-1  user=alice@ac-besancon.fr  key=k2"
    ]
    assert main(["audit", "--data-dir", str(data_dir), "--action", "sign", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["user"], x["at"]) for x in lines] == [
        (ALICE, "2026-05-01T08:00:00+00:00"),
        (BOB, "2026-05-01T08:10:00+00:00"),
    ]
    assert main(["audit", "--data-dir", str(tmp_path / "nothing-here")]) == 1
    assert "no database in" in capsys.readouterr().err
