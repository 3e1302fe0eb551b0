"""The memos of the OpenPGP path (``secmail.pgp._cache`` and its users).

What they must never do: make an invalid certificate valid, answer a
time-dependent question from another time, answer for other bytes than
their own, or keep secret material. Revocations and forged bindings are
made here with ``cryptography`` (RSA, through the same code that makes
secmail's RSA signatures), so that their dates and contents are exact.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pgp_support import KeyPair, ctx_with, flip_byte

from secmail.context import PGPCandidate, VerifyContext
from secmail.errors import InvalidKeyError
from secmail.pgp import _backend, _cache, keys
from secmail.pgp import packets as pk
from secmail.pgp.sign import sign_detached
from secmail.pgp.verify import judge_signature, verify_detached
from secmail.policy import DEFAULT_POLICY
from secmail.verdict import Reason

DATA = b"Content-Type: text/plain\r\n\r\nMemo\r\n"
_SECRET_TAGS = (pk.TAG_SECRET_KEY, pk.TAG_SECRET_SUBKEY)


def _now() -> datetime:
    return datetime.now(UTC)


def _subpacket(kind: int, value: bytes) -> bytes:
    return bytes([1 + len(value), kind]) + value


def _rsa_key_signature(
    signer: pk.KeyPacket, sig_type: int, data: bytes, created: datetime, extra_hashed: bytes = b""
) -> bytes:
    """A v4 signature of ``sig_type`` over ``data`` (key material) by the
    RSA secret key ``signer`` (RFC 9580 §5.2.4), as a packet."""
    private = keys.rsa_private_key(signer)
    hashed = (
        _subpacket(pk.SP_ISSUER_FPR, b"\x04" + bytes.fromhex(signer.fingerprint))
        + _subpacket(pk.SP_CREATION_TIME, struct.pack(">I", int(created.timestamp())))
        + extra_hashed
    )

    def body(left16: bytes, value: bytes) -> bytes:
        return (
            bytes([4, sig_type, signer.algorithm, 8])
            + struct.pack(">H", len(hashed))
            + hashed
            + b"\x00\x00"
            + left16
            + pk.mpi_encode(value)
        )

    digest = keys.signature_digest(pk.parse_signature_body(body(b"\0\0", b"\x01")), data)
    assert digest is not None
    value = private.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    return pk.encode_packet(pk.TAG_SIGNATURE, body(digest[:2], value))


def _primary_secret(pair: KeyPair) -> pk.KeyPacket:
    return pk.parse_key(pk.read_packets(pair.tsk)[0])


def _revocation(pair: KeyPair, created: datetime, reason: int) -> bytes:
    primary = _primary_secret(pair)
    return _rsa_key_signature(
        primary,
        pk.SIG_KEY_REVOCATION,
        primary.hash_material(),
        created,
        _subpacket(pk.SP_REVOCATION_REASON, bytes([reason]) + b"test"),
    )


# --- time-dependent judgements are never memoised ---------------------------


def test_soft_revocation_is_judged_at_at_on_every_call(bob_rsa: KeyPair) -> None:
    revoked_on = _now() + timedelta(days=10)
    cert = bob_rsa.cert + _revocation(bob_rsa, revoked_on, reason=3)  # "key retired"
    before, after = revoked_on - timedelta(days=1), revoked_on + timedelta(days=1)
    hits = keys._SKELETONS.hits
    # Alternating times over the very same bytes: the memo serves the
    # parse, the answer follows ``at``.
    for _ in range(2):
        early = keys.load_cert(cert, before)
        assert not early.revoked and early.encryption_keys() and keys.usable_encryption_cert(cert, before)
        late = keys.load_cert(cert, after)
        assert late.revoked and not late.encryption_keys() and not keys.usable_encryption_cert(cert, after)
        assert "certificate revoked" in late.problems and "certificate revoked" not in early.problems
    assert keys._SKELETONS.hits > hits  # the parse was served from the memo


def test_hard_revocation_applies_whatever_its_date(bob_rsa: KeyPair) -> None:
    # RFC 9580 §5.2.3.31: a compromised key is revoked retroactively.
    revoked_on = _now() + timedelta(days=10)
    cert = bob_rsa.cert + _revocation(bob_rsa, revoked_on, reason=2)
    for at in (revoked_on - timedelta(days=1), revoked_on + timedelta(days=1), _now()):
        assert keys.load_cert(cert, at).revoked


def test_expiry_follows_at_over_memoised_bytes() -> None:
    tsk = _backend.generate_tsk(["Exp <exp@example.org>"], validity_seconds=3600)
    cert = _backend.public_cert(tsk)
    now = _now()
    for _ in range(2):
        assert keys.load_cert(cert, now).cert_usable
        later = keys.load_cert(cert, now + timedelta(hours=2))
        assert later.expired and not later.cert_usable and not later.signing_keys()
        # Before the key existed: not yet valid, not "valid from the memo".
        assert keys.load_cert(cert, now - timedelta(days=1)).not_yet_valid


def test_signature_verdict_follows_at(bob_rsa: KeyPair) -> None:
    revoked_on = _now() + timedelta(days=10)
    cert = bob_rsa.cert + _revocation(bob_rsa, revoked_on, reason=3)
    armored, _ = sign_detached(DATA, bob_rsa.tsk)
    sig = pk.parse_signature(pk.read_packets(pk.to_binary(armored))[0])
    for _ in range(2):
        ok = judge_signature(sig, DATA, ctx_with([cert], at=revoked_on - timedelta(days=1)))
        assert ok.crypto_valid and ok.reasons == ()
        bad = judge_signature(sig, DATA, ctx_with([cert], at=revoked_on + timedelta(days=1)))
        assert Reason.CERT_REVOKED in bad.reasons


# --- a memo never vouches for other bytes ------------------------------------


def _binding_packet_index(cert: bytes) -> int:
    packets = pk.read_packets(cert)
    for i, p in enumerate(packets):
        if p.tag == pk.TAG_SIGNATURE and pk.parse_signature(p).sig_type == pk.SIG_SUBKEY_BINDING:
            return i
    raise AssertionError("no subkey binding")


def _replace_packet(cert: bytes, index: int, new_raw: bytes) -> bytes:
    packets = pk.read_packets(cert)
    return b"".join(new_raw if i == index else p.raw for i, p in enumerate(packets))


@pytest.mark.parametrize("order", ["valid-first", "forged-first"])
def test_forged_binding_is_never_valid(alice: KeyPair, order: str) -> None:
    i = _binding_packet_index(alice.cert)
    binding = pk.read_packets(alice.cert)[i]
    # Flip a byte of the signature value (the last octets): the packet
    # still parses, the mathematics no longer holds.
    forged_raw = flip_byte(binding.raw, len(binding.raw) - 3)
    forged = _replace_packet(alice.cert, i, forged_raw)
    subkey_fpr = next(
        pk.parse_key(p).fingerprint for p in pk.read_packets(alice.cert) if p.tag == pk.TAG_PUBLIC_SUBKEY
    )
    at = _now()
    runs = [alice.cert, forged] if order == "valid-first" else [forged, alice.cert]
    for _ in range(2):  # and again, from the memos
        for cert in runs:
            sub = keys.load_cert(cert, at).find_key(subkey_fpr)
            assert sub is not None
            assert sub.bound is (cert == alice.cert)


def test_binding_moved_to_another_subkey_is_recomputed(alice: KeyPair, dave_p256: KeyPair) -> None:
    """The same signature packet over different key material: the memo is
    keyed by the data too, so the answer is computed again (and is no).

    The encryption subkey is the one replaced: its binding needs no
    back-signature, so only the binding's own check can refuse it."""
    at = _now()
    (enc,) = keys.load_cert(alice.cert, at).encryption_keys()  # memoised as valid
    packets = pk.read_packets(alice.cert)
    index = next(
        i
        for i, p in enumerate(packets)
        if p.tag == pk.TAG_PUBLIC_SUBKEY and pk.parse_key(p).fingerprint == enc.key.fingerprint
    )
    alien = next(p for p in pk.read_packets(dave_p256.cert) if p.tag == pk.TAG_PUBLIC_SUBKEY)
    grafted = _replace_packet(alice.cert, index, alien.raw)
    for _ in range(2):
        info = keys.load_cert(grafted, at)
        moved = info.find_key(pk.parse_key(alien).fingerprint)
        assert moved is not None and not moved.bound
        assert not info.encryption_keys()
        assert any("no valid binding" in p for p in info.problems)


