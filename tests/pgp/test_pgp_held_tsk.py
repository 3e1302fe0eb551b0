"""What the OpenPGP path keeps between requests, and the shortcuts on its
hot paths: ``keys.HeldTSK`` (a TSK the service holds, with its parse, the
engine's signer and OpenSSL key objects), ``keys.has_key`` (which
candidate certificates a verifier judges), the armor decoder, the CRLF
conversion of armored output, and the memoised User ID parse.

Each must give exactly what the plain path gives; what is judged at a time
is still judged at each call's time; nothing secret is shown or kept
outside the HeldTSK.
"""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from pgp_support import KeyPair, ctx_with

from secmail.errors import InputError, KeyNotFoundError
from secmail.mime.entity import canonicalize
from secmail.pgp import _backend, keys, sign
from secmail.pgp import mime as pgp_mime
from secmail.pgp import packets as pk
from secmail.pgp.decrypt import decrypt
from secmail.pgp.encrypt import encrypt
from secmail.pgp.verify import verify_detached

DATA = b"Content-Type: text/plain\r\n\r\nConseil de classe jeudi.\r\n"
ALL = ["alice", "carol_v6", "dave_p256", "erin_448", "bob_rsa", "gpg_ed"]


def _now() -> datetime:
    return datetime.now(UTC)


