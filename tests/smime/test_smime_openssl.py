"""Interop with ``openssl cms``, both directions.

Known limits of OpenSSL 3.0 (each test probes the tool and skips with the
reason rather than assuming): no Ed25519 in CMS signing/verification, no
X25519/X448 key agreement in CMS.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from smime_pki import SIGNING_TIME, VALIDATION_TIME, SmimePKI

from secmail.context import TrustContext, VerifyContext
from secmail.policy import DEFAULT_POLICY
from secmail.smime.envelope import decrypt_content, encrypt_content
from secmail.smime.mime import build_multipart_signed, build_pkcs7_mime
from secmail.smime.sign import micalg_for, sign_content
from secmail.smime.verify import verify_signed_data
from secmail.verdict import Reason

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]

CONTENT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nInterop \xc3\xa9t\xc3\xa9 2026.\r\n"


@pytest.fixture(autouse=True)
def _pki_files(pki_dir: Path) -> Path:
    """Every test here hands the PKI to openssl as files (person.files)."""
    return pki_dir


def openssl(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["openssl", *map(str, args)], input=stdin, capture_output=True, timeout=60, check=False
    )


def _verify_args(pki_dir: Path) -> list[str | Path]:
    return [
        "-CAfile",
        pki_dir / "root.pem",
        "-purpose",
        "smimesign",
        "-attime",
        str(int(VALIDATION_TIME.timestamp())),
    ]


def _now_ctx(pki: SmimePKI) -> VerifyContext:
    """OpenSSL stamps the real time as signingTime: judge at the real time."""
    return VerifyContext(
        at=datetime.now(UTC),
        policy=DEFAULT_POLICY,
        trust=TrustContext(anchors=(pki.root,), intermediates=(pki.intermediate,)),
    )


def _skip_without_ed25519_cms(pki_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "probe.txt").write_bytes(b"probe")
    probe = openssl(
        "cms", "-sign", "-md", "sha512", "-binary", "-in", tmp_path / "probe.txt",
        "-signer", pki_dir / "carol.cert.pem", "-inkey", pki_dir / "carol.key.pem",
        "-outform", "DER", "-out", tmp_path / "probe.der",
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("this openssl cannot make or check Ed25519 CMS signatures (OpenSSL 3.0)")


SIGNERS = [
    ("alice", "sha256", False),
    ("alice", "sha512", True),
    ("bob", "sha256", False),
    ("erin", "sha384", False),
    ("carol", "sha256", False),
]
SIGNER_IDS = ["rsa-pkcs1v15", "rsa-pss", "ecdsa-p256", "ecdsa-p384", "ed25519"]


# --- openssl verifies what we sign -------------------------------------------------------------------
@pytest.mark.parametrize(("who", "digest", "pss"), SIGNERS, ids=SIGNER_IDS)
def test_openssl_verifies_our_multipart_signed(
    pki: SmimePKI, pki_dir: Path, tmp_path: Path, who: str, digest: str, pss: bool
) -> None:
    if who == "carol":
        _skip_without_ed25519_cms(pki_dir, tmp_path)
    person = pki[who]
    der = sign_content(
        CONTENT,
        private_key=person.key,
        cert=person.cert,
        chain=pki.chain,
        digest=digest,
        rsa_pss=pss,
        signing_time=SIGNING_TIME,
    )
    message = b"MIME-Version: 1.0\r\n" + build_multipart_signed(CONTENT, der, micalg_for(person.key, digest))
    (tmp_path / "signed.eml").write_bytes(message)
    out = tmp_path / "out.bin"
    # Text mode: with -binary, OpenSSL's multipart splitter keeps the CR of
    # the CRLF that belongs to the delimiter (it expects LF input then).
    result = openssl("cms", "-verify", "-in", tmp_path / "signed.eml", "-out", out, *_verify_args(pki_dir))
    assert result.returncode == 0, result.stderr.decode()
    assert b"Verification successful" in result.stderr
    assert out.read_bytes() == CONTENT

    # The same message with one changed byte in the signed part must fail,
    # or the check above proves nothing.
    (tmp_path / "tampered.eml").write_bytes(message.replace(b"Interop", b"Interip"))
    tampered = openssl("cms", "-verify", "-in", tmp_path / "tampered.eml", *_verify_args(pki_dir))
    assert tampered.returncode != 0


@pytest.mark.parametrize(("who", "digest", "pss"), SIGNERS[:4], ids=SIGNER_IDS[:4])
def test_openssl_verifies_our_opaque_signed(
    pki: SmimePKI, pki_dir: Path, tmp_path: Path, who: str, digest: str, pss: bool
) -> None:
    person = pki[who]
    der = sign_content(
        CONTENT,
        private_key=person.key,
        cert=person.cert,
        chain=pki.chain,
        digest=digest,
        rsa_pss=pss,
        detached=False,
        signing_time=SIGNING_TIME,
    )
    (tmp_path / "signed.der").write_bytes(der)
    result = openssl(
        "cms", "-verify", "-inform", "DER", "-in", tmp_path / "signed.der", *_verify_args(pki_dir)
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == CONTENT

    # Also as an application/pkcs7-mime entity.
    (tmp_path / "signed.p7m").write_bytes(b"MIME-Version: 1.0\r\n" + build_pkcs7_mime(der, "signed-data"))
    result = openssl("cms", "-verify", "-in", tmp_path / "signed.p7m", *_verify_args(pki_dir))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == CONTENT


# --- we verify what openssl signs ----------------------------------------------------------------------
@pytest.mark.parametrize("detached", [True, False], ids=["detached", "nodetach"])
@pytest.mark.parametrize(
    ("who", "md", "algorithm"),
    [
        ("alice", "sha256", "rsa-pkcs1v15-sha256"),
        ("bob", "sha256", "ecdsa-p256-sha256"),
        ("erin", "sha512", "ecdsa-p384-sha512"),
    ],
)
def test_we_verify_openssl_signatures(
    pki: SmimePKI, pki_dir: Path, tmp_path: Path, who: str, md: str, algorithm: str, detached: bool
) -> None:
    person = pki[who]
    (tmp_path / "content").write_bytes(CONTENT)
    args: list[str | Path] = [
        "cms", "-sign", "-binary", "-md", md, "-in", tmp_path / "content",
        "-signer", person.files["cert"], "-inkey", person.files["key"],
        "-certfile", pki_dir / "intermediate.pem", "-outform", "DER", "-out", tmp_path / "sig.der",
    ]  # fmt: skip
    if not detached:
        args.append("-nodetach")
    result = openssl(*args)
    assert result.returncode == 0, result.stderr.decode()
    der = (tmp_path / "sig.der").read_bytes()

    verified = verify_signed_data(der, detached_content=CONTENT if detached else None, ctx=_now_ctx(pki))
    assert verified.encap_content == (None if detached else CONTENT)
    (signer,) = verified.signers
    assert (signer.crypto_valid, signer.reasons) == (True, ())
    assert signer.algorithm == algorithm
    assert signer.verified_addresses == (f"{who}@example.org",)
    assert signer.claimed_signing_time is not None

    other = CONTENT.replace(b"Interop", b"Interip")
    if detached:
        assert verify_signed_data(der, detached_content=other, ctx=_now_ctx(pki)).signers[0].reasons == (
            Reason.BAD_SIGNATURE,
        )


def test_we_verify_openssl_smime_multipart(pki: SmimePKI, pki_dir: Path, tmp_path: Path) -> None:
    """openssl's own S/MIME framing (text mode, canonicalised to CRLF)."""
    alice = pki["alice"]
    (tmp_path / "content").write_bytes(b"Content-Type: text/plain\n\nline one\nline two\n")
    result = openssl(
        "cms", "-sign", "-in", tmp_path / "content", "-signer", alice.files["cert"],
        "-inkey", alice.files["key"], "-out", tmp_path / "signed.eml",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    message = (tmp_path / "signed.eml").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    boundary = re.search(rb'boundary="([^"]+)"', message)
    assert boundary is not None
    delimiter = b"\r\n--" + boundary.group(1)
    parts = message.split(delimiter)
    first = parts[1].removeprefix(b"\r\n")
    sig_body = parts[2].split(b"\r\n\r\n", 1)[1]
    import base64

    der = base64.b64decode(sig_body)
    (signer,) = verify_signed_data(der, detached_content=first, ctx=_now_ctx(pki)).signers
    assert (signer.crypto_valid, signer.reasons) == (True, ())
    assert first == b"Content-Type: text/plain\r\n\r\nline one\r\nline two\r\n"


# --- openssl decrypts what we encrypt -----------------------------------------------------------------
RECIPIENTS = [("alice", True), ("alice", False), ("bob", True), ("erin", True), ("dave", True)]
RECIPIENT_IDS = ["rsa-oaep", "rsa-pkcs1v15", "ecdh-p256", "ecdh-p384", "x25519"]


@pytest.mark.parametrize("authenticated", [True, False], ids=["auth-enveloped", "enveloped"])
@pytest.mark.parametrize(("who", "oaep"), RECIPIENTS, ids=RECIPIENT_IDS)
def test_openssl_decrypts_ours(
    pki: SmimePKI, tmp_path: Path, who: str, oaep: bool, authenticated: bool
) -> None:
    person = pki[who]
    if who == "dave":
        (tmp_path / "probe").write_bytes(b"probe")
        probe = openssl(
            "cms", "-encrypt", "-binary", "-in", tmp_path / "probe", "-outform", "DER",
            "-out", tmp_path / "probe.der", "-aes256", person.files["cert"],
        )  # fmt: skip
        if probe.returncode != 0:
            pytest.skip("this openssl has no X25519 key agreement in CMS (OpenSSL 3.0)")
    der = encrypt_content(CONTENT, [person.cert], authenticated=authenticated, rsa_oaep=oaep)
    (tmp_path / "enc.der").write_bytes(der)
    result = openssl(
        "cms", "-decrypt", "-inform", "DER", "-in", tmp_path / "enc.der",
        "-inkey", person.files["key"], "-recip", person.files["cert"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == CONTENT

    # Through the MIME entity as well.
    smime_type = "authEnveloped-data" if authenticated else "enveloped-data"
    (tmp_path / "enc.p7m").write_bytes(b"MIME-Version: 1.0\r\n" + build_pkcs7_mime(der, smime_type))
    result = openssl(
        "cms", "-decrypt", "-binary", "-in", tmp_path / "enc.p7m",
        "-inkey", person.files["key"], "-recip", person.files["cert"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == CONTENT


def test_openssl_refuses_our_tampered_gcm(pki: SmimePKI, tmp_path: Path) -> None:
    alice = pki["alice"]
    der = bytearray(encrypt_content(CONTENT, [alice.cert]))
    der[-3] ^= 0x01  # inside the mac
    (tmp_path / "enc.der").write_bytes(bytes(der))
    result = openssl(
        "cms", "-decrypt", "-inform", "DER", "-in", tmp_path / "enc.der",
        "-inkey", alice.files["key"], "-recip", alice.files["cert"],
    )  # fmt: skip
    assert result.returncode != 0
    assert CONTENT not in result.stdout


# --- we decrypt what openssl encrypts -----------------------------------------------------------------
OPENSSL_ENCRYPT = [
    ("alice", ["-aes256"], "aes-256-cbc", False),
    ("alice", ["-aes-256-gcm"], "aes-256-gcm", False),
    ("alice", ["-aes-128-gcm"], "aes-128-gcm", False),
    ("alice", ["-aes192"], "aes-192-cbc", False),
    ("alice", ["-des3"], "3des-cbc", True),
    ("alice", ["-aes128", "-keyopt", "rsa_padding_mode:oaep"], "aes-128-cbc", False),
    (
        "alice",
        ["-aes-256-gcm", "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"],
        "aes-256-gcm",
        False,
    ),
    ("bob", ["-aes256"], "aes-256-cbc", False),  # OpenSSL's default: sha1kdf scheme
    ("bob", ["-aes-256-gcm"], "aes-256-gcm", False),
    ("bob", ["-aes256", "-keyopt", "ecdh_kdf_md:sha256"], "aes-256-cbc", False),
    ("bob", ["-aes256", "-keyopt", "ecdh_kdf_md:sha512"], "aes-256-cbc", False),
    ("bob", ["-aes256", "-keyopt", "ecdh_cofactor_mode:1"], "aes-256-cbc", False),
    ("erin", ["-aes-128-gcm", "-keyopt", "ecdh_kdf_md:sha384"], "aes-128-gcm", False),
]


@pytest.mark.parametrize(
    ("who", "options", "cipher", "weak"),
    OPENSSL_ENCRYPT,
    ids=[f"{w}{''.join(o)}" for w, o, _, _ in OPENSSL_ENCRYPT],
)
def test_we_decrypt_openssl(
    pki: SmimePKI, tmp_path: Path, who: str, options: list[str], cipher: str, weak: bool
) -> None:
    person = pki[who]
    (tmp_path / "content").write_bytes(CONTENT)
    result = openssl(
        "cms", "-encrypt", "-binary", "-in", tmp_path / "content", "-outform", "DER",
        "-out", tmp_path / "enc.der", options[0], "-recip", person.files["cert"], *options[1:],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    decrypted = decrypt_content((tmp_path / "enc.der").read_bytes(), [(person.cert, person.key)])
    assert decrypted.content == CONTENT
    assert decrypted.content_cipher == cipher
    assert decrypted.weak_cipher is weak
    assert decrypted.integrity_protected is cipher.endswith("gcm")


def test_we_decrypt_openssl_multi_recipient(pki: SmimePKI, tmp_path: Path) -> None:
    (tmp_path / "content").write_bytes(CONTENT)
    result = openssl(
        "cms", "-encrypt", "-binary", "-in", tmp_path / "content", "-outform", "DER",
        "-out", tmp_path / "enc.der", "-aes-256-gcm",
        pki["alice"].files["cert"], pki["bob"].files["cert"], pki["erin"].files["cert"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    der = (tmp_path / "enc.der").read_bytes()
    for who in ("alice", "bob", "erin"):
        assert decrypt_content(der, [(pki[who].cert, pki[who].key)]).content == CONTENT
