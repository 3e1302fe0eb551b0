"""S/MIME end to end through the gRPC API (issue 2 acceptance)."""

from __future__ import annotations

import grpc
import pytest
from service_support import Client, People, error_reason, sign, verify
from testpki import end_entity, make_pki, message

from secmail.v1 import keys_pb2, message_security_pb2, verdict_pb2

V = verdict_pb2


@pytest.mark.parametrize("who", ["alice", "bob", "carol"])
@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
def test_sign_then_verify_is_green(academy: Client, who: str, opaque: bool) -> None:
    sender = f"{who}@ac-besancon.fr"
    signed = sign(academy, sender, message(sender=sender), opaque=opaque)
    assert (b"multipart/signed" in signed) != opaque
    resp = verify(academy, "bob@ac-besancon.fr", signed)
    v = resp.verdict
    assert v.banner == V.BANNER_GREEN, list(v.reasons)
    assert v.signature == V.SIGNATURE_STATUS_VALID
    assert v.coverage == V.COVERAGE_BODY_AND_HEADERS
    assert not v.lock
    assert [s.verified_addresses for s in v.signers] == [[sender]]
    assert v.signers[0].chain[-1].subject.startswith("CN=Test Root CA")
    assert b"Le conseil de classe est jeudi." in resp.display_message
    assert b"Subject: Conseil de classe" in resp.display_message


def test_tampered_body_is_red(academy: Client) -> None:
    signed = sign(academy, "alice@ac-besancon.fr", message())
    tampered = signed.replace(b"jeudi", b"lundi")
    assert tampered != signed
    v = verify(academy, "bob@ac-besancon.fr", tampered).verdict
    assert v.banner == V.BANNER_RED
    assert V.REASON_BAD_SIGNATURE in v.reasons


def test_unimported_ca_is_yellow(client: Client, people: People) -> None:
    client.keys.ImportKey(
        keys_pb2.ImportKeyRequest(user="alice@ac-besancon.fr", data=people.alice.p12(b"pw"), passphrase="pw")
    )
    signed = sign(client, "alice@ac-besancon.fr", message())
    v = verify(client, "bob@ac-besancon.fr", signed).verdict
    assert v.banner == V.BANNER_YELLOW
    assert V.REASON_UNTRUSTED_CHAIN in v.reasons