def test_same_bytes_same_verdict_across_memo_eviction(alice: KeyPair) -> None:
    at = _now()
    first = keys.load_cert(alice.cert, at)
    keys._SKELETONS.clear()
    keys._SELF_SIGS.clear()
    keys._EMBEDDED.clear()
    cold = keys.load_cert(alice.cert, at)
    warm = keys.load_cert(alice.cert, at)
    for info in (cold, warm):
        assert info.fingerprint == first.fingerprint
        assert info.addresses() == first.addresses()
        assert [k.key.fingerprint for k in info.signing_keys()] == [
            k.key.fingerprint for k in first.signing_keys()
        ]
        assert [k.key.fingerprint for k in info.encryption_keys()] == [
            k.key.fingerprint for k in first.encryption_keys()
        ]
        assert info.problems == first.problems


def test_judged_objects_are_fresh(alice: KeyPair) -> None:
    """A caller mutating what it got cannot change the next caller's."""
    at = _now()
    a = keys.load_cert(alice.cert, at)
    a.subkeys[0].revoked = True
    a.primary.packets.clear()
    a.problems.append("tampered")
    b = keys.load_cert(alice.cert, at)
    assert not b.subkeys[0].revoked and b.primary.packets and "tampered" not in b.problems


def test_unreadable_input_is_not_memoised() -> None:
    bad = pk.encode_packet(pk.TAG_PUBLIC_KEY, b"\x04\x00")
    for _ in range(2):
        with pytest.raises(InvalidKeyError):
            keys.load_cert(bad, _now())
    assert bad not in keys._SKELETONS


