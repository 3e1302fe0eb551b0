"""Algorithms: SHA-1, MD5, RSA under 2048 bits, and RC2/DES/3DES (and the
OpenPGP ciphers of that age) are never GREEN: REASON_WEAK_ALGORITHM. The
policy is data with a name, returned in every verdict (checked by
``adv_support.expect``).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from adv_support import (
    ALICE,
    BOB,
    CRLF,
    EVE,
    MARKER,
    Cast,
    GnuPG,
    V,
    chain_of,
    cms_signed_data,
    cms_signer_info,
    decrypt_rpc,
    expect,
    expect_attack,
    forge_signed,
    headers,
    message,
    multipart_encrypted_pgp,
    pgp_multipart_signed,
    smime_detached_with,
    smime_signed_entity,
    text_part,
    verify_rpc,
)
from cryptography.hazmat.primitives.asymmetric import rsa
from service_support import Client
from testpki import end_entity

from secmail.mime.entity import parse_entity
from secmail.mime.protect import build_payload
from secmail.smime.mime import build_pkcs7_mime
from secmail.v1 import keys_pb2

PAYLOAD = text_part()


# --- S/MIME signatures ------------------------------------------------------------------------


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_smime_weak_digest(academy: Client, cast: Cast, digest: str) -> None:
    si = cms_signer_info(cast.alice.key, cast.alice.cert, PAYLOAD, digest=digest)
    der = cms_signed_data([si], chain_of(cast.alice), digests=[digest])
    v = verify_rpc(academy, message(headers(), smime_detached_with(PAYLOAD, der))).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_WEAK_ALGORITHM], coverage=V.COVERAGE_BODY)
    assert v.signers[0].algorithm == f"rsa-pkcs1v15-{digest}"
    assert list(v.signers[0].verified_addresses) == [ALICE]


def test_smime_rsa_1024_signer(academy: Client, cast: Cast) -> None:
    small = end_entity(
        cast.people.pki.intermediate, ALICE, rsa.generate_private_key(public_exponent=65537, key_size=1024)
    )
    v = verify_rpc(academy, forge_signed(headers(), V.SCHEME_SMIME, small)).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_WEAK_ALGORITHM])


# --- S/MIME content encryption (made by OpenSSL) --------------------------------------------------


def _openssl_encrypt(content: bytes, recipient_pem: bytes, cipher: str) -> bytes:
    legacy = ["-provider", "legacy", "-provider", "default"] if cipher in ("des", "rc2") else []
    with tempfile.TemporaryDirectory(prefix="adv-ossl-") as d:
        Path(d, "in").write_bytes(content)
        Path(d, "r.pem").write_bytes(recipient_pem)
        proc = subprocess.run(
            [
                "openssl",
                "cms",
                "-encrypt",
                *legacy,
                "-binary",
                "-in",
                f"{d}/in",
                "-outform",
                "DER",
                f"-{cipher}",
                f"{d}/r.pem",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
    if proc.returncode != 0:
        pytest.skip(f"openssl cannot encrypt with {cipher}: {proc.stderr.decode(errors='replace')[-200:]}")
    return proc.stdout


def _signed_payload(cast: Cast) -> tuple[bytes, bytes]:
    """eve's signed message (hp="cipher") to alice, whose RSA key OpenSSL
    can encrypt to with any cipher (its ECDH path insists on a matching
    key wrap for 3DES, and refuses DES)."""
    raw = message(headers(from_=f"Eve <{EVE}>", to=f"Alice <{ALICE}>"))
    payload, fields = build_payload(parse_entity(raw), hp="cipher")
    return b"".join(h.raw + CRLF for h in fields), smime_signed_entity(payload, cast.eve)


@pytest.mark.interop
@pytest.mark.parametrize("cipher", ["des3", "des", "rc2"])
def test_smime_weak_content_cipher(academy: Client, cast: Cast, cipher: str) -> None:
    """eve signs, OpenSSL encrypts to alice with an old cipher: the lock and
    the signature are real, the cipher keeps it from GREEN."""
    outer, signed = _signed_payload(cast)
    der = _openssl_encrypt(signed, cast.alice.cert_pem, cipher)
    msg = outer + b"MIME-Version: 1.0\r\n" + build_pkcs7_mime(der, "enveloped-data")
    resp = decrypt_rpc(academy, msg, user=ALICE)
    expect_attack(resp.verdict, banner=V.BANNER_YELLOW, lock=True, reasons=[V.REASON_WEAK_ALGORITHM])
    assert resp.verdict.integrity_protected  # eve's signature covers the plaintext
    assert MARKER in resp.display_message


@pytest.mark.interop
def test_smime_aes_cbc_by_openssl_is_green(academy: Client, cast: Cast) -> None:
    # Control (genuine): the same with AES-256-CBC.
    outer, signed = _signed_payload(cast)
    der = _openssl_encrypt(signed, cast.alice.cert_pem, "aes256")
    msg = outer + b"MIME-Version: 1.0\r\n" + build_pkcs7_mime(der, "enveloped-data")
    expect(decrypt_rpc(academy, msg, user=ALICE).verdict, banner=V.BANNER_GREEN, lock=True)


# --- OpenPGP (made by GnuPG) -----------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("digest", ["SHA1", "MD5"])
def test_pgp_weak_digest(academy: Client, gpg: GnuPG, digest: str) -> None:
    proc = gpg.run(
        "--armor", "--detach-sign", "--local-user", ALICE, "--digest-algo", digest, input=PAYLOAD, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"gpg refuses {digest}: {proc.stderr.decode(errors='replace')[-200:]}")
    v = verify_rpc(
        academy, message(headers(), pgp_multipart_signed(PAYLOAD, proc.stdout, f"pgp-{digest.lower()}"))
    ).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_WEAK_ALGORITHM], coverage=V.COVERAGE_BODY)


@pytest.fixture(scope="module")
def weak_rsa(academy: Client) -> Iterator[tuple[GnuPG, str]]:
    """An RSA-1024 key made by GnuPG, in dan's address book."""
    g = GnuPG()
    address = "weak@ac-besancon.fr"
    g.run("--quick-gen-key", f"Weak <{address}>", "rsa1024", "sign", "never")
    academy.keys.ImportKey(
        keys_pb2.ImportKeyRequest(user="dan@ac-besancon.fr", data=g.run("--armor", "--export").stdout)
    )
    yield g, address
    g.close()


