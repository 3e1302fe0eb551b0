from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from pgp_support import GnuPG, KeyPair, ctx_with, flip_byte

from secmail.errors import (
    DecryptionError,
    IntegrityError,
    MessageTooLargeError,
    RecipientKeyMissingError,
)
from secmail.pgp import _backend
from secmail.pgp import packets as pk
from secmail.pgp.decrypt import decrypt
from secmail.pgp.encrypt import encrypt

SECRET = b"Content-Type: text/plain\r\n\r\nLes notes du bac blanc sont en piece jointe.\r\n"


def _layout(armored: bytes) -> tuple[list[int], int]:
    """(PKESK versions, SEIPD version)."""
    packets = pk.read_packets(pk.to_binary(armored))
    pkesks = [p.body[0] for p in packets if p.tag == pk.TAG_PKESK]
    (seipd,) = [p for p in packets if p.tag == pk.TAG_SEIPD]
    return pkesks, seipd.body[0]


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("alice", "seipdv2-ocb-aes256"),
        ("carol_v6", "seipdv2-ocb-aes256"),
        ("dave_p256", "seipdv2-ocb-aes256"),
        ("erin_448", "seipdv2-ocb-aes256"),
        ("gpg_ed", "seipdv1-aes256"),
        ("bob_rsa", "seipdv1-aes256"),
    ],
)
def test_round_trip(fixture: str, expected: str, request: pytest.FixtureRequest) -> None:
    pair: KeyPair = request.getfixturevalue(fixture)
    msg = encrypt(SECRET, [pair.cert])
    assert msg.startswith(b"-----BEGIN PGP MESSAGE-----")
    out = decrypt(msg, [pair.tsk], ctx_with([]))
    assert out.content == SECRET
    assert out.integrity_protected and out.signers == ()
    assert out.algorithm == expected
    assert "Les notes" not in repr(out)


def test_seipdv2_only_when_every_recipient_supports_it(
    alice: KeyPair, carol_v6: KeyPair, gpg_ed: KeyPair
) -> None:
    assert _layout(encrypt(SECRET, [alice.cert, carol_v6.cert])) == ([6, 6], 2)
    # gpg_ed's certificate (GnuPG 2.2) advertises SEIPDv1 only.
    assert _layout(encrypt(SECRET, [alice.cert, gpg_ed.cert])) == ([3, 3], 1)


def test_signed_and_encrypted(alice: KeyPair, carol_v6: KeyPair) -> None:
    msg = encrypt(SECRET, [carol_v6.cert], signer_tsk=alice.tsk)
    out = decrypt(msg, [carol_v6.tsk], ctx_with([alice.cert]))
    (signer,) = out.signers
    assert signer.crypto_valid and signer.reasons == ()
    assert signer.fingerprint == alice.fingerprint
    assert signer.verified_addresses == (alice.address,)
    # Without the signer's certificate the signature is reported, not lost.
    (missing,) = decrypt(msg, [carol_v6.tsk], ctx_with([])).signers
    assert not missing.crypto_valid


def test_refuses_revoked_expired_and_forged_recipients(alice: KeyPair) -> None:
    revoked_tsk = _backend.generate_tsk(["R <r@example.org>"])
    revoked = _backend.revoke_cert(revoked_tsk)
    with pytest.raises(RecipientKeyMissingError) as exc:
        encrypt(SECRET, [alice.cert, revoked])
    assert exc.value.missing == (pk.parse_key(pk.read_packets(revoked)[0]).fingerprint,)

    expiring = _backend.public_cert(_backend.generate_tsk(["E <e@example.org>"], validity_seconds=3600))
    encrypt(SECRET, [expiring])  # fine now
    with pytest.raises(RecipientKeyMissingError):
        encrypt(SECRET, [expiring], at=datetime.now(UTC) + timedelta(hours=2))

    packets = pk.read_packets(alice.cert)
    last = max(i for i, p in enumerate(packets) if p.tag == pk.TAG_SIGNATURE)
    forged = b"".join(p.raw for p in packets[:last]) + flip_byte(
        packets[last].raw, len(packets[last].raw) - 3
    )
    with pytest.raises(RecipientKeyMissingError):
        encrypt(SECRET, [forged])


