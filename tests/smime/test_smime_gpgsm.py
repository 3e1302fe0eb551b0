"""Interop with GnuPG's gpgsm, both directions.

The test PKI goes into a throw-away GNUPGHOME: the root is trusted through
trustlist.txt, CRL checks are off (no network), Alice's RSA key comes in as
a PKCS#12 file (3DES/SHA-1 PBE, the form gpgsm 2.2 reads) with a
passphrase given on a file descriptor. gpg-agent is killed at teardown.

gpgsm 2.2 limits, each skipped with its reason only when the tool is 2.2:
no RSAES-OAEP decryption, no AuthEnvelopedData, no PKCS#12 import of EC
keys (it crashes), and no encryption to EC (key agreement) certificates.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from gpgsm_p12 import import_into_gpgsm
from smime_pki import SIGNING_TIME, SmimePKI

from secmail.context import TrustContext, VerifyContext
from secmail.policy import DEFAULT_POLICY
from secmail.smime.envelope import decrypt_content, encrypt_content
from secmail.smime.sign import sign_content
from secmail.smime.verify import verify_signed_data
from secmail.verdict import Reason

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("gpgsm") is None, reason="gpgsm is not installed"),
]

CONTENT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour de gpgsm.\r\n"
PASSPHRASE = "secmail-test"


@dataclass
class Gpgsm:
    home: Path
    env: dict[str, str]
    version: tuple[int, ...]

    def run(self, *args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["gpgsm", "--batch", *map(str, args)],
            input=stdin,
            capture_output=True,
            env=self.env,
            timeout=60,
            check=False,
        )

    def run_with_passphrase(self, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
        return self.run(
            "--pinentry-mode", "loopback", "--passphrase-fd", "0", *args, stdin=PASSPHRASE.encode() + b"\n"
        )

    @property
    def is_2_2(self) -> bool:
        return self.version[:2] <= (2, 2)


def _version() -> tuple[int, ...]:
    out = subprocess.run(["gpgsm", "--version"], capture_output=True, check=True).stdout.decode()
    match = re.search(r"gpgsm \(GnuPG\) (\d+)\.(\d+)\.(\d+)", out)
    assert match is not None, out
    return tuple(int(x) for x in match.groups())


@pytest.fixture(scope="module")
def gpgsm(pki: SmimePKI, pki_dir: Path) -> Iterator[Gpgsm]:
    # A short path: gpg-agent's socket path must fit in sun_path.
    home = Path(tempfile.mkdtemp(prefix="smime-gs-", dir="/tmp"))
    home.chmod(0o700)
    (home / "gpgsm.conf").write_text("disable-crl-checks\n")
    (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    root_fpr = pki.root.fingerprint(hashes.SHA1()).hex().upper()
    (home / "trustlist.txt").write_text(":".join(re.findall("..", root_fpr)) + " S\n")
    env = {**os.environ, "GNUPGHOME": str(home)}
    tool = Gpgsm(home, env, _version())
    try:
        imported = tool.run("--import", pki_dir / "root.pem", pki_dir / "intermediate.pem")
        assert imported.returncode == 0, imported.stderr.decode()
        alice = pki["alice"]
        imported = import_into_gpgsm(
            lambda path: tool.run_with_passphrase("--import", path),
            alice.key,  # type: ignore[arg-type]
            alice.cert,
            PASSPHRASE,
            home / "alice.p12",
        )
        assert imported.returncode == 0, imported.stderr.decode()
        assert b"secret keys imported: 1" in imported.stderr
        yield tool
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _now_ctx(pki: SmimePKI) -> VerifyContext:
    """gpgsm stamps the real time as signingTime: judge at the real time."""
    return VerifyContext(
        at=datetime.now(UTC),
        policy=DEFAULT_POLICY,
        trust=TrustContext(anchors=(pki.root,), intermediates=(pki.intermediate,)),
    )


# --- gpgsm checks what we produce ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("who", "digest", "pss", "detached"),
    [
        ("alice", "sha256", False, True),
        ("alice", "sha512", True, True),
        ("alice", "sha256", False, False),
        ("bob", "sha256", False, True),
        ("erin", "sha384", False, True),
    ],
    ids=["rsa-detached", "rsa-pss-detached", "rsa-opaque", "ecdsa-p256-detached", "ecdsa-p384-detached"],
)
def test_gpgsm_verifies_ours(
    gpgsm: Gpgsm, pki: SmimePKI, tmp_path: Path, who: str, digest: str, pss: bool, detached: bool
) -> None:
    person = pki[who]
    der = sign_content(
        CONTENT,
        private_key=person.key,
        cert=person.cert,
        chain=pki.chain,
        digest=digest,
        rsa_pss=pss,
        detached=detached,
        signing_time=SIGNING_TIME,
    )
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "content").write_bytes(CONTENT)
    out = tmp_path / "out"
    args: list[str | Path] = ["--output", out, "--verify", tmp_path / "sig.der"]
    if detached:
        args.append(tmp_path / "content")
    result = gpgsm.run(*args)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Good signature" in result.stderr
    assert person.email.encode() in result.stderr
    if not detached:
        assert out.read_bytes() == CONTENT
    else:
        (tmp_path / "content").write_bytes(CONTENT.replace(b"Bonjour", b"Bonsoir"))
        bad = gpgsm.run(*args)
        assert bad.returncode != 0
        assert b"Good signature" not in bad.stderr


@pytest.mark.parametrize(
    ("authenticated", "oaep"),
    [(False, False), (False, True), (True, False)],
    ids=["enveloped-rsa-pkcs1v15", "enveloped-rsa-oaep", "auth-enveloped-gcm"],
)
def test_gpgsm_decrypts_ours(
    gpgsm: Gpgsm, pki: SmimePKI, tmp_path: Path, authenticated: bool, oaep: bool
) -> None:
    der = encrypt_content(CONTENT, [pki["alice"].cert], authenticated=authenticated, rsa_oaep=oaep)
    (tmp_path / "enc.der").write_bytes(der)
    result = gpgsm.run_with_passphrase("--decrypt", tmp_path / "enc.der")
    if result.returncode != 0 and gpgsm.is_2_2 and (oaep or authenticated):
        pytest.skip(
            "gpgsm 2.2 cannot decrypt "
            + ("AuthEnvelopedData (AES-GCM)" if authenticated else "RSAES-OAEP key transport")
        )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == CONTENT


def test_gpgsm_cannot_decrypt_for_someone_else(gpgsm: Gpgsm, pki: SmimePKI, tmp_path: Path) -> None:
    """The decryption above is real: a message to Bob alone stays closed."""
    (tmp_path / "enc.der").write_bytes(encrypt_content(CONTENT, [pki["bob"].cert], authenticated=False))
    result = gpgsm.run_with_passphrase("--decrypt", tmp_path / "enc.der")
    assert result.returncode != 0
    assert CONTENT not in result.stdout


# --- we check what gpgsm produces ----------------------------------------------------------------------
@pytest.mark.parametrize("detached", [True, False], ids=["detach-sign", "sign"])
def test_we_verify_gpgsm_signatures(gpgsm: Gpgsm, pki: SmimePKI, tmp_path: Path, detached: bool) -> None:
    (tmp_path / "content").write_bytes(CONTENT)
    mode = "--detach-sign" if detached else "--sign"
    result = gpgsm.run_with_passphrase(
        "-u", pki["alice"].email, mode, "-o", tmp_path / "sig.der", tmp_path / "content"
    )
    assert result.returncode == 0, result.stderr.decode()
    der = (tmp_path / "sig.der").read_bytes()
    assert der[:2] == b"\x30\x80"  # gpgsm writes BER with indefinite lengths

    verified = verify_signed_data(der, detached_content=CONTENT if detached else None, ctx=_now_ctx(pki))
    assert verified.encap_content == (None if detached else CONTENT)
    (signer,) = verified.signers
    assert (signer.crypto_valid, signer.reasons) == (True, ())
    assert signer.fingerprint == pki["alice"].cert.fingerprint(hashes.SHA256()).hex()
    assert signer.verified_addresses == ("alice@example.org",)
    if detached:
        tampered = verify_signed_data(der, detached_content=CONTENT + b" ", ctx=_now_ctx(pki))
        assert tampered.signers[0].reasons == (Reason.BAD_SIGNATURE,)


def test_we_decrypt_gpgsm(gpgsm: Gpgsm, pki: SmimePKI, tmp_path: Path) -> None:
    (tmp_path / "content").write_bytes(CONTENT)
    alice = pki["alice"]
    result = gpgsm.run("-r", alice.email, "--encrypt", "-o", tmp_path / "enc.der", tmp_path / "content")
    assert result.returncode == 0, result.stderr.decode()
    decrypted = decrypt_content((tmp_path / "enc.der").read_bytes(), [(alice.cert, alice.key)])
    assert decrypted.content == CONTENT
    assert decrypted.integrity_protected is False


def test_gpgsm_encrypt_to_ec_recipient(gpgsm: Gpgsm, pki: SmimePKI, tmp_path: Path) -> None:
    (tmp_path / "content").write_bytes(CONTENT)
    imported = gpgsm.run("--import", pki["bob"].files["cert"])
    assert imported.returncode == 0, imported.stderr.decode()
    result = gpgsm.run("-r", pki["bob"].email, "--encrypt", "-o", tmp_path / "enc.der", tmp_path / "content")
    if result.returncode != 0 and gpgsm.is_2_2:
        pytest.skip("gpgsm 2.2 does not encrypt to EC (key agreement) certificates")
    assert result.returncode == 0, result.stderr.decode()
    bob = pki["bob"]
    assert decrypt_content((tmp_path / "enc.der").read_bytes(), [(bob.cert, bob.key)]).content == CONTENT
