"""Interop with Bouncy Castle (Java), for what OpenSSL 3.0 and gpgsm 2.2 lack.

Ed25519 signatures (RFC 8419) and X25519 key agreement (RFC 8418) have no
other independent implementation on this machine. Needs ``javac``/``java``
and Debian's libbcprov-java + libbcpkix-java (jars in /usr/share/java);
skipped otherwise. Bouncy Castle 1.72 verifies and makes Ed25519 CMS
signatures, but its CMS layer has no X25519 key agreement (neither RFC 8418
HKDF nor X9.63 schemes): those cases probe and skip with the reason; RFC
8418 is then covered by test_cms_der's independent HKDF derivation only.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from smime_pki import SIGNING_TIME, SmimePKI

from secmail.context import TrustContext, VerifyContext
from secmail.policy import DEFAULT_POLICY
from secmail.smime import algorithms as alg
from secmail.smime.envelope import decrypt_content, encrypt_content
from secmail.smime.sign import sign_content
from secmail.smime.verify import verify_signed_data
from secmail.verdict import Reason

JARS = [Path("/usr/share/java") / f"{name}.jar" for name in ("bcprov", "bcpkix", "bcutil")]

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        shutil.which("javac") is None or not all(j.exists() for j in JARS),
        reason="needs javac and Bouncy Castle jars (apt-get install libbcpkix-java)",
    ),
]

CONTENT = b"Content-Type: text/plain\r\n\r\nBouncy Castle interop.\r\n"
KEY_ALGORITHMS = {"alice": "RSA", "bob": "EC", "erin": "EC", "carol": "Ed25519", "dave": "X25519"}


@dataclass
class BouncyCastle:
    classes: Path
    files: Path

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        classpath = ":".join([str(self.classes), *map(str, JARS)])
        return subprocess.run(
            ["java", "-cp", classpath, "BcInterop", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def bc(pki: SmimePKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BouncyCastle]:
    classes = tmp_path_factory.mktemp("bc-classes")
    source = Path(__file__).with_name("BcInterop.java")
    built = subprocess.run(
        ["javac", "-nowarn", "-cp", ":".join(map(str, JARS)), "-d", str(classes), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    files = tmp_path_factory.mktemp("bc-files")
    for name, person in pki.people.items():
        (files / f"{name}.cert.der").write_bytes(person.cert.public_bytes(serialization.Encoding.DER))
        (files / f"{name}.key.der").write_bytes(
            person.key.private_bytes(  # type: ignore[union-attr]
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    yield BouncyCastle(classes, files)


def _now_ctx(pki: SmimePKI) -> VerifyContext:
    return VerifyContext(
        at=datetime.now(UTC),
        policy=DEFAULT_POLICY,
        trust=TrustContext(anchors=(pki.root,), intermediates=(pki.intermediate,)),
    )


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
@pytest.mark.parametrize("who", ["carol", "alice", "bob"], ids=["ed25519", "rsa", "ecdsa-p256"])
def test_bouncycastle_verifies_ours(
    bc: BouncyCastle, pki: SmimePKI, tmp_path: Path, who: str, detached: bool
) -> None:
    person = pki[who]
    der = sign_content(
        CONTENT,
        private_key=person.key,
        cert=person.cert,
        chain=pki.chain,
        detached=detached,
        signing_time=SIGNING_TIME,
    )
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "content").write_bytes(CONTENT)
    result = bc.run("verify", tmp_path / "sig.der", tmp_path / "content" if detached else "-")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK 1"
    if detached:
        (tmp_path / "content").write_bytes(CONTENT + b"!")
        tampered = bc.run("verify", tmp_path / "sig.der", tmp_path / "content")
        assert tampered.returncode != 0


@pytest.mark.parametrize(
    ("who", "signature_algorithm", "expected"),
    [("carol", "Ed25519", "ed25519"), ("alice", "SHA256withRSAandMGF1", "rsa-pss-sha256")],
)
def test_we_verify_bouncycastle(
    bc: BouncyCastle, pki: SmimePKI, tmp_path: Path, who: str, signature_algorithm: str, expected: str
) -> None:
    (tmp_path / "content").write_bytes(CONTENT)
    result = bc.run(
        "sign", bc.files / f"{who}.cert.der", bc.files / f"{who}.key.der", KEY_ALGORITHMS[who],
        signature_algorithm, tmp_path / "content", tmp_path / "sig.der", "true",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    der = (tmp_path / "sig.der").read_bytes()
    (signer,) = verify_signed_data(der, detached_content=CONTENT, ctx=_now_ctx(pki)).signers
    assert (signer.crypto_valid, signer.reasons, signer.algorithm) == (True, (), expected)
    bad = verify_signed_data(der, detached_content=CONTENT + b"!", ctx=_now_ctx(pki)).signers[0]
    assert bad.reasons == (Reason.BAD_SIGNATURE,)


@pytest.mark.parametrize(
    ("who", "scheme"),
    [
        ("dave", alg.OID_ECDH_SHA256KDF),  # X25519 with the X9.63 KDF (RFC 8418 §2.1)
        ("bob", alg.OID_ECDH_SHA256KDF),
        ("bob", alg.OID_ECDH_SHA1KDF),
    ],
    ids=["x25519-sha256kdf", "p256-sha256kdf", "p256-sha1kdf"],
)
def test_we_decrypt_bouncycastle(
    bc: BouncyCastle, pki: SmimePKI, tmp_path: Path, who: str, scheme: str
) -> None:
    (tmp_path / "content").write_bytes(CONTENT)
    result = bc.run(
        "encrypt", bc.files / f"{who}.cert.der", tmp_path / "content", tmp_path / "enc.der", scheme
    )
    if result.returncode != 0 and who == "dave" and "can't identify EC private key" in result.stderr:
        pytest.skip("this Bouncy Castle's CMS has no X25519 key agreement (1.72 maps the schemes to EC)")
    assert result.returncode == 0, result.stdout + result.stderr
    person = pki[who]
    decrypted = decrypt_content((tmp_path / "enc.der").read_bytes(), [(person.cert, person.key)])
    assert (decrypted.content, decrypted.content_cipher) == (CONTENT, "aes-256-cbc")


@pytest.mark.parametrize("authenticated", [True, False], ids=["auth-enveloped", "enveloped"])
@pytest.mark.parametrize(
    "who", ["alice", "bob", "erin", "dave"], ids=["rsa-oaep", "ecdh-p256", "ecdh-p384", "x25519"]
)
def test_bouncycastle_decrypts_ours(
    bc: BouncyCastle, pki: SmimePKI, tmp_path: Path, who: str, authenticated: bool
) -> None:
    (tmp_path / "enc.der").write_bytes(encrypt_content(CONTENT, [pki[who].cert], authenticated=authenticated))
    result = bc.run(
        "decrypt", tmp_path / "enc.der", bc.files / f"{who}.cert.der", bc.files / f"{who}.key.der",
        KEY_ALGORITHMS[who], tmp_path / "out",
    )  # fmt: skip
    if result.returncode != 0 and who == "dave" and "1.2.840.113549.1.9.16.3.19" in result.stderr:
        pytest.skip("this Bouncy Castle has no RFC 8418 HKDF key agreement schemes (1.72)")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out").read_bytes() == CONTENT