# --- no secret material in any memo ------------------------------------------


@pytest.mark.parametrize("fixture", ["alice", "carol_v6", "bob_rsa", "gpg_ed"])
def test_tsks_are_never_memoised(fixture: str, request: pytest.FixtureRequest) -> None:
    pair: KeyPair = request.getfixturevalue(fixture)
    sign_detached(DATA, pair.tsk)
    keys.load_cert(pair.tsk, _now())
    secret_areas = [
        k.secret_area
        for k in (pk.parse_key(p) for p in pk.read_packets(pair.tsk) if p.tag in _SECRET_TAGS)
        if k.secret_area and len(k.secret_area) > 8
    ]
    assert secret_areas
    memos: list[_cache.BoundedMemo[object, object]] = [
        keys._SKELETONS,  # type: ignore[list-item]
        keys._SELF_SIGS,  # type: ignore[list-item]
        keys._EMBEDDED,  # type: ignore[list-item]
        _backend._CERTS,  # type: ignore[list-item]
    ]
    assert pair.tsk not in keys._SKELETONS and pair.tsk not in _backend._CERTS
    for memo in memos:
        for key in memo._entries:
            blob = b"".join(key) if isinstance(key, tuple) else key
            assert isinstance(blob, bytes)
            for area in secret_areas:
                assert area[1:] not in blob, "secret key material in a memo"
    for skeletons, _ in keys._SKELETONS._entries.values():
        for skel in skeletons:
            assert not skel.primary.is_secret and not any(k.is_secret for k, _ in skel.subkeys)


@pytest.mark.parametrize("fixture", ["alice", "carol_v6", "dave_p256", "erin_448", "bob_rsa", "gpg_ed"])
def test_tsk_from_projection_equals_direct_parse(fixture: str, request: pytest.FixtureRequest) -> None:
    """A TSK's skeleton built from its (memoised) public projection is the
    one a direct parse gives, secret key packets included."""
    pair: KeyPair = request.getfixturevalue(fixture)
    packets = pk.read_packets(pair.tsk)
    direct = tuple(keys._skeleton(c) for c in keys.split_certs(packets))
    for _ in range(2):
        assert keys._skeletons(pair.tsk) == direct
    skel = keys._skeletons(pair.tsk)[0]
    assert skel.primary.is_secret or any(k.is_secret for k, _ in skel.subkeys)