@pytest.mark.interop
def test_pgp_rsa_1024_signer(academy: Client, weak_rsa: tuple[GnuPG, str]) -> None:
    g, address = weak_rsa
    sig = g.run("--armor", "--detach-sign", "--local-user", address, input=PAYLOAD).stdout
    msg = message(headers(from_=f"Weak <{address}>"), pgp_multipart_signed(PAYLOAD, sig))
    v = verify_rpc(academy, msg, user="dan@ac-besancon.fr").verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_WEAK_ALGORITHM], coverage=V.COVERAGE_BODY)


@pytest.mark.interop
@pytest.mark.parametrize("cipher", ["3DES", "CAST5", "IDEA"])
def test_pgp_weak_content_cipher(academy: Client, gpg: GnuPG, cipher: str) -> None:
    """alice signs, GnuPG encrypts to bob with a 64-bit-block cipher."""
    payload, fields = build_payload(parse_entity(message(headers())), hp="cipher")
    proc = gpg.run(
        "--armor",
        "--trust-model",
        "always",
        "--sign",
        "--encrypt",
        "--local-user",
        ALICE,
        "--recipient",
        BOB,
        "--cipher-algo",
        cipher,
        input=payload,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"gpg refuses {cipher}: {proc.stderr.decode(errors='replace')[-200:]}")
    outer = b"".join(h.raw + CRLF for h in fields)
    msg = outer + b"MIME-Version: 1.0\r\n" + multipart_encrypted_pgp(proc.stdout.replace(b"\n", CRLF))
    resp = decrypt_rpc(academy, msg)
    expect_attack(resp.verdict, banner=V.BANNER_YELLOW, lock=True, reasons=[V.REASON_WEAK_ALGORITHM])
    assert MARKER in resp.display_message


@pytest.mark.interop
def test_pgp_aes_by_gnupg_is_green(academy: Client, gpg: GnuPG) -> None:
    # Control (genuine): the same with AES-256 (SEIPDv1 + MDC, compressed).
    payload, fields = build_payload(parse_entity(message(headers())), hp="cipher")
    armored = gpg.run(
        "--armor",
        "--trust-model",
        "always",
        "--sign",
        "--encrypt",
        "--local-user",
        ALICE,
        "--recipient",
        BOB,
        "--cipher-algo",
        "AES256",
        input=payload,
    ).stdout
    outer = b"".join(h.raw + CRLF for h in fields)
    resp = decrypt_rpc(
        academy, outer + b"MIME-Version: 1.0\r\n" + multipart_encrypted_pgp(armored.replace(b"\n", CRLF))
    )
    expect(resp.verdict, banner=V.BANNER_GREEN, lock=True)


def test_policy_is_named_in_every_verdict(academy: Client) -> None:
    v = verify_rpc(academy, message()).verdict
    assert v.policy == "secmail-default-2026"
    assert v.validation_time.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)
