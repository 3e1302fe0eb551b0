"""Interoperability in both directions with four independent OpenPGP
implementations: GnuPG 2.2 (gpg), Sequoia's sqop, GopenPGP's gosop and
PGPainless (pgpainless-cli). Keys: Ed25519/Cv25519 (Sequoia-made ``alice``,
each tool's own) and RSA-3072 (GnuPG-made ``bob_rsa``)."""

from __future__ import annotations

import shutil

import pytest
from pgp_support import GOSOP, PGPAINLESS, SQOP, GnuPG, KeyPair, Sop, ctx_with

from secmail.pgp.decrypt import decrypt
from secmail.pgp.encrypt import encrypt
from secmail.pgp.keys import parse_openpgp_keys
from secmail.pgp.sign import sign_detached
from secmail.pgp.verify import verify_detached, verify_inline
from secmail.verdict import Reason

pytestmark = pytest.mark.interop

DATA = b"Content-Type: text/plain\r\n\r\nInterop: accents \xc3\xa9\xc3\xa0 et fin de ligne CRLF\r\n"


def _need(tool: Sop) -> None:
    if not tool.available():
        pytest.skip(f"{tool.name} is not installed")


@pytest.fixture(scope="module", params=[SQOP, GOSOP], ids=lambda t: t.name)
def sop(request: pytest.FixtureRequest) -> Sop:
    tool: Sop = request.param
    _need(tool)
    return tool


@pytest.fixture(scope="module")
def sop_key(sop: Sop) -> KeyPair:
    tsk = sop("generate-key", f"Tom {sop.name} <tom@{sop.name}.example>")
    cert = sop("extract-cert", input=tsk)
    (parsed,) = parse_openpgp_keys(tsk, None)  # importing the tool's key works
    assert parsed.private_data is not None and parsed.usable_for_signing
    assert parsed.usable_for_encryption
    return KeyPair(parsed.private_data, cert, parsed.key_id, f"tom@{sop.name}.example")


# --- secmail -> tool ------------------------------------------------------


@pytest.mark.parametrize("signer", ["alice", "bob_rsa"])
def test_tool_verifies_secmail_signature(sop: Sop, signer: str, request: pytest.FixtureRequest) -> None:
    pair: KeyPair = request.getfixturevalue(signer)
    sig, _ = sign_detached(DATA, pair.tsk)
    out = sop("verify", "sig", "cert", input=DATA, files={"sig": sig, "cert": pair.cert})
    assert pair.fingerprint.lower() in out.decode().lower()
    with pytest.raises(AssertionError):  # and the tool rejects tampered data
        sop("verify", "sig", "cert", input=DATA + b"x", files={"sig": sig, "cert": pair.cert})


def test_tool_decrypts_secmail_message(sop: Sop, sop_key: KeyPair, alice: KeyPair) -> None:
    msg = encrypt(DATA, [sop_key.cert], signer_tsk=alice.tsk)
    out, verifications = sop.decrypt_verified(sop_key.tsk, alice.cert, msg)
    if sop is GOSOP:
        # gosop turns CRLF into LF on every decryption, its own messages
        # included (checked by hand), although the literal packet is binary.
        assert out == DATA.replace(b"\r\n", b"\n")
    else:
        assert out == DATA
    assert alice.fingerprint.lower() in verifications.decode().lower()


# --- tool -> secmail ------------------------------------------------------


@pytest.mark.parametrize("signer", ["sop_key", "alice", "bob_rsa"])
def test_secmail_verifies_tool_signature(sop: Sop, signer: str, request: pytest.FixtureRequest) -> None:
    pair: KeyPair = request.getfixturevalue(signer)
    sig = sop("sign", "key", input=DATA, files={"key": pair.tsk})
    (res,) = verify_detached(DATA, sig, ctx_with([pair.cert]))
    assert res.crypto_valid and res.reasons == ()
    assert res.fingerprint == pair.fingerprint
    (bad,) = verify_detached(DATA + b" ", sig, ctx_with([pair.cert]))
    assert not bad.crypto_valid and bad.reasons == (Reason.BAD_SIGNATURE,)


@pytest.mark.parametrize("recipient", ["alice", "bob_rsa"])
def test_secmail_decrypts_tool_message(
    sop: Sop, sop_key: KeyPair, recipient: str, request: pytest.FixtureRequest
) -> None:
    pair: KeyPair = request.getfixturevalue(recipient)
    msg = sop(
        "encrypt",
        "--sign-with",
        "key",
        "cert",
        input=DATA,
        files={"key": sop_key.tsk, "cert": pair.cert},
    )
    out = decrypt(msg, [pair.tsk], ctx_with([sop_key.cert]))
    assert out.content == DATA and out.integrity_protected
    (signer,) = out.signers
    assert signer.crypto_valid and signer.fingerprint == sop_key.fingerprint


def test_secmail_verifies_tool_inline_signature(sop: Sop, sop_key: KeyPair) -> None:
    if sop is GOSOP:
        pytest.skip("gosop has no inline-sign subcommand (checked with --help)")
    signed = sop("inline-sign", "key", input=DATA, files={"key": sop_key.tsk})
    (res,), content = verify_inline(signed, ctx_with([sop_key.cert]))
    assert res.crypto_valid and content == DATA


