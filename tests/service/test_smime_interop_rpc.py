"""S/MIME interop at the message level, through the gRPC API.

Whole RFC 5322 messages go both ways between secmail and the tools real
gateways and clients use: OpenSSL (``openssl cms``) and GnuPG's ``gpgsm``.
What secmail signs or encrypts, they verify or decrypt; what they sign or
encrypt, secmail verifies (GREEN with the right anchor) or decrypts.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from gpgsm_p12 import import_into_gpgsm
from service_support import Client, People, setup_academy, start
from testpki import Identity, message

from secmail.mime.entity import children, parse_entity
from secmail.service.app import Settings
from secmail.v1 import message_security_pb2, verdict_pb2

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]
V = verdict_pb2
READER = "bob@ac-besancon.fr"


def openssl(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["openssl", *map(str, args)], input=stdin, capture_output=True, timeout=60, check=False
    )


def write_identity(tmp: Path, name: str, ident: Identity) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert.write_bytes(ident.cert_pem)
    key.write_bytes(ident.key_pem())
    return cert, key


@pytest.fixture
def files(tmp_path: Path, people: People) -> Path:
    (tmp_path / "root.pem").write_bytes(people.pki.root.cert_pem)
    (tmp_path / "chain.pem").write_bytes(people.pki.intermediate.cert_pem)
    write_identity(tmp_path, "alice", people.alice)
    write_identity(tmp_path, "bob", people.bob)
    return tmp_path


def inner_entity(body_text: bytes = b"Bonjour depuis OpenSSL.\r\n") -> bytes:
    return b'Content-Type: text/plain; charset="utf-8"\r\n\r\n' + body_text


def headers_for_openssl() -> list[str]:
    return ["-from", "alice@ac-besancon.fr", "-to", READER, "-subject", "Interop"]


# --- secmail -> OpenSSL ---------------------------------------------------------------------------


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
def test_openssl_verifies_secmail_signed_message(academy: Client, files: Path, opaque: bool) -> None:
    signed = academy.messages.Sign(
        message_security_pb2.SignRequest(user="alice@ac-besancon.fr", message=message(), opaque=opaque)
    ).message
    (files / "signed.eml").write_bytes(signed)
    r = openssl(
        "cms", "-verify", "-in", files / "signed.eml", "-CAfile", files / "root.pem",
        "-certfile", files / "chain.pem", "-purpose", "smimesign", "-out", files / "out.txt",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert b"Verification successful" in r.stderr
    assert b"Le conseil de classe est jeudi." in (files / "out.txt").read_bytes()
    # And the check can fail: one changed byte is refused by OpenSSL too.
    (files / "bad.eml").write_bytes(signed.replace(b"jeudi", b"lundi") if not opaque else signed[:-200])
    bad = openssl(
        "cms", "-verify", "-in", files / "bad.eml", "-CAfile", files / "root.pem", "-out", "/dev/null"
    )
    assert bad.returncode != 0


@pytest.mark.parametrize(
    ("settings", "recipient"),
    [
        (Settings(), "alice"),  # AuthEnvelopedData AES-256-GCM, RSA-OAEP
        (Settings(), "bob"),  # AuthEnvelopedData, ECDH P-256
        (Settings(smime_authenticated_encryption=False, smime_rsa_oaep=False), "alice"),
    ],
    ids=["gcm-rsa-oaep", "gcm-ecdh-p256", "cbc-rsa-pkcs1v15"],
)
def test_openssl_decrypts_secmail_encrypted_message(
    tmp_path: Path, people: People, files: Path, settings: Settings, recipient: str
) -> None:
    server, c = start(tmp_path / "data", settings)
    try:
        setup_academy(c, people)
        enc = c.messages.Encrypt(
            message_security_pb2.EncryptRequest(
                user="alice@ac-besancon.fr", message=message(), recipients=[f"{recipient}@ac-besancon.fr"]
            )
        ).message
    finally:
        c.channel.close()
        server.stop(None)
    (files / "enc.eml").write_bytes(enc)
    r = openssl(
        "cms", "-decrypt", "-in", files / "enc.eml", "-recip", files / f"{recipient}.pem",
        "-inkey", files / f"{recipient}.key", "-out", files / "plain.eml",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    plain = (files / "plain.eml").read_bytes()
    assert b"Le conseil de classe est jeudi." in plain
    assert b"Subject: Conseil de classe" in plain  # the protected header travels inside


# --- OpenSSL -> secmail ---------------------------------------------------------------------------


@pytest.mark.parametrize("nodetach", [False, True], ids=["detached", "opaque"])
@pytest.mark.parametrize("who", ["alice", "bob"], ids=["rsa", "p256"])
def test_secmail_verifies_openssl_signed_message(
    academy: Client, files: Path, who: str, nodetach: bool
) -> None:
    (files / "inner.txt").write_bytes(inner_entity())
    sender = f"{who}@ac-besancon.fr"
    args = [
        "cms", "-sign", "-in", files / "inner.txt", "-signer", files / f"{who}.pem", "-inkey", files / f"{who}.key",
        "-certfile", files / "chain.pem", "-md", "sha256", "-from", sender, "-to", READER, "-subject", "Interop",
        "-binary",
    ]  # fmt: skip
    if nodetach:
        args.append("-nodetach")
    r = openssl(*args)
    assert r.returncode == 0, r.stderr.decode()
    signed = r.stdout
    resp = academy.messages.Verify(message_security_pb2.VerifyRequest(user=READER, message=signed))
    assert resp.verdict.banner == V.BANNER_GREEN, list(resp.verdict.reasons)
    assert list(resp.verdict.signers[0].verified_addresses) == [sender]
    assert b"Bonjour depuis OpenSSL." in resp.display_message


@pytest.mark.parametrize(
    ("cipher", "who", "integrity"),
    [("-aes-256-gcm", "bob", True), ("-aes256", "bob", False), ("-aes-128-cbc", "alice", False)],
    ids=["gcm-ecdh", "cbc256-ecdh", "cbc128-rsa"],
)
def test_secmail_decrypts_openssl_encrypted_message(
    academy: Client, files: Path, cipher: str, who: str, integrity: bool
) -> None:
    (files / "inner.txt").write_bytes(inner_entity(b"Message chiffr\xc3\xa9 par OpenSSL.\r\n"))
    r = openssl(
        "cms", "-encrypt", "-in", files / "inner.txt", cipher, *headers_for_openssl(), files / f"{who}.pem"
    )
    assert r.returncode == 0, r.stderr.decode()
    resp = academy.messages.Decrypt(
        message_security_pb2.DecryptRequest(user=f"{who}@ac-besancon.fr", message=r.stdout)
    )
    v = resp.verdict
    assert v.lock
    assert v.integrity_protected is integrity
    assert (V.REASON_INTEGRITY_NOT_PROTECTED in v.reasons) is (not integrity)
    assert v.banner == V.BANNER_NONE
    assert "Message chiffré par OpenSSL.".encode() in resp.display_message


def test_secmail_verifies_openssl_signed_then_encrypted(academy: Client, files: Path) -> None:
    (files / "inner.txt").write_bytes(inner_entity())
    signed = openssl(
        "cms", "-sign", "-in", files / "inner.txt", "-signer", files / "alice.pem", "-inkey", files / "alice.key",
        "-certfile", files / "chain.pem",
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr.decode()
    (files / "signed.eml").write_bytes(signed.stdout)
    enc = openssl(
        "cms", "-encrypt", "-in", files / "signed.eml", "-aes256", *headers_for_openssl(), files / "bob.pem"
    )
    assert enc.returncode == 0, enc.stderr.decode()
    v = academy.messages.Decrypt(message_security_pb2.DecryptRequest(user=READER, message=enc.stdout)).verdict
    # CBC without AEAD, but a valid signature covers the whole plaintext.
    assert v.lock and v.integrity_protected
    assert v.banner == V.BANNER_GREEN, list(v.reasons)


# --- gpgsm ----------------------------------------------------------------------------------------

GPGSM_PASS = "interop-pass"


@pytest.fixture
def gpgsm_home(people: People) -> Iterator[dict[str, str]]:
    if shutil.which("gpgsm") is None:
        pytest.skip("gpgsm is not installed")
    home = Path(tempfile.mkdtemp(prefix="sm-rpc-", dir="/tmp"))  # short: agent socket path
    home.chmod(0o700)
    (home / "gpgsm.conf").write_text("disable-crl-checks\n")
    (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    fpr = people.pki.root.cert.fingerprint(hashes.SHA1()).hex().upper()
    (home / "trustlist.txt").write_text(":".join(re.findall("..", fpr)) + " S\n")
    env = {**os.environ, "GNUPGHOME": str(home)}
    (home / "ca.pem").write_bytes(people.pki.bundle_pem)
    try:
        imported = subprocess.run(
            ["gpgsm", "--batch", "--import", str(home / "ca.pem")], env=env, capture_output=True, timeout=60
        )
        assert imported.returncode == 0, imported.stderr.decode()
        # gpgsm 2.2 reads PKCS#12 with 3DES/SHA-1 PBE only, and no EC keys.
        imported = import_into_gpgsm(
            lambda path: gpgsm(env, "--import", path),
            people.alice.key,  # type: ignore[arg-type]
            people.alice.cert,
            GPGSM_PASS,
            home / "alice.p12",
        )
        assert imported.returncode == 0, imported.stderr.decode()
        yield env
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def gpgsm(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["gpgsm", "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0", *map(str, args)],
        input=GPGSM_PASS.encode() + b"\n",
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_gpgsm_verifies_secmail_signed_message(
    academy: Client, gpgsm_home: dict[str, str], tmp_path: Path
) -> None:
    signed = academy.messages.Sign(
        message_security_pb2.SignRequest(user="alice@ac-besancon.fr", message=message())
    ).message
    root = parse_entity(signed)
    body = signed.split(b"\r\n\r\n", 1)[1]
    root = parse_entity(b"Content-Type: " + root.get("content-type").encode() + b"\r\n\r\n" + body)  # type: ignore[union-attr]
    signed_part, sig_part = children(root)
    (tmp_path / "payload").write_bytes(signed_part.raw)
    (tmp_path / "sig.p7s").write_bytes(base64.b64decode(b"".join(sig_part.body.split())))
    r = gpgsm(gpgsm_home, "--verify", tmp_path / "sig.p7s", tmp_path / "payload")
    assert r.returncode == 0, r.stderr.decode()
    assert b"Good signature" in r.stderr
    (tmp_path / "payload").write_bytes(signed_part.raw.replace(b"jeudi", b"lundi"))
    assert gpgsm(gpgsm_home, "--verify", tmp_path / "sig.p7s", tmp_path / "payload").returncode != 0


def test_gpgsm_decrypts_secmail_encrypted_message(
    tmp_path: Path, people: People, gpgsm_home: dict[str, str]
) -> None:
    # gpgsm 2.2 reads neither RSA-OAEP nor AuthEnvelopedData: the legacy
    # settings a site with such correspondents would choose.
    server, c = start(tmp_path / "srv", Settings(smime_authenticated_encryption=False, smime_rsa_oaep=False))
    try:
        setup_academy(c, people)
        enc = c.messages.Encrypt(
            message_security_pb2.EncryptRequest(
                user="bob@ac-besancon.fr",
                message=message(sender="bob@ac-besancon.fr", to="alice@ac-besancon.fr"),
            )
        ).message
    finally:
        c.channel.close()
        server.stop(None)
    p7m = parse_entity(enc)
    (tmp_path / "enc.p7m").write_bytes(base64.b64decode(b"".join(p7m.body.split())))
    r = gpgsm(gpgsm_home, "--decrypt", tmp_path / "enc.p7m")
    assert r.returncode == 0, r.stderr.decode()
    assert b"Le conseil de classe est jeudi." in r.stdout


def test_secmail_verifies_and_decrypts_gpgsm_output(
    academy: Client, gpgsm_home: dict[str, str], tmp_path: Path
) -> None:
    inner = inner_entity(b"Bonjour depuis gpgsm.\r\n")
    (tmp_path / "inner").write_bytes(inner)
    sig = gpgsm(gpgsm_home, "--detach-sign", "--local-user", "alice@ac-besancon.fr", tmp_path / "inner")
    assert sig.returncode == 0, sig.stderr.decode()
    b64 = base64.encodebytes(sig.stdout).replace(b"\n", b"\r\n")
    signed = (
        b"From: alice@ac-besancon.fr\r\nTo: bob@ac-besancon.fr\r\nSubject: gpgsm\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="B"\r\n'
        b"\r\n--B\r\n" + inner + b"\r\n--B\r\nContent-Type: application/pkcs7-signature\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"\r\n--B--\r\n"
    )
    v = academy.messages.Verify(message_security_pb2.VerifyRequest(user=READER, message=signed)).verdict
    assert v.banner == V.BANNER_GREEN, list(v.reasons)

    enc = gpgsm(gpgsm_home, "--encrypt", "--recipient", "alice@ac-besancon.fr", tmp_path / "inner")
    assert enc.returncode == 0, enc.stderr.decode()
    b64 = base64.encodebytes(enc.stdout).replace(b"\n", b"\r\n")
    encrypted = (
        b"From: bob@ac-besancon.fr\r\nTo: alice@ac-besancon.fr\r\nSubject: gpgsm\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64
    )
    resp = academy.messages.Decrypt(
        message_security_pb2.DecryptRequest(user="alice@ac-besancon.fr", message=encrypted)
    )
    assert resp.verdict.lock
    assert b"Bonjour depuis gpgsm." in resp.display_message
