from __future__ import annotations

from datetime import UTC, datetime, timedelta

import gnupg_reference as _gnupg
import pytest
from pgp_support import GnuPG, KeyPair, ctx_with

from secmail.errors import ErrorReason, KeyNotFoundError, SecmailError
from secmail.pgp import _backend, keys
from secmail.pgp import packets as pk
from secmail.pgp.sign import sign_detached
from secmail.pgp.verify import verify_detached, verify_inline
from secmail.verdict import Reason, SignatureStatus

DATA = b"Content-Type: text/plain\r\n\r\nBonjour,\r\nle conseil de classe est avance.\r\n"


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize("fixture", ["alice", "carol_v6", "dave_p256", "erin_448", "bob_rsa"])
def test_sign_then_verify(fixture: str, request: pytest.FixtureRequest) -> None:
    pair: KeyPair = request.getfixturevalue(fixture)
    armored, micalg = sign_detached(DATA, pair.tsk)
    assert armored.startswith(b"-----BEGIN PGP SIGNATURE-----")
    assert micalg.startswith("pgp-sha")
    (packet,) = pk.read_packets(pk.to_binary(armored))
    sig = pk.parse_signature(packet)
    assert pk.MICALG_NAMES[sig.hash_algorithm] == micalg
    (res,) = verify_detached(DATA, armored, ctx_with([pair.cert]))
    assert res.crypto_valid and res.reasons == ()
    assert res.status is SignatureStatus.VALID
    assert res.fingerprint == pair.fingerprint
    assert res.verified_addresses == (pair.address,)
    assert res.claimed_signing_time is not None
    assert res.claimed_key_id == sig.issuer_fingerprint


