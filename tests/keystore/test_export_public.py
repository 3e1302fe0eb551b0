"""ExportPublicKey and `secmail keys export-public`: the certificate or the
OpenPGP certificate, never anything private."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from service_support import Client, error_reason, start
from testpki import end_entity, make_pki

from secmail.pgp import _backend
from secmail.pgp import packets as pgp_packets
from secmail.v1 import keys_pb2

ALICE = "alice@ac-besancon.fr"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    server, c = start(tmp_path / "data")
    yield c
    c.channel.close()
    server.stop(None)


def test_smime_certificate_only(client: Client) -> None:
    pki = make_pki()
    alice = end_entity(pki.intermediate, ALICE)
    [info] = client.keys.ImportKey(
        keys_pb2.ImportKeyRequest(user=ALICE, data=alice.p12(b"pw"), passphrase="pw")
    ).keys
    assert info.has_private_key
    resp = client.keys.ExportPublicKey(
        keys_pb2.ExportPublicKeyRequest(user=ALICE, key_id=info.key_id.upper())
    )
    assert resp.media_type == "application/pem-certificate-chain"
    assert resp.data.count(b"-----BEGIN") == 1 and resp.data.startswith(b"-----BEGIN CERTIFICATE-----")
    assert x509.load_pem_x509_certificate(resp.data) == alice.cert
    assert resp.key.key_id == info.key_id and resp.key.has_private_key
    der = alice.key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert b"PRIVATE" not in resp.SerializeToString() and der not in resp.SerializeToString()


@pytest.mark.interop
def test_openpgp_certificate_is_armored_public_only_and_gpg_reads_it(client: Client, tmp_path: Path) -> None:
    tsk = _backend.generate_tsk([f"Alice <{ALICE}>"])
    [info] = client.keys.ImportKey(keys_pb2.ImportKeyRequest(user=ALICE, data=tsk)).keys
    assert info.has_private_key
    resp = client.keys.ExportPublicKey(keys_pb2.ExportPublicKeyRequest(user=ALICE, key_id=info.key_id))
    assert resp.media_type == "application/pgp-keys"
    assert resp.data.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    tags = {p.tag for p in pgp_packets.read_packets(pgp_packets.to_binary(resp.data))}
    assert pgp_packets.TAG_PUBLIC_KEY in tags
    assert not tags & {pgp_packets.TAG_SECRET_KEY, pgp_packets.TAG_SECRET_SUBKEY}

    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    exported = tmp_path / "alice.asc"
    exported.write_bytes(resp.data)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--with-colons"]
    subprocess.run([*gpg, "--import", str(exported)], check=True, capture_output=True)
    listing = subprocess.run([*gpg, "--list-keys"], check=True, capture_output=True, text=True).stdout
    secret = subprocess.run([*gpg, "--list-secret-keys"], capture_output=True, text=True).stdout
    assert f"fpr:::::::::{info.key_id.upper()}:" in listing
    assert "sec:" not in secret


def test_unknown_or_other_users_key_is_not_found(client: Client) -> None:
    alice = end_entity(make_pki().intermediate, ALICE)
    client.keys.ImportKey(keys_pb2.ImportKeyRequest(user=ALICE, data=alice.cert_pem))
    key_id = alice.cert.fingerprint(hashes.SHA256()).hex()
    for user, kid in (("bob@ac-besancon.fr", key_id), (ALICE, "00" * 32)):
        with pytest.raises(grpc.RpcError) as info:
            client.keys.ExportPublicKey(keys_pb2.ExportPublicKeyRequest(user=user, key_id=kid))
        assert info.value.code() is grpc.StatusCode.NOT_FOUND and error_reason(info.value) == "KEY_NOT_FOUND"


def test_cli_export_public(client: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from secmail.cli import main

    alice = end_entity(make_pki().intermediate, ALICE)
    client.keys.ImportKey(keys_pb2.ImportKeyRequest(user=ALICE, data=alice.p12(b"pw"), passphrase="pw"))
    key_id = alice.cert.fingerprint(hashes.SHA256()).hex()
    out = tmp_path / "alice.pem"
    args = ["keys", "export-public", "--user", ALICE, "--key-id", key_id, "--server", client.address]
    assert main([*args, "-o", str(out)]) == 0
    assert x509.load_pem_x509_certificate(out.read_bytes()) == alice.cert
    assert main(args) == 0
    assert capsys.readouterr().out == out.read_text()