# --- the lookup is only asked for what the verdict needs ---------------------


def _ctx(candidates: list[PGPCandidate], asked: list[int]) -> VerifyContext:
    def lookup(_handle: str) -> object:
        def gen() -> object:
            for i, c in enumerate(candidates):
                asked.append(i)
                yield c

        return gen()

    return VerifyContext(at=_now(), policy=DEFAULT_POLICY, pgp_lookup=lookup)  # type: ignore[arg-type]


def test_judging_stops_at_a_clean_verdict(alice: KeyPair) -> None:
    armored, _ = sign_detached(DATA, alice.tsk)
    sig = pk.parse_signature(pk.read_packets(pk.to_binary(armored))[0])
    asked: list[int] = []
    res = judge_signature(sig, DATA, _ctx([PGPCandidate(alice.cert, True), PGPCandidate(b"x", False)], asked))
    assert res.crypto_valid and res.reasons == ()
    assert asked == [0]


def test_judging_goes_on_when_a_better_candidate_may_follow(alice: KeyPair) -> None:
    """An unauthenticated copy first (YELLOW at best): the authenticated
    one after it is still consulted, and wins."""
    armored, _ = sign_detached(DATA, alice.tsk)
    sig = pk.parse_signature(pk.read_packets(pk.to_binary(armored))[0])
    asked: list[int] = []
    # Candidates are told apart by their bytes: the second is an armored copy.
    candidates = [
        PGPCandidate(alice.cert, False),
        PGPCandidate(_backend.armor(alice.cert, "public-key"), True),
    ]
    res = judge_signature(sig, DATA, _ctx(candidates, asked))
    assert asked == [0, 1]
    assert res.crypto_valid and res.reasons == ()


# --- the memo itself ----------------------------------------------------------


def test_bounded_memo_evicts_least_recently_used() -> None:
    memo: _cache.BoundedMemo[bytes, int] = _cache.BoundedMemo(maxsize=2, max_weight=100)
    memo.put(b"a", 1, 1)
    memo.put(b"b", 2, 1)
    assert memo.get(b"a") == 1  # a is now the most recent
    memo.put(b"c", 3, 1)
    assert memo.get(b"b") is None and memo.get(b"a") == 1 and memo.get(b"c") == 3
    assert len(memo) == 2


def test_bounded_memo_weight_bound() -> None:
    memo: _cache.BoundedMemo[bytes, bool] = _cache.BoundedMemo(maxsize=100, max_weight=10)
    memo.put(b"big", True, 11)
    assert b"big" not in memo
    memo.put(b"x", False, 6)
    memo.put(b"y", True, 6)
    assert b"x" not in memo and memo.get(b"y") is True
    memo.put(b"y", False, 4)  # replacing re-weighs
    memo.put(b"z", True, 6)
    assert memo.get(b"y") is False and memo.get(b"z") is True
    with pytest.raises(ValueError):
        _cache.BoundedMemo(maxsize=0, max_weight=1)


def test_memos_under_concurrent_use(alice: KeyPair, bob_rsa: KeyPair) -> None:
    """Server threads share the memos: verdicts stay right under contention."""
    from concurrent.futures import ThreadPoolExecutor

    sigs = {pair.fingerprint: sign_detached(DATA, pair.tsk)[0] for pair in (alice, bob_rsa)}
    certs = [alice.cert, bob_rsa.cert]

    def run(i: int) -> tuple[bool, bool]:
        pair = (alice, bob_rsa)[i % 2]
        if i % 7 == 0:
            keys._SKELETONS.clear()  # evictions in the middle of it all
        (good,) = verify_detached(DATA, sigs[pair.fingerprint], ctx_with(certs))
        (bad,) = verify_detached(DATA + b"!", sigs[pair.fingerprint], ctx_with(certs))
        return good.crypto_valid and good.reasons == (), not bad.crypto_valid

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(80)))
    assert all(ok and refused for ok, refused in results)