@pytest.mark.parametrize("fixture", ["bob_rsa", "rsa_sequoia"])
def test_rsa_signature_is_made_by_openssl_with_sha256(
    fixture: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair: KeyPair = request.getfixturevalue(fixture)

    def no_gnupg() -> None:
        raise AssertionError("GnuPG must not be used to sign")

    monkeypatch.setattr(_gnupg, "_home", no_gnupg)
    armored, micalg = sign_detached(DATA, pair.tsk)
    (packet,) = pk.read_packets(pk.to_binary(armored))
    sig = pk.parse_signature(packet)
    assert micalg == "pgp-sha256" and sig.hash_algorithm == 8
    assert sig.version == 4 and sig.sig_type == pk.SIG_BINARY and sig.pk_algorithm in pk.RSA_ALGOS
    # RFC 9580 §5.2.3: creation time and issuer fingerprint hashed, the
    # issuer key ID (a hint) unhashed.
    hashed = {sp.type for sp in sig.subpackets if sp.hashed}
    unhashed = {sp.type for sp in sig.subpackets if not sp.hashed}
    assert hashed == {pk.SP_CREATION_TIME, pk.SP_ISSUER_FPR} and unhashed == {pk.SP_ISSUER}
    assert not sig.has_unknown_critical
    created = sig.created
    assert created is not None and abs((created - _now()).total_seconds()) < 60
    # secmail's own verifier agrees with Sequoia's (checked in sign_detached).
    (signer,) = keys.load_cert(pair.tsk, _now()).signing_keys()
    assert sig.issuer_fingerprint == signer.key.fingerprint and sig.issuer_key_id == signer.key.key_id
    assert keys.verify_signature(sig, signer.key, DATA)
    assert not keys.verify_signature(sig, signer.key, DATA + b"x")


def test_faulty_rsa_signature_never_leaves(bob_rsa: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong RSA result (a fault, which could leak the key) is caught by
    the Sequoia check before the signature is returned."""
    real = keys.rsa_private_key

    class Faulty:
        def __init__(self, key: object) -> None:
            self._key = key

        def sign(self, digest: bytes, *args: object) -> bytes:
            good: bytes = self._key.sign(digest, *args)  # type: ignore[attr-defined]
            return good[:-1] + bytes([good[-1] ^ 1])

    monkeypatch.setattr(keys, "rsa_private_key", lambda k: Faulty(real(k)))
    with pytest.raises(SecmailError, match="does not verify"):
        sign_detached(DATA, bob_rsa.tsk)


def test_bad_signature(alice: KeyPair) -> None:
    armored, _ = sign_detached(DATA, alice.tsk)
    (res,) = verify_detached(DATA + b"tampered", armored, ctx_with([alice.cert]))
    assert not res.crypto_valid
    assert res.reasons == (Reason.BAD_SIGNATURE,)
    assert res.status is SignatureStatus.INVALID
    assert res.verified_addresses == ()


def test_unknown_signer(alice: KeyPair, bob_rsa: KeyPair) -> None:
    armored, _ = sign_detached(DATA, alice.tsk)
    (res,) = verify_detached(DATA, armored, ctx_with([]))
    assert not res.crypto_valid and res.reasons == (Reason.SIGNER_KEY_MISSING,)
    assert res.claimed_key_id
    # A candidate that does not hold the issuing key is no better.
    (res2,) = verify_detached(DATA, armored, ctx_with([bob_rsa.cert]))
    assert not res2.crypto_valid and res2.reasons == (Reason.SIGNER_KEY_MISSING,)


def test_unauthenticated_candidate_is_untrusted(alice: KeyPair) -> None:
    armored, _ = sign_detached(DATA, alice.tsk)
    (res,) = verify_detached(DATA, armored, ctx_with([alice.cert], authenticated=False))
    assert res.crypto_valid and res.reasons == (Reason.UNTRUSTED_CHAIN,)


def test_revoked_signer() -> None:
    tsk = _backend.generate_tsk(["Rev <rev@example.org>"])
    armored, _ = sign_detached(DATA, tsk)
    revoked = _backend.revoke_cert(tsk)
    (res,) = verify_detached(DATA, armored, ctx_with([revoked]))
    assert Reason.CERT_REVOKED in res.reasons
    assert res.status is SignatureStatus.INVALID
    # And a revoked key never signs.
    with pytest.raises(KeyNotFoundError) as exc:
        sign_detached(DATA, tsk + revoked[len(_backend.public_cert(tsk)) :])
    assert exc.value.reason is ErrorReason.KEY_UNUSABLE


def test_expired_signer_and_refusal_to_sign() -> None:
    tsk = _backend.generate_tsk(["Exp <exp@example.org>"], validity_seconds=3600)
    cert = _backend.public_cert(tsk)
    armored, _ = sign_detached(DATA, tsk)
    later = _now() + timedelta(hours=2)
    (res,) = verify_detached(DATA, armored, ctx_with([cert], at=later))
    # Sequoia judges the key at signature time (valid then); secmail adds
    # that it has expired at the validation time.
    assert res.crypto_valid and res.reasons == (Reason.CERT_EXPIRED,)
    with pytest.raises(KeyNotFoundError) as exc:
        sign_detached(DATA, tsk, at=later)
    assert exc.value.reason is ErrorReason.KEY_UNUSABLE


def test_future_signature_is_suspicious(alice: KeyPair) -> None:
    armored, _ = sign_detached(DATA, alice.tsk)
    (res,) = verify_detached(DATA, armored, ctx_with([alice.cert], at=_now() - timedelta(days=2)))
    assert Reason.SIGNING_TIME_SUSPICIOUS in res.reasons


def test_sha1_signature_is_weak(gpg: GnuPG, gpg_ed: KeyPair) -> None:
    sig = gpg.run("--digest-algo", "SHA1", "-u", gpg_ed.fingerprint.upper(), "--detach-sign", input=DATA)
    (res,) = verify_detached(DATA, sig, ctx_with([gpg_ed.cert]))
    assert Reason.WEAK_ALGORITHM in res.reasons
    assert res.status is not SignatureStatus.VALID


def test_every_signature_is_reported(alice: KeyPair, carol_v6: KeyPair) -> None:
    a, _ = sign_detached(DATA, alice.tsk)
    c, _ = sign_detached(DATA, carol_v6.tsk)
    block = pk.to_binary(a) + pk.to_binary(c)
    results = verify_detached(DATA, block, ctx_with([alice.cert]))
    assert [r.crypto_valid for r in results] == [True, False]
    assert results[1].reasons == (Reason.SIGNER_KEY_MISSING,)


def test_empty_signature_block() -> None:
    assert verify_detached(DATA, pk.encode_packet(pk.TAG_MARKER, b"PGP"), ctx_with([])) == ()


def test_inline_and_cleartext(alice: KeyPair) -> None:
    inline = _backend.inline_sign(alice.tsk, b"hello\n")
    (res,), content = verify_inline(inline, ctx_with([alice.cert]))
    assert res.crypto_valid and content == b"hello\n"
    clear = _backend.inline_sign(alice.tsk, b"hello  \n- world\n", cleartext=True)
    (res2,), text = verify_inline(clear, ctx_with([alice.cert]))
    assert res2.crypto_valid and res2.verified_addresses == (alice.address,)
    assert text.startswith(b"hello\r\n- world")
    tampered = clear.replace(b"world", b"WORLD")
    (res3,), _ = verify_inline(tampered, ctx_with([alice.cert]))
    assert not res3.crypto_valid and res3.reasons == (Reason.BAD_SIGNATURE,)


def test_gnupg_compressed_inline_signature(gpg: GnuPG, gpg_ed: KeyPair) -> None:
    # gpg --sign compresses: COMPRESSED(OPS, LITERAL, SIG); pysequoia's own
    # verify() rejects that layering, secmail unwraps it (bounded).
    signed = gpg.run("-u", gpg_ed.fingerprint.upper(), "--sign", input=b"compressed hello\n")
    assert pk.read_packets(signed)[0].tag == pk.TAG_COMPRESSED
    (res,), content = verify_inline(signed, ctx_with([gpg_ed.cert]))
    assert res.crypto_valid and content == b"compressed hello\n"


@pytest.mark.parametrize("mode", ["binary", "text", "text-lf"])
def test_future_signing_time_is_suspicious_not_bad(gpg: GnuPG, gpg_ed: KeyPair, mode: str) -> None:
    """Sequoia refuses a signature dated after the wall clock; secmail checks
    its mathematics itself then, and reports the date (as S/MIME does)."""
    future = (_now() + timedelta(days=3)).strftime("%Y%m%dT%H%M%S")
    data = DATA.replace(b"\r\n", b"\n") if mode == "text-lf" else DATA
    extra = ["--textmode"] if mode.startswith("text") else []
    sig = gpg.run(
        "--faked-system-time", future, *extra, "-u", gpg_ed.fingerprint.upper(), "--detach-sign", input=data
    )
    assert pk.parse_signature(pk.read_packets(sig)[0]).sig_type == (pk.SIG_TEXT if extra else pk.SIG_BINARY)
    # A PGP/MIME entity is CRLF; an inline text may come with LF.
    (res,) = verify_detached(data, sig, ctx_with([gpg_ed.cert]))
    assert res.crypto_valid and res.reasons == (Reason.SIGNING_TIME_SUSPICIOUS,)
    assert res.verified_addresses == (gpg_ed.address,)
    (bad,) = verify_detached(data.replace(b"avance", b"annule"), sig, ctx_with([gpg_ed.cert]))
    assert not bad.crypto_valid and Reason.BAD_SIGNATURE in bad.reasons