def test_sender_mismatch_on_sign_is_refused(academy: Client) -> None:
    with pytest.raises(grpc.RpcError) as err:
        sign(academy, "alice@ac-besancon.fr", message(sender="recteur@ac-besancon.fr"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "SENDER_MISMATCH"


def test_from_not_in_certificate_is_yellow(academy: Client, people: People) -> None:
    # Signed by alice's key over a message whose From is someone else: made
    # with the engine directly, since the service refuses to do it.
    from datetime import UTC, datetime

    from secmail.message import SMIMESigningKey, sign_message

    key = SMIMESigningKey(
        people.alice.cert, people.alice.key, people.alice.chain, ("recteur@ac-besancon.fr",)
    )
    forged = sign_message(message(sender="recteur@ac-besancon.fr"), key, at=datetime.now(UTC))
    v = verify(academy, "bob@ac-besancon.fr", forged).verdict
    assert v.banner == V.BANNER_YELLOW
    assert V.REASON_SENDER_MISMATCH in v.reasons
    assert list(v.signers[0].verified_addresses) == ["alice@ac-besancon.fr"]


def test_expired_certificate_is_yellow(academy: Client, people: People) -> None:
    from datetime import UTC, datetime

    from secmail.message import SMIMESigningKey, sign_message

    old = end_entity(
        people.pki.intermediate,
        "alice@ac-besancon.fr",
        not_before=datetime(2025, 1, 1, tzinfo=UTC),
        not_after=datetime(2025, 6, 1, tzinfo=UTC),
    )
    key = SMIMESigningKey(old.cert, old.key, old.chain, ("alice@ac-besancon.fr",))
    signed = sign_message(message(), key, at=datetime(2025, 3, 1, tzinfo=UTC))
    v = verify(academy, "bob@ac-besancon.fr", signed).verdict
    assert v.banner == V.BANNER_YELLOW
    assert V.REASON_CERT_EXPIRED in v.reasons
    # Judged at validation_time: while the certificate was valid, it is GREEN.
    from google.protobuf import timestamp_pb2

    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime(2025, 3, 1, 12, tzinfo=UTC))
    v = verify(academy, "bob@ac-besancon.fr", signed, validation_time=ts).verdict
    assert v.banner == V.BANNER_GREEN, list(v.reasons)


@pytest.mark.parametrize("sign_too", [False, True], ids=["encrypt", "sign+encrypt"])
def test_encrypt_then_decrypt(academy: Client, sign_too: bool) -> None:
    enc = academy.messages.Encrypt(
        message_security_pb2.EncryptRequest(user="alice@ac-besancon.fr", message=message(), sign=sign_too)
    ).message
    assert b"jeudi" not in enc
    assert b"Subject: [...]" in enc
    for reader in ("bob@ac-besancon.fr", "alice@ac-besancon.fr"):  # the sender can read its Sent copy
        resp = academy.messages.Decrypt(message_security_pb2.DecryptRequest(user=reader, message=enc))
        v = resp.verdict
        assert v.lock and v.integrity_protected
        assert b"Le conseil de classe est jeudi." in resp.display_message
        assert b"Subject: Conseil de classe" in resp.display_message
        if sign_too:
            assert v.banner == V.BANNER_GREEN, list(v.reasons)
        else:
            assert v.banner == V.BANNER_NONE
    with pytest.raises(grpc.RpcError) as err:
        verify(academy, "bob@ac-besancon.fr", enc)
    assert error_reason(err.value) == "ENCRYPTED"


def test_recipient_without_certificate_is_refused(academy: Client) -> None:
    with pytest.raises(grpc.RpcError) as err:
        academy.messages.Encrypt(
            message_security_pb2.EncryptRequest(
                user="alice@ac-besancon.fr", message=message(to="bob@ac-besancon.fr, nobody@ac-lyon.fr")
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "RECIPIENT_KEY_MISSING"
    assert "nobody@ac-lyon.fr" in err.value.details()


def test_french_sentences(academy: Client) -> None:
    signed = sign(academy, "alice@ac-besancon.fr", message()).replace(b"jeudi", b"lundi")
    v = verify(academy, "bob@ac-besancon.fr", signed, language="fr-FR").verdict
    assert v.reason_texts[0].language == "fr"
    assert "signature" in v.reason_texts[0].text
    md = (("accept-language", "fr"),)
    v2 = academy.messages.Verify(
        message_security_pb2.VerifyRequest(user="bob@ac-besancon.fr", message=signed), metadata=md
    ).verdict
    assert [t.text for t in v2.reason_texts] == [t.text for t in v.reason_texts]


def test_unrelated_pki_keys_import(client: Client) -> None:
    other = make_pki()
    ident = end_entity(other.intermediate, "dan@ac-lyon.fr")
    resp = client.keys.ImportKey(keys_pb2.ImportKeyRequest(user="bob@ac-besancon.fr", data=ident.cert_pem))
    assert [k.has_private_key for k in resp.keys] == [False]
    assert list(resp.keys[0].addresses) == ["dan@ac-lyon.fr"]


def test_crl_import_needs_a_trusted_issuer_and_revokes(academy: Client, people: People) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    from secmail.v1 import trust_pb2

    signed = sign(academy, "alice@ac-besancon.fr", message())
    assert verify(academy, "bob@ac-besancon.fr", signed).verdict.banner == V.BANNER_GREEN

    def crl_by(issuer_cert: x509.Certificate, key: object) -> bytes:
        now = datetime.now(UTC)
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(people.alice.cert.serial_number)
            .revocation_date(now - timedelta(days=1))
            .build()
        )
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer_cert.subject)
            .last_update(now - timedelta(hours=1))
            .next_update(now + timedelta(days=7))
            .add_revoked_certificate(revoked)
            .add_extension(x509.CRLNumber(1), critical=False)
            .sign(key, hashes.SHA256())  # type: ignore[arg-type]
        )
        return crl.public_bytes(serialization.Encoding.DER)

    # A CRL claiming the académie CA's name but signed by another key is refused.
    forged = crl_by(people.pki.intermediate.cert, people.pki.other_root.key)
    with pytest.raises(grpc.RpcError) as err:
        academy.trust.ImportCRL(trust_pb2.ImportCRLRequest(data=forged))
    assert error_reason(err.value) == "INVALID_CERTIFICATE"

    resp = academy.trust.ImportCRL(
        trust_pb2.ImportCRLRequest(data=crl_by(people.pki.intermediate.cert, people.pki.intermediate.key))
    )
    assert resp.revoked_count == 1
    v = verify(academy, "bob@ac-besancon.fr", signed).verdict
    assert v.banner == V.BANNER_RED
    assert V.REASON_CERT_REVOKED in v.reasons


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        ("no-crl-number", "CRL number"),
        ("delta", "delta CRL"),
        ("unknown-critical", "unknown critical extension"),
    ],
)
def test_crl_import_refuses_a_crl_that_would_never_be_used(
    academy: Client, people: People, shape: str, why: str
) -> None:
    """RFC 5280 §5.2.3/§5.2.4/§5.2: such a CRL is never read at verification
    time; keeping it would let an admin believe a certificate is revoked."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    from secmail.v1 import trust_pb2

    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(people.pki.intermediate.cert.subject)
        .last_update(now - timedelta(hours=1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(people.alice.cert.serial_number)
            .revocation_date(now - timedelta(days=1))
            .build()
        )
    )
    # (cryptography cannot build a CRL without nextUpdate, the fifth refusal.)
    builder = builder.next_update(now + timedelta(days=7))
    if shape != "no-crl-number":
        builder = builder.add_extension(x509.CRLNumber(7), critical=False)
    if shape == "delta":
        builder = builder.add_extension(x509.DeltaCRLIndicator(6), critical=True)
    if shape == "unknown-critical":
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
            critical=True,
        )
    crl = builder.sign(people.pki.intermediate.key, hashes.SHA256())  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as err:
        academy.trust.ImportCRL(trust_pb2.ImportCRLRequest(data=crl.public_bytes(serialization.Encoding.DER)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "INVALID_CERTIFICATE"
    assert why in (err.value.details() or "")
