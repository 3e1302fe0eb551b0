"""RSA PKESK decryption in OpenSSL (``cryptography``), and its hygiene.

What is checked: the bundled OpenSSL rejects bad PKCS#1 v1.5 padding
implicitly (no error); a Sequoia-made RSA-3072 key opens v6 PKESKs
(SEIPDv2), which GnuPG 2.2 cannot; OpenSSL and GnuPG recover the same
session key from a v3 PKESK; and every way a PKESK can fail to open ends
in the same IntegrityError after exactly one integrity check, like a
tampered message (no Bleichenbacher oracle in the result or the path).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime

import gnupg_reference as _gnupg
import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pgp_support import GOSOP, SQOP, KeyPair, Sop, ctx_with, flip_byte

from secmail.errors import DecryptionError, IntegrityError
from secmail.pgp import decrypt, keys
from secmail.pgp import packets as pk
from secmail.pgp.encrypt import encrypt

SECRET = b"Content-Type: text/plain\r\n\r\nLes sujets du brevet blanc.\r\n"


def _enc_key(pair: KeyPair) -> pk.KeyPacket:
    (k,) = keys.load_cert(pair.tsk, datetime.now(UTC)).encryption_keys()
    assert k.key.algorithm in pk.RSA_ALGOS and k.key.is_secret
    return k.key


def _public(key: pk.KeyPacket) -> rsa.RSAPublicKey:
    n, e = (int.from_bytes(v, "big") for v in key.params[:2])
    return rsa.RSAPublicNumbers(e, n).public_key()


def _split(message: bytes) -> tuple[list[pk.PKESK], bytes]:
    """(the PKESKs, the raw SEIPD packet)."""
    packets = pk.read_packets(pk.to_binary(message))
    esks = [pk.parse_pkesk(p) for p in packets if p.tag == pk.TAG_PKESK]
    (seipd,) = [p.raw for p in packets if p.tag == pk.TAG_SEIPD]
    return esks, seipd


def _pkesk(version: int, key: pk.KeyPacket, c: bytes, *, anonymous: bool = False) -> bytes:
    if version == 3:
        head = b"\x03" + (b"\0" * 8 if anonymous else bytes.fromhex(key.key_id))
    else:
        fpr = bytes.fromhex(key.fingerprint)
        head = b"\x06" + (b"\x00" if anonymous else bytes([len(fpr) + 1, key.version]) + fpr)
    return pk.encode_packet(pk.TAG_PKESK, head + bytes([pk.PK_RSA]) + pk.mpi_encode(c))


def _session_block(version: int, sk: bytes, *, algo: int = 9, checksum: bytes | None = None) -> bytes:
    # RFC 9580 §5.1.3: [algorithm (v3 only)] || session key || checksum.
    cks = keys._checksum(sk) if checksum is None else checksum
    return (bytes([algo]) if version == 3 else b"") + sk + cks


def test_bundled_openssl_rejects_bad_padding_implicitly() -> None:
    """cryptography 50 bundles OpenSSL 4.0 with implicit rejection (since
    3.2): bad PKCS#1 v1.5 padding returns a synthetic message derived from
    the key and the ciphertext, never an error. If a build ever raised
    instead, secmail would still substitute a stand-in key, but the padding
    check would then be visible in timing: this test must then fail."""
    key = rsa.generate_private_key(65537, 2048)
    n = key.public_key().public_numbers().n
    for _ in range(8):
        c = (int.from_bytes(os.urandom(256), "big") % n).to_bytes(256, "big")
        first = key.decrypt(c, padding.PKCS1v15())
        assert key.decrypt(c, padding.PKCS1v15()) == first  # deterministic
    good = key.public_key().encrypt(b"k" * 35, padding.PKCS1v15())
    assert key.decrypt(good, padding.PKCS1v15()) == b"k" * 35


def test_sequoia_rsa_key_opens_v6_pkesk(rsa_sequoia: KeyPair) -> None:
    # Sequoia writes SEIPDv2 with a v6 PKESK to its own v4 RSA keys.
    msg = encrypt(SECRET, [rsa_sequoia.cert])
    esks, seipd = _split(msg)
    assert [e.version for e in esks] == [6]
    assert pk.read_packets(seipd)[0].body[0] == 2
    out = decrypt.decrypt(msg, [rsa_sequoia.tsk], ctx_with([]))
    assert out.content == SECRET and out.algorithm == "seipdv2-ocb-aes256"


@pytest.mark.interop
@pytest.mark.parametrize("tool", [SQOP, GOSOP], ids=lambda t: t.name)
def test_sequoia_rsa_key_opens_tool_messages(rsa_sequoia: KeyPair, tool: Sop) -> None:
    # The installed sqop (sop-rs 0.4.2) and gosop write SEIPDv1 with v3
    # PKESKs even to SEIPDv2-capable certificates; only Sequoia 2
    # (pysequoia, above) writes v6 PKESKs.
    if not tool.available():
        pytest.skip(f"{tool.name} is not installed")
    msg = tool("encrypt", "cert", input=SECRET, files={"cert": rsa_sequoia.cert})
    assert [e.version for e in _split(msg)[0]] == [3]
    out = decrypt.decrypt(msg, [rsa_sequoia.tsk], ctx_with([]))
    assert out.content.replace(b"\r\n", b"\n") == SECRET.replace(b"\r\n", b"\n")


def test_openssl_and_gnupg_recover_the_same_session_key(bob_rsa: KeyPair) -> None:
    msg = encrypt(SECRET, [bob_rsa.cert])  # GnuPG-made key: v3 PKESK, SEIPDv1
    (esk,), _ = _split(msg)
    assert esk.version == 3
    via_openssl = decrypt._unwrap_rsa(esk, _enc_key(bob_rsa), None)
    via_gnupg = _gnupg.rsa_session_key(bob_rsa.tsk, esk.raw)
    assert via_gnupg is not None
    assert via_openssl == via_gnupg
    assert decrypt.decrypt(msg, [bob_rsa.tsk], ctx_with([])).content == SECRET


def _bad_pkesks(version: int, key: pk.KeyPacket) -> dict[str, bytes]:
    """PKESKs addressed to ``key`` that must not open, one per way of failing."""
    pub = _public(key)
    size = (pub.key_size + 7) // 8
    n = pub.public_numbers().n
    sk = os.urandom(32)

    def conformant(block: bytes) -> bytes:
        return _pkesk(version, key, pub.encrypt(block, padding.PKCS1v15()))

    cases = {
        "not-pkcs1": _pkesk(
            version, key, (int.from_bytes(os.urandom(size), "big") % n).to_bytes(size, "big")
        ),
        "zero": _pkesk(version, key, b"\x01"),
        "bad-checksum": conformant(_session_block(version, sk, checksum=b"\x00\x00")),
        "short-key": conformant(_session_block(version, sk[:16])),
        "empty": conformant(b""),
        "wrong-but-well-formed": conformant(_session_block(version, sk)),
    }
    if version == 3:
        cases["unknown-cipher"] = conformant(_session_block(version, sk, algo=99))
    return cases


@pytest.mark.parametrize("fixture", ["bob_rsa", "rsa_sequoia"])
def test_every_pkesk_failure_looks_like_tampering(
    fixture: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair: KeyPair = request.getfixturevalue(fixture)
    key = _enc_key(pair)
    msg = encrypt(SECRET, [pair.cert])
    (esk,), seipd = _split(msg)
    check = "_decrypt_seipd_v1" if esk.version == 3 else "_decrypt_seipd_v2"
    calls: list[int] = []
    original: Callable[..., object] = getattr(decrypt, check)

    def counted(*args: object) -> object:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(decrypt, check, counted)

    # The reference: a PKESK that opens, over a tampered SEIPD.
    body = pk.read_packets(seipd)[0].body
    tampered = esk.raw + pk.encode_packet(pk.TAG_SEIPD, flip_byte(body, len(body) // 2))
    with pytest.raises(IntegrityError) as ref:
        decrypt.decrypt(tampered, [pair.tsk], ctx_with([]))
    assert len(calls) == 1
    messages = {str(ref.value)}
    for name, bad in _bad_pkesks(esk.version, key).items():
        calls.clear()
        with pytest.raises(IntegrityError) as exc:
            decrypt.decrypt(bad + seipd, [pair.tsk], ctx_with([]))
        assert len(calls) == 1, name  # the same work, whatever failed
        messages.add(str(exc.value))
        assert "brevet" not in repr(exc.value)
    assert len(messages) == 1, messages
    # And the genuine message still opens with the patched check in place.
    assert decrypt.decrypt(msg, [pair.tsk], ctx_with([])).content == SECRET


def test_anonymous_pkesk_tries_each_rsa_key(bob_rsa: KeyPair, rsa_sequoia: KeyPair) -> None:
    """A wildcard key ID (gpg --throw-keyids): an RSA key that is not the
    recipient yields a stand-in key whose integrity check fails; the next
    key is then tried."""
    msg = encrypt(SECRET, [bob_rsa.cert])
    (esk,), seipd = _split(msg)
    c = pk._Reader(esk.material).mpi()
    hidden = _pkesk(3, _enc_key(bob_rsa), c, anonymous=True) + seipd
    assert pk.parse_pkesk(pk.read_packets(hidden)[0]).recipient == ""
    out = decrypt.decrypt(hidden, [rsa_sequoia.tsk, bob_rsa.tsk], ctx_with([]))
    assert out.content == SECRET
    with pytest.raises(IntegrityError):
        decrypt.decrypt(hidden, [rsa_sequoia.tsk], ctx_with([]))


def test_attempts_are_bounded(bob_rsa: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    msg = encrypt(SECRET, [bob_rsa.cert])
    (esk,), seipd = _split(msg)
    junk = _bad_pkesks(3, _enc_key(bob_rsa))["not-pkcs1"]
    calls: list[int] = []
    original = decrypt._unwrap_rsa

    def counted(*args: object) -> tuple[int | None, bytes]:
        calls.append(1)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(decrypt, "_unwrap_rsa", counted)
    flood = junk * 100 + esk.raw + seipd
    with pytest.raises(DecryptionError):
        decrypt.decrypt(flood, [bob_rsa.tsk], ctx_with([]))
    assert len(calls) == decrypt.MAX_SESSION_KEY_ATTEMPTS