def _rebuild(armored: bytes, *, tag: int | None = None, body_fn: object = None) -> bytes:
    out = b""
    for p in pk.read_packets(pk.to_binary(armored)):
        if p.tag == pk.TAG_SEIPD:
            body = body_fn(p.body) if callable(body_fn) else p.body
            out += pk.encode_packet(tag or p.tag, body)
        else:
            out += p.raw
    return out


@pytest.fixture(scope="module")
def v1_message(gpg_ed: KeyPair) -> bytes:
    msg = encrypt(SECRET, [gpg_ed.cert])
    assert _layout(msg)[1] == 1
    return msg


def _assert_no_plaintext(exc: BaseException) -> None:
    text = repr(exc) + str(exc) + repr(exc.args)
    assert "bac blanc" not in text


def test_sed_packet_is_refused(v1_message: bytes, gpg_ed: KeyPair) -> None:
    sed = _rebuild(v1_message, tag=pk.TAG_SED, body_fn=lambda b: b[1:])
    with pytest.raises(IntegrityError) as exc:
        decrypt(sed, [gpg_ed.tsk], ctx_with([]))
    _assert_no_plaintext(exc.value)


def test_mdc_stripped_is_refused(v1_message: bytes, gpg_ed: KeyPair) -> None:
    stripped = _rebuild(v1_message, body_fn=lambda b: b[:-22])
    with pytest.raises(IntegrityError) as exc:
        decrypt(stripped, [gpg_ed.tsk], ctx_with([]))
    _assert_no_plaintext(exc.value)


@pytest.mark.parametrize("offset", [30, -30, -2])
def test_v1_bit_flip_is_refused(v1_message: bytes, gpg_ed: KeyPair, offset: int) -> None:
    flipped = _rebuild(v1_message, body_fn=lambda b: flip_byte(b, offset % len(b)))
    with pytest.raises(IntegrityError) as exc:
        decrypt(flipped, [gpg_ed.tsk], ctx_with([]))
    _assert_no_plaintext(exc.value)


@pytest.mark.parametrize("mutation", ["flip-chunk", "flip-final-tag", "truncate"])
def test_v2_tampering_is_refused(alice: KeyPair, mutation: str) -> None:
    msg = encrypt(SECRET, [alice.cert])
    assert _layout(msg)[1] == 2
    mutate = {
        "flip-chunk": lambda b: flip_byte(b, 40),
        "flip-final-tag": lambda b: flip_byte(b, len(b) - 1),
        "truncate": lambda b: b[:-16],
    }[mutation]
    with pytest.raises(IntegrityError) as exc:
        decrypt(_rebuild(msg, body_fn=mutate), [alice.tsk], ctx_with([]))
    _assert_no_plaintext(exc.value)


def test_wrong_key_is_decryption_error_not_integrity(alice: KeyPair, carol_v6: KeyPair) -> None:
    msg = encrypt(SECRET, [alice.cert])
    with pytest.raises(DecryptionError) as exc:
        decrypt(msg, [carol_v6.tsk], ctx_with([]))
    assert not isinstance(exc.value, IntegrityError)


def test_compression_bomb_is_bounded(gpg: GnuPG, gpg_ed: KeyPair) -> None:
    gpg.run("--import", input=gpg_ed.cert)
    bomb = gpg.run(
        "--compress-algo",
        "zlib",
        "-z",
        "9",
        "-r",
        gpg_ed.fingerprint.upper(),
        "--encrypt",
        input=bytes(48 * 2**20),
    )
    assert len(bomb) < 200_000  # 48 MiB of zeros compress ~1000:1
    tracemalloc.start()
    try:
        with pytest.raises(MessageTooLargeError):
            decrypt(bomb, [gpg_ed.tsk], ctx_with([]), max_output=2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # the 48 MiB were never inflated
    small = gpg.run("-r", gpg_ed.fingerprint.upper(), "--encrypt", input=SECRET * 100)
    assert decrypt(small, [gpg_ed.tsk], ctx_with([])).content == SECRET * 100


def test_not_an_encrypted_message(alice: KeyPair) -> None:
    from secmail.errors import InputError

    with pytest.raises(InputError):
        decrypt(_backend.inline_sign(alice.tsk, b"x"), [alice.tsk], ctx_with([]))
