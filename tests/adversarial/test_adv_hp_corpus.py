"""The six S/MIME "protected headers" samples (../shared/corpora/
protected-headers-samples/smime, see its SOURCE.md) through Verify/Decrypt.

Trust: sample-lamps-ca.crt as the anchor; bob's key from bob.p12.pem
(PEM-armoured PKCS#12, empty passphrase, legacy RC2-40 PBE). Alice's
certificate has no emailAddress in its subject, but it does carry
``alice@smime.example`` as an rfc822Name SubjectAltName (with
emailProtection), which is what RFC 8550 §3 binds: so her signatures are
bound to the From and the verdicts below are GREEN where nothing else is
wrong. The encrypted samples use 3DES (des-ede3-cbc), which secmail's
policy reports as weak: YELLOW, never GREEN, although the signature holds.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from adv_support import CORPORA, V, decrypt_rpc, error_info, expect, verify_rpc
from google.protobuf import timestamp_pb2
from service_support import Client, start

from secmail.v1 import keys_pb2, trust_pb2

pytestmark = pytest.mark.corpus

BOB = "bob@smime.example"
ALICE = "alice@smime.example"
#: The samples date from November 2019; the certificates run to 2052.
AT = datetime(2020, 1, 1, tzinfo=UTC)


def _samples() -> Path:
    path = CORPORA / "protected-headers-samples" / "smime"
    if not path.is_dir():
        pytest.skip(
            "../shared/corpora/protected-headers-samples not present: corpus tests need the shared corpora"
        )
    return path


@pytest.fixture(scope="module")
def lamps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    samples = _samples()
    server, client = start(tmp_path_factory.mktemp("lamps") / "data")
    client.trust.ImportTrustBundle(
        trust_pb2.ImportTrustBundleRequest(
            name="lamps-draft", data=(samples / "sample-lamps-ca.crt").read_bytes()
        )
    )
    pem = (samples / "bob.p12.pem").read_bytes()
    der = base64.b64decode(b"".join(line for line in pem.splitlines() if not line.startswith(b"-----")))
    keys = client.keys.ImportKey(keys_pb2.ImportKeyRequest(user=BOB, data=der, passphrase="")).keys
    assert [(k.has_private_key, list(k.addresses)) for k in keys] == [(True, [BOB])]
    yield client
    client.channel.close()
    server.stop(None)


def _at() -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(AT)
    return t


def _read(name: str) -> bytes:
    return (_samples() / name).read_bytes()


def _signed_by_alice(v: V.Verdict) -> None:
    [signer] = v.signers
    assert list(signer.verified_addresses) == [ALICE]
    assert signer.status == V.SIGNATURE_STATUS_VALID
    assert [c.subject for c in signer.chain] == ["CN=Alice Lovelace", "CN=Sample LAMPS Certificate Authority"]
    assert v.from_address == ALICE


@pytest.mark.parametrize(
    ("name", "coverage"),
    [
        ("smime-onepart-signed.eml", V.COVERAGE_BODY_AND_HEADERS),
        ("smime-multipart-signed.eml", V.COVERAGE_BODY_AND_HEADERS),
        # Re-signed without the protected-headers="v1" marker: the header
        # fields inside are not announced as protected, so they are not
        # taken (the outer ones are shown) and only the body is covered.
        ("pkcs7-smime-onepart-signed.eml", V.COVERAGE_BODY),
    ],
)
def test_signed_samples(lamps: Client, name: str, coverage: int) -> None:
    raw = _read(name)
    for call in (verify_rpc, decrypt_rpc):
        resp = call(lamps, raw, user=BOB, validation_time=_at())
        expect(resp.verdict, banner=V.BANNER_GREEN, coverage=coverage)
        assert resp.verdict.scheme == V.SCHEME_SMIME
        _signed_by_alice(resp.verdict)
        assert b"Subject: The FooCorp contract\r\n" in resp.display_message
        assert b"Bob, we need to cancel this contract." in resp.display_message
        assert b"protected-headers=" not in resp.display_message


@pytest.mark.parametrize("name", ["smime-sign+enc.eml", "smime-sign+enc+legacy-disp.eml"])
def test_signed_and_encrypted_samples(lamps: Client, name: str) -> None:
    raw = _read(name)
    with pytest.raises(grpc.RpcError) as err:
        verify_rpc(lamps, raw, user=BOB, validation_time=_at())
    assert error_info(err.value) == ("FAILED_PRECONDITION", "ENCRYPTED")
    resp = decrypt_rpc(lamps, raw, user=BOB, validation_time=_at())
    v = resp.verdict
    # 3DES keeps it from GREEN; alice's signature over the whole plaintext
    # still makes the CBC content integrity protected.
    expect(v, banner=V.BANNER_YELLOW, lock=True, reasons=[V.REASON_WEAK_ALGORITHM])
    assert v.integrity_protected
    _signed_by_alice(v)
    _shows_protected_headers(resp.display_message, name)


def test_encrypted_unsigned_sample(lamps: Client) -> None:
    name = "smime-enc+legacy-disp.eml"
    resp = decrypt_rpc(lamps, _read(name), user=BOB, validation_time=_at())
    v = resp.verdict
    # Encrypted but not signed: a lock, no banner, and a warning that the
    # CBC content could have been modified.
    expect(
        v,
        banner=V.BANNER_NONE,
        lock=True,
        reasons=[V.REASON_INTEGRITY_NOT_PROTECTED, V.REASON_WEAK_ALGORITHM],
    )
    assert not v.integrity_protected and not v.signers
    assert v.from_address == ALICE
    _shows_protected_headers(resp.display_message, name)


def _shows_protected_headers(display: bytes, name: str) -> None:
    head, _, body = display.partition(b"\r\n\r\n")
    # The protected Subject replaces the outer "...", once.
    assert b"Subject: BarCorp contract signed, let's go!" in head
    assert b"Subject: ...\r\n" not in display
    assert head.count(b"\nSubject:") + head.startswith(b"Subject:") == 1
    # Transport fields stay from the outside.
    assert b"Received: from localhost" in head
    assert b"Password: correct-horse-battery-staple" in body
    assert f"(this is the '{name.removesuffix('.eml')}' message)".encode() in body
    # The legacy display part (a text/plain copy of the headers) is gone.
    assert b"protected-headers=" not in display
    assert body.count(b"Subject:") == 0