def _counting(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    calls: list[int] = []
    real: Callable[..., object] = getattr(module, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


# --- HeldTSK: the same answers ---------------------------------------------------


@pytest.mark.parametrize("fixture", ALL)
def test_a_held_tsk_is_judged_as_its_bytes(fixture: str, request: pytest.FixtureRequest) -> None:
    pair: KeyPair = request.getfixturevalue(fixture)
    held = keys.HeldTSK(pair.tsk)
    assert held == pair.tsk and hash(held) == hash(pair.tsk)
    assert keys._skeletons(held) == keys._skeletons(pair.tsk)
    created = keys.load_cert(pair.tsk, _now()).primary.key.created
    for at in (_now(), created - timedelta(days=1), _now() + timedelta(days=3650)):
        mine, plain = keys.load_cert(held, at), keys.load_cert(pair.tsk, at)
        assert mine.problems == plain.problems
        assert [k.key.fingerprint for k in mine.signing_keys()] == [
            k.key.fingerprint for k in plain.signing_keys()
        ]
        assert [k.key.fingerprint for k in mine.encryption_keys()] == [
            k.key.fingerprint for k in plain.encryption_keys()
        ]


@pytest.mark.parametrize("fixture", ALL)
def test_a_held_tsk_signs_and_decrypts_as_its_bytes(fixture: str, request: pytest.FixtureRequest) -> None:
    pair: KeyPair = request.getfixturevalue(fixture)
    held = keys.HeldTSK(pair.tsk)
    for tsk in (held, held, pair.tsk):  # the second time with what the first kept
        armored, micalg = sign.sign_detached(DATA, tsk)
        (result,) = verify_detached(DATA, armored, ctx_with([pair.cert]))
        assert result.crypto_valid and result.reasons == () and result.fingerprint == pair.fingerprint
        assert armored.startswith(b"-----BEGIN PGP SIGNATURE-----\n") and b"\r" not in armored
        assert micalg == sign.sign_detached(DATA, pair.tsk)[1]
    message = encrypt(DATA, [pair.cert], signer_tsk=held)
    for tsk in (held, held, pair.tsk):
        out = decrypt(message, [tsk], ctx_with([pair.cert]))
        assert out.content == DATA
        assert [s.reasons for s in out.signers] == [()] and out.signers[0].crypto_valid


def test_a_held_tsk_keeps_its_parse_signer_and_key_objects(
    alice: KeyPair, bob_rsa: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses = _counting(monkeypatch, keys, "_tsk_skeletons")
    signers = _counting(monkeypatch, _backend, "engine_signer")
    held = keys.HeldTSK(alice.tsk)
    for _ in range(3):
        sign.sign_detached(DATA, held)
        decrypt(encrypt(DATA, [alice.cert]), [held], ctx_with([]))
    assert (len(parses), len(signers)) == (1, 1)
    for _ in range(2):
        sign.sign_detached(DATA, alice.tsk)
    assert (len(parses), len(signers)) == (3, 3)  # plain bytes: every time
    # RSA: OpenSSL's key object, once per key packet (signing primary,
    # decryption subkey).
    rsa_loads = _counting(monkeypatch, keys, "rsa_private_key")
    held_rsa = keys.HeldTSK(bob_rsa.tsk)
    for _ in range(3):
        sign.sign_detached(DATA, held_rsa)
        decrypt(encrypt(DATA, [bob_rsa.cert]), [held_rsa], ctx_with([]))
    assert len(rsa_loads) == 2
    sign.sign_detached(DATA, bob_rsa.tsk)
    assert len(rsa_loads) == 3


def test_a_held_tsk_is_still_judged_at_each_time() -> None:
    """A kept signer does not keep an expired key signing."""
    tsk = _backend.generate_tsk(["Short <short@example.org>"], validity_seconds=3600)
    held = keys.HeldTSK(tsk)
    sign.sign_detached(DATA, held, at=_now())
    assert held._signers
    for tsk_bytes in (held, tsk):
        with pytest.raises(KeyNotFoundError, match="cannot sign"):
            sign.sign_detached(DATA, tsk_bytes, at=_now() + timedelta(hours=2))
    # Decryption goes on with an expired key (old mail stays readable),
    # held or not.
    cert = _backend.public_cert(tsk)
    message = encrypt(DATA, [cert])
    later = ctx_with([], at=_now() + timedelta(hours=2))
    assert decrypt(message, [held], later).content == decrypt(message, [tsk], later).content == DATA


def test_a_held_tsk_never_shows_its_bytes(alice: KeyPair) -> None:
    held = keys.HeldTSK(alice.tsk)
    sign.sign_detached(DATA, held)
    for shown in (repr(held), str(held), repr(_backend.engine_signer(alice.tsk))):
        assert "\\x" not in shown and alice.tsk.hex()[:16] not in shown and len(shown) < 40


# --- which candidates are judged --------------------------------------------------


@pytest.mark.parametrize("fixture", ALL)
def test_has_key_answers_as_find_key(fixture: str, request: pytest.FixtureRequest, alice: KeyPair) -> None:
    pair: KeyPair = request.getfixturevalue(fixture)
    info = keys.load_cert(pair.cert, _now())
    handles = [k.key.fingerprint for k in info.all_keys] + [k.key.key_id for k in info.all_keys]
    handles += [h.upper() for h in handles] + ["", "00" * 8, alice.fingerprint]
    for data in (pair.cert, _backend.armor(pair.cert, "public-key"), pair.tsk):
        loaded = keys.load_cert(data, _now())
        for handle in handles:
            assert keys.has_key(data, handle) == (loaded.find_key(handle) is not None), handle
    # What load_cert refuses has no key either.
    for data in (pair.cert + alice.cert, b"\x99\x00", b"garbage", b""):
        for handle in handles:
            assert not keys.has_key(data, handle)


# --- armor and CRLF ---------------------------------------------------------------


def _reference_armor_body(lines: list[bytes]) -> bytes:
    """The armor body decoder as it was before the bytes.find version."""
    i = 0
    if lines and b":" in lines[0] and not pk._looks_base64(lines[0]):
        while i < len(lines) and lines[i].strip():
            i += 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    b64 = list(map(bytes.strip, lines[i:]))
    for n, s in enumerate(b64):
        if len(s) == 5 and s[:1] == b"=":
            del b64[n:]
            break
    try:
        return base64.b64decode(b"".join(b64), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError("invalid ASCII armor") from exc


def test_armor_decoder_answers_as_the_line_by_line_one() -> None:
    rng = random.Random(20260601)
    pieces = [b"=", b"QUJD", b"QQ==", b"+/8", b" ", b"\r", b"\t", b"", b"=AAAA", b"=AB", b":", b"a: b", b"=="]
    for _ in range(20000):
        lines = [
            b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(0, 7))
        ]
        try:
            expected: object = _reference_armor_body(lines)
        except InputError:
            expected = InputError
        try:
            got: object = pk._decode_armor_body(lines)
        except InputError:
            got = InputError
        assert got == expected, lines


def test_armor_checksum_line_ends_the_body(alice: KeyPair) -> None:
    armored = _backend.armor(alice.cert, "public-key")
    assert pk.to_binary(armored) == alice.cert
    lines = armored.split(b"\n")
    crc = next(n for n, line in enumerate(lines) if line.startswith(b"="))
    assert pk.to_binary(b"\n".join(lines[:crc] + lines[crc + 1 :])) == alice.cert  # no checksum
    junk = b"\n".join([*lines[: crc + 1], b"not base64 at all", *lines[crc + 1 :]])
    assert pk.to_binary(junk) == alice.cert  # what follows the checksum is not read
    with pytest.raises(InputError):
        pk.to_binary(b"\n".join([*lines[:2], b"=QUJD=", *lines[2:]]))  # not a checksum: bad base64


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"a\nb\n",
        b"a\r\nb\n",
        b"a\rb\n",
        b"\n\n\r",
        b"no newline",
        b"-----BEGIN PGP MESSAGE-----\n\nQUJD\n",
    ],
)
def test_armored_output_gets_canonical_line_ends(data: bytes) -> None:
    assert pgp_mime._crlf(data) == canonicalize(data)


def test_uid_address_memo_answers_as_the_parse() -> None:
    for uid in [
        "Alice <alice@Example.ORG>",
        "bob@EXAMPLE.org",
        "no address",
        "<@x>",
        "x" * 2000 + " <a@b.c>",
    ]:
        for _ in range(2):
            assert keys.uid_address(uid) == keys._uid_address(uid)