# --- GnuPG ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpg_with_alice(gpg: GnuPG, alice: KeyPair) -> GnuPG:
    gpg.run("--import", input=alice.cert)
    return gpg


@pytest.mark.parametrize("signer", ["alice", "bob_rsa", "gpg_ed"])
def test_gnupg_verifies_secmail_signature(
    gpg_with_alice: GnuPG, signer: str, request: pytest.FixtureRequest
) -> None:
    pair: KeyPair = request.getfixturevalue(signer)
    sig, _ = sign_detached(DATA, pair.tsk)
    files = {"sig": sig}
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for name, content in (("sig", files["sig"]), ("data", DATA)):
            with open(os.path.join(d, name), "wb") as f:
                f.write(content)
        gpg_with_alice.run("--verify", os.path.join(d, "sig"), os.path.join(d, "data"))
        with open(os.path.join(d, "data"), "ab") as f:
            f.write(b"x")
        gpg_with_alice.run("--verify", os.path.join(d, "sig"), os.path.join(d, "data"), check=False)
        bad = gpg_with_alice.run(
            "--status-fd",
            "1",
            "--verify",
            os.path.join(d, "sig"),
            os.path.join(d, "data"),
            check=False,
        )
        assert b"BADSIG" in bad


@pytest.mark.parametrize("recipient", ["gpg_ed", "bob_rsa"])
def test_gnupg_decrypts_secmail_message(
    gpg_with_alice: GnuPG, recipient: str, alice: KeyPair, request: pytest.FixtureRequest
) -> None:
    pair: KeyPair = request.getfixturevalue(recipient)
    msg = encrypt(DATA, [pair.cert], signer_tsk=alice.tsk)
    status = gpg_with_alice.run("--status-fd", "2", "--decrypt", input=msg)
    assert status == DATA


@pytest.mark.parametrize("recipient", ["alice", "bob_rsa"])
def test_secmail_decrypts_gnupg_signed_compressed_message(
    gpg_with_alice: GnuPG, recipient: str, gpg_ed: KeyPair, request: pytest.FixtureRequest
) -> None:
    # GnuPG's default: ENCRYPTED(COMPRESSED(OPS, LITERAL, SIG)).
    pair: KeyPair = request.getfixturevalue(recipient)
    msg = gpg_with_alice.run(
        "-u",
        gpg_ed.fingerprint.upper(),
        "-r",
        pair.fingerprint.upper(),
        "--sign",
        "--encrypt",
        input=DATA,
    )
    out = decrypt(msg, [pair.tsk], ctx_with([gpg_ed.cert]))
    assert out.content == DATA and out.algorithm.startswith("seipdv1-")
    (signer,) = out.signers
    assert signer.crypto_valid and signer.verified_addresses == (gpg_ed.address,)


def test_secmail_verifies_gnupg_detached_signatures(
    gpg_with_alice: GnuPG, gpg_ed: KeyPair, bob_rsa: KeyPair
) -> None:
    for pair in (gpg_ed, bob_rsa):
        sig = gpg_with_alice.run("-u", pair.fingerprint.upper(), "--detach-sign", input=DATA)
        (res,) = verify_detached(DATA, sig, ctx_with([pair.cert]))
        assert res.crypto_valid and res.reasons == ()


# --- PGPainless (JVM: ~1 s a call, so few cases) ----------------------------


@pytest.fixture(scope="module")
def painless_key() -> KeyPair:
    _need(PGPAINLESS)
    if shutil.which("java") is None and shutil.which("pgpainless-cli") is None:
        pytest.skip("pgpainless-cli needs a JVM")
    tsk = PGPAINLESS("generate-key", "Pia <pia@pgpainless.example>")
    (parsed,) = parse_openpgp_keys(tsk, None)
    assert parsed.private_data is not None
    return KeyPair(parsed.private_data, parsed.public_data, parsed.key_id, "pia@pgpainless.example")


def test_pgpainless_both_directions(painless_key: KeyPair, alice: KeyPair, bob_rsa: KeyPair) -> None:
    # PGPainless -> secmail: signed and encrypted to alice and bob (RSA).
    msg = PGPAINLESS(
        "encrypt",
        "--sign-with",
        "key",
        "alice",
        "bob",
        input=DATA,
        files={"key": painless_key.tsk, "alice": alice.cert, "bob": bob_rsa.cert},
    )
    for pair in (alice, bob_rsa):
        out = decrypt(msg, [pair.tsk], ctx_with([painless_key.cert]))
        assert out.content == DATA
        (signer,) = out.signers
        assert signer.crypto_valid and signer.fingerprint == painless_key.fingerprint
    # secmail -> PGPainless: encrypted to Pia, signed by bob (RSA, via GnuPG
    # for the detached case below, Sequoia inside encryption).
    enc = encrypt(DATA, [painless_key.cert], signer_tsk=alice.tsk)
    sig, _ = sign_detached(DATA, bob_rsa.tsk)
    assert PGPAINLESS("decrypt", "key", input=enc, files={"key": painless_key.tsk}) == DATA
    verified = PGPAINLESS("verify", "sig", "cert", input=DATA, files={"sig": sig, "cert": bob_rsa.cert})
    assert bob_rsa.fingerprint.lower() in verified.decode().lower()
