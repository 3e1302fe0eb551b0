"""verify_signed_data's per-process caches give the uncached answers.

Parsed message certificates (``secmail.smime._certs``), what was read from
repeated encodings (``verify._derived``), the quick reading of messageDigest
and signingTime (``verify._quick_attribute``), the reading of a SignedData
whose parts are all known (``verify._parse_known``) and the path cache
(``secmail.trust._pathcache``): warm or cold, every message gets the same
result, broken input raises every time, and every cache is bounded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import cms_builder as cb
import pytest
from asn1crypto import cms, core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from smime_pki import SIGNING_TIME, VALIDATION_TIME, SmimePKI, sign_as

from secmail.context import TrustContext, VerifyContext
from secmail.errors import InputError
from secmail.policy import DEFAULT_POLICY
from secmail.smime import _certs
from secmail.smime import algorithms as alg
from secmail.smime import verify as smime_verify
from secmail.smime.verify import SignedDataResult, verify_signed_data
from secmail.trust import path as trust_path
from secmail.verdict import Reason

CONTENT = b"Content-Type: text/plain\r\n\r\nsalut\r\n"


def _cold() -> None:
    _certs.clear()
    smime_verify._derived_memo.clear()
    trust_path.SIGNER_PATHS.clear()


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    _cold()
    yield
    _cold()


def _signed(pki: SmimePKI, who: str = "alice", **kw: object) -> bytes:
    return sign_as(pki, who, CONTENT, **kw)


def _messages(pki: SmimePKI) -> list[tuple[str, bytes, bytes | None]]:
    alice = pki["alice"]
    other = pki["bob"]
    tampered = bytearray(_signed(pki, detached=False))
    tampered[tampered.index(CONTENT) + 30] ^= 0x01
    no_cert = cb.signed_data(
        [cb.signer_info(alice.key, alice.cert, CONTENT, when=SIGNING_TIME)], [], econtent=None
    )
    by_ski = cb.signed_data(
        [cb.signer_info(other.key, other.cert, CONTENT, when=SIGNING_TIME, use_ski=True)],
        [other.cert, *pki.chain],
        econtent=None,
    )
    two = cb.signed_data(
        [
            cb.signer_info(alice.key, alice.cert, CONTENT, when=SIGNING_TIME),
            cb.signer_info(other.key, other.cert, CONTENT, when=SIGNING_TIME, corrupt_signature=True),
        ],
        [alice.cert, other.cert, *pki.chain],
        econtent=None,
    )
    duplicated = cb.signed_data(
        [
            cb.signer_info(
                alice.key,
                alice.cert,
                CONTENT,
                attrs=[*cb.default_attrs(CONTENT, "sha256", SIGNING_TIME), cb.content_type_attr()],
            )
        ],
        [alice.cert, *pki.chain],
        econtent=None,
    )
    long_form = cb.signed_data(
        [
            cb.signer_info(
                alice.key,
                alice.cert,
                CONTENT,
                attrs=[
                    cb.content_type_attr(),
                    # A messageDigest with a long-form length: not for the
                    # quick reading, the same answer all the same.
                    b"\x30\x81\x2f" + cb.message_digest_attr(CONTENT)[2:],
                    cb.signing_time_attr(SIGNING_TIME),
                ],
            )
        ],
        [alice.cert, *pki.chain],
        econtent=None,
    )
    return [
        ("detached", _signed(pki), CONTENT),
        ("opaque", _signed(pki, detached=False), None),
        ("pss", _signed(pki, rsa_pss=True), CONTENT),
        ("ecdsa", _signed(pki, "bob"), CONTENT),
        ("ed25519", _signed(pki, "carol"), CONTENT),
        ("other-content", _signed(pki), CONTENT + b"x"),
        ("tampered", bytes(tampered), None),
        ("no-certificate", no_cert, CONTENT),
        ("ski", by_ski, CONTENT),
        ("two-signers", two, CONTENT),
        ("duplicated-attribute", duplicated, CONTENT),
        ("long-form-attribute", long_form, CONTENT),
    ]


def _contexts(pki: SmimePKI) -> list[VerifyContext]:
    trust = TrustContext(anchors=(pki.root,))
    return [
        VerifyContext(at=VALIDATION_TIME, policy=DEFAULT_POLICY, trust=trust),
        VerifyContext(at=VALIDATION_TIME + timedelta(days=40 * 365), policy=DEFAULT_POLICY, trust=trust),
        VerifyContext(at=VALIDATION_TIME, policy=DEFAULT_POLICY, trust=TrustContext()),
    ]


def test_warm_caches_give_the_cold_results(pki: SmimePKI) -> None:
    messages = _messages(pki)
    for ctx in _contexts(pki):
        cold: dict[str, SignedDataResult] = {}
        for name, der, detached in messages:
            _cold()
            cold[name] = verify_signed_data(der, detached_content=detached, ctx=ctx)
        for _ in range(2):  # warm: every cache filled by all the messages
            for name, der, detached in messages:
                assert verify_signed_data(der, detached_content=detached, ctx=ctx) == cold[name], name
    # The cases above are what they claim to be.
    ctx = _contexts(pki)[0]
    results = {n: verify_signed_data(d, detached_content=c, ctx=ctx) for n, d, c in messages}
    assert results["detached"].signers[0].reasons == ()
    assert results["tampered"].signers[0].reasons == (Reason.BAD_SIGNATURE,)
    assert results["no-certificate"].signers[0].reasons == (Reason.SIGNER_KEY_MISSING,)
    assert results["ski"].signers[0].reasons == ()
    assert sorted(s.crypto_valid for s in results["two-signers"].signers) == [False, True]
    assert results["duplicated-attribute"].signers[0].reasons == (Reason.MALFORMED_SIGNATURE,)
    assert results["long-form-attribute"].signers[0].crypto_valid
    expired = verify_signed_data(_signed(pki), detached_content=CONTENT, ctx=_contexts(pki)[1])
    assert Reason.CERT_EXPIRED in expired.signers[0].reasons


def test_broken_input_raises_every_time(pki: SmimePKI) -> None:
    ctx = _contexts(pki)[0]
    good = _signed(pki)
    verify_signed_data(good, detached_content=CONTENT, ctx=ctx)  # warm
    alice = pki["alice"]
    # A SignerIdentifier whose issuer Name is not a Name: unreadable.
    broken_sid = alg.der_sequence(alg.der_octet_string(b"not a name"), alg.der_integer(5))
    si = cb.signer_info(alice.key, alice.cert, CONTENT, when=SIGNING_TIME)
    good_sid = alg.issuer_and_serial_number(alice.cert)
    bad = cb.signed_data([si.replace(good_sid, broken_sid)], [alice.cert, *pki.chain], econtent=None)
    # A signingTime that is no time.
    bad_time = cb.signed_data(
        [
            cb.signer_info(
                alice.key,
                alice.cert,
                CONTENT,
                attrs=[
                    cb.content_type_attr(),
                    cb.message_digest_attr(CONTENT),
                    cb.attribute(alg.OID_SIGNING_TIME, b"\x17\x0d" + b"991399999999Z"),
                ],
            )
        ],
        [alice.cert, *pki.chain],
        econtent=None,
    )
    for der in (bad, bad_time):
        for _ in range(3):
            with pytest.raises(InputError):
                verify_signed_data(der, detached_content=CONTENT, ctx=ctx)
    assert verify_signed_data(good, detached_content=CONTENT, ctx=ctx).signers[0].reasons == ()


def _attribute_der(oid: str, value: bytes) -> bytes:
    return cb.attribute(oid, value)


def _read_slowly(raw: bytes) -> smime_verify._Attribute:
    return smime_verify._read_attribute(cms.CMSAttribute.load(raw))


def _outcome(read: Callable[[bytes], object], raw: bytes) -> object:
    try:
        return read(raw)
    except Exception as error:  # the kind of failure must agree too
        return type(error)


def test_quick_attribute_reads_as_asn1crypto_does() -> None:
    rng = random.Random(11)
    samples: list[bytes] = []
    for size in range(0, 120):
        samples.append(_attribute_der(alg.OID_MESSAGE_DIGEST, alg.der_octet_string(rng.randbytes(size))))
    start = datetime(1950, 1, 1, tzinfo=UTC)
    for _ in range(200):
        when = start + timedelta(seconds=rng.randrange(100 * 365 * 86400))
        samples.append(_attribute_der(alg.OID_SIGNING_TIME, bytes(core.UTCTime(when).dump())))
    for text in (
        b"2601011200Z",
        b"260101120000+0100",
        b"991231235959Z",
        b"000229000000Z",
        b"260230000000Z",
        b"",
    ):
        samples.append(_attribute_der(alg.OID_SIGNING_TIME, b"\x17" + bytes([len(text)]) + text))
    samples.append(_attribute_der(alg.OID_CONTENT_TYPE, alg.der_oid(alg.OID_DATA)))
    samples.append(_attribute_der(alg.OID_SIGNING_TIME, bytes(core.GeneralizedTime(start).dump())))
    samples.append(
        cb.attribute(alg.OID_MESSAGE_DIGEST, alg.der_octet_string(b"a"), alg.der_octet_string(b"b"))
    )
    quick_seen = 0
    for sample in list(samples):
        # Single-byte changes anywhere: the quick reading either declines
        # or agrees with asn1crypto, failures included.
        variants = [sample]
        for _ in range(30):
            mutated = bytearray(sample)
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            variants.append(bytes(mutated))
        for raw in variants:
            quick = _outcome(smime_verify._quick_attribute, raw)
            if quick is None:
                continue
            quick_seen += 1
            assert quick == _outcome(_read_slowly, raw), raw.hex()
    assert quick_seen > 300


def test_message_certificates_are_parsed_once_and_bounded(
    pki: SmimePKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    ders = [c.public_bytes(Encoding.DER) for c in (pki["alice"].cert, pki["bob"].cert, *pki.chain)]
    first = _certs.message_cert(ders[0])
    assert first is not None
    assert _certs.message_cert(bytes(ders[0])) is first
    assert first.cert == pki["alice"].cert
    assert first.fingerprint == pki["alice"].cert.fingerprint(hashes.SHA256()).hex()
    assert _certs.message_cert(b"\x30\x03\x02\x01\x00") is None  # refused by cryptography
    monkeypatch.setattr(_certs._cache, "max_entries", 2)
    monkeypatch.setattr(_certs._chain_entries, "max_entries", 2)
    for der in ders:
        _certs.message_cert(der)
    assert _certs.size() == 2
    again = _certs.message_cert(ders[0])
    assert again is not first and again is not None and again.cert == first.cert
    # Chain descriptions are bounded too, and equal to a fresh one.
    for cert in pki.chain:
        entry = _certs.chain_certificate(cert)
        assert entry.fingerprint == cert.fingerprint(hashes.SHA256()).hex()
        assert entry.subject == cert.subject.rfc4514_string()
    assert len(_certs._chain_entries) <= 2


def test_derived_readings_are_bounded(pki: SmimePKI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smime_verify._derived_memo, "max_entries", 3)
    ctx = _contexts(pki)[0]
    for who in ("alice", "bob", "carol", "erin"):
        verify_signed_data(_signed(pki, who), detached_content=CONTENT, ctx=ctx)
    assert len(smime_verify._derived_memo) == 3
    # A message's own digest and signing time are never kept.
    kept = [key for key in smime_verify._derived_memo._entries if key[0] == "SignerInfo.signedAttrs[]"]
    assert all(alg.der_oid(alg.OID_MESSAGE_DIGEST) not in raw for _, raw in kept)


def test_same_der_other_certificate_object_still_matches(pki: SmimePKI) -> None:
    # The path cache keys certificates by identity; a message whose
    # certificates were parsed anew (after eviction) is validated anew.
    ctx = _contexts(pki)[0]
    der = _signed(pki)
    first = verify_signed_data(der, detached_content=CONTENT, ctx=ctx)
    _certs.clear()
    second = verify_signed_data(der, detached_content=CONTENT, ctx=ctx)
    assert first == second
    assert first.certificates[0] is not second.certificates[0]
    assert isinstance(second.certificates[0], x509.Certificate)


def _parsed(der: bytes) -> object:
    """What a SignedData reads as, comparable (certificates by fingerprint)."""
    heads, econtent_type, econtent, certs = smime_verify._parse_asn1(der)
    return heads, econtent_type, econtent, [c.fingerprint for c in certs]


def _known(der: bytes) -> object:
    known = smime_verify._parse_known(der)
    if known is None:
        return None
    heads, econtent_type, econtent, certs = known
    return heads, econtent_type, econtent, [c.fingerprint for c in certs]


def test_known_parts_reading_gives_the_asn1crypto_reading(pki: SmimePKI) -> None:
    messages = _messages(pki)
    for _, der, _ in messages:
        # Nothing read yet: the known-parts reading declines.
        assert smime_verify._parse_known(der) is None
    expected = {name: _parsed(der) for name, der, _ in messages}
    applied = set()
    for name, der, _ in messages:
        known = _known(der)
        if known is not None:
            applied.add(name)
            assert known == expected[name], name
    # The usual shapes are read the quick way once their parts are known;
    # a long-form messageDigest (never kept) is not.
    assert {"detached", "opaque", "pss", "ecdsa", "ed25519", "ski", "two-signers"} <= applied
    assert "long-form-attribute" not in applied


def _variants(der: bytes, rng: random.Random) -> Iterator[bytes]:
    for _ in range(150):
        mutated = bytearray(der)
        at = rng.randrange(len(mutated))
        choice = rng.randrange(4)
        if choice == 0:
            mutated[at] = rng.randrange(256)
        elif choice == 1:
            mutated[at] ^= 1 << rng.randrange(8)
        elif choice == 2:
            del mutated[at]
        else:
            mutated.insert(at, rng.randrange(256))
        yield bytes(mutated)
    for cut in range(1, len(der), max(1, len(der) // 40)):
        yield der[:cut]


def test_known_parts_reading_agrees_on_damaged_messages(pki: SmimePKI) -> None:
    """Changed, dropped or inserted bytes anywhere: wherever the quick
    reading still applies it reads what asn1crypto reads, and otherwise it
    declines (the message is then read by asn1crypto, errors included)."""
    rng = random.Random(5652)
    messages = _messages(pki)
    for _, der, _ in messages:
        smime_verify._parse_asn1(der)  # the parts of the genuine messages are known
    applied = 0
    for _, der, _ in messages:
        for variant in _variants(der, rng):
            known = _outcome(_known, variant)
            if known is None:
                continue
            applied += 1
            assert known == _outcome(_parsed, variant), variant.hex()
    # Damage in the per-message parts (signature, digest, time, content)
    # keeps the quick reading: those cases are compared above.
    assert applied > 80
