"""The fast paths of signing give the same bytes as the slow ones they
replace: hand-written DER INTEGER and signing time against asn1crypto's
encoders, the memoised OIDs, IssuerAndSerialNumber and certificate sets
against fresh computations, and the LF-first bare-LF scan against the
look-behind regex."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from smime_pki import SIGNING_TIME, SmimePKI

from secmail.errors import InputError
from secmail.smime import algorithms as alg
from secmail.smime import mime
from secmail.smime.sign import _certificates_set, _signing_time, sign_content

OLD_BARE_LF = re.compile(rb"(?<!\r)\n")


def _asn1crypto_time(value: datetime) -> bytes:
    value = value.astimezone(UTC).replace(microsecond=0)
    if 1950 <= value.year < 2050:
        return bytes(core.UTCTime(value).dump())
    return bytes(core.GeneralizedTime(value).dump())


def test_der_integer_matches_asn1crypto() -> None:
    rng = random.Random(8551)
    values = [*range(-70_000, 70_000), 2**159, -(2**159), 2**160 - 1, -(2**160)]
    values += [rng.getrandbits(rng.randint(1, 300)) * rng.choice((1, -1)) for _ in range(20_000)]
    for value in values:
        assert alg.der_integer(value) == bytes(core.Integer(value).dump()), value


def test_der_oid_is_memoised_and_correct() -> None:
    oids = [v for k, v in vars(alg).items() if k.startswith("OID_") and isinstance(v, str)]
    assert len(oids) > 40
    for oid in oids:
        assert alg.der_oid(oid) == bytes(core.ObjectIdentifier(oid).dump())
        assert alg.der_oid(oid) is alg.der_oid(oid)


def test_signing_time_matches_asn1crypto() -> None:
    rng = random.Random(5652)
    values = [
        datetime(year, *rest, tzinfo=UTC)
        for year in (1000, 1949, 1950, 1999, 2000, 2049, 2050, 9998)
        for rest in ((1, 1, 0, 0, 0, 0), (12, 31, 23, 59, 59, 999_999), (6, 15, 12, 30, 5, 123))
    ]
    values.append(datetime(2026, 3, 1, 1, 2, 3, tzinfo=timezone(timedelta(hours=5))))
    start = datetime(1900, 1, 1, tzinfo=UTC)
    values += [
        start + timedelta(seconds=rng.randint(0, 250 * 365 * 86400), microseconds=rng.randint(0, 999_999))
        for _ in range(5000)
    ]
    for value in values:
        assert _signing_time(value) == _asn1crypto_time(value), value


def test_signing_time_before_year_1000_has_four_digits() -> None:
    # asn1crypto writes "10101000000Z" for year 1; X.690 wants YYYY.
    assert _signing_time(datetime(1, 1, 1, tzinfo=UTC)) == b"\x18\x0f00010101000000Z"


def test_signing_time_must_be_aware() -> None:
    with pytest.raises(InputError):
        _signing_time(datetime(2026, 1, 1))  # naive: the point of the test


def test_issuer_and_serial_number_memo_matches_a_fresh_computation(pki: SmimePKI) -> None:
    uncached = alg.issuer_and_serial_number.__wrapped__
    seen = set()
    for person in pki.people.values():
        assert alg.issuer_and_serial_number(person.cert) == uncached(person.cert)
        # The key is the certificate's DER: an equal certificate parsed
        # again gets the same (cached) answer.
        reparsed = x509.load_der_x509_certificate(person.cert.public_bytes(serialization.Encoding.DER))
        assert alg.issuer_and_serial_number(reparsed) is alg.issuer_and_serial_number(person.cert)
        seen.add(alg.issuer_and_serial_number(person.cert))
    assert len(seen) == len(pki.people)  # one per certificate


def test_certificates_set_matches_a_fresh_build(pki: SmimePKI) -> None:
    person = next(iter(pki.people.values()))
    certs = (person.cert, pki.intermediate, person.cert)
    expected = alg.der_set_of(
        dict.fromkeys(c.public_bytes(serialization.Encoding.DER) for c in certs), tag=0xA0
    )
    assert _certificates_set(certs) == expected
    assert _certificates_set(certs) is _certificates_set(certs)
    assert _certificates_set((person.cert,)) != expected


def test_repeated_signatures_are_identical(pki: SmimePKI) -> None:
    # RSA PKCS#1 v1.5 is deterministic: with every cache warm, the same
    # inputs still give the same bytes as the first (cold) signature.
    person = pki["alice"]
    content = b"Content-Type: text/plain\r\n\r\nbonjour\r\n"
    signed = [
        sign_content(
            content, private_key=person.key, cert=person.cert, chain=pki.chain, signing_time=SIGNING_TIME
        )
        for _ in range(3)
    ]
    assert signed[0] == signed[1] == signed[2]


def test_bare_lf_scan_matches_the_look_behind_regex() -> None:
    rng = random.Random(2046)
    samples = [b"", b"\n", b"\r", b"\r\n", b"a\n", b"\r\r\n", b"\n\r", b"\r\n\n"]
    samples += [bytes(rng.choice(b"\r\na") for _ in range(rng.randint(0, 12))) for _ in range(50_000)]
    for data in samples:
        assert (mime._BARE_LF.search(data) is None) == (OLD_BARE_LF.search(data) is None), data
        assert mime._BARE_LF.sub(b"\r\n", data) == OLD_BARE_LF.sub(b"\r\n", data), data


def test_multipart_signed_refuses_bare_lf() -> None:
    with pytest.raises(InputError, match="bare LF"):
        mime.build_multipart_signed(b"Content-Type: text/plain\r\n\r\na\nb\r\n", b"sig", "sha-256")
    assert b"a\r\nb" in mime.build_multipart_signed(
        b"Content-Type: text/plain\r\n\r\na\r\nb\r\n", b"sig", "sha-256"
    )
