"""Time: what the sender claims is information, validity is judged at
validation_time.

- a signing time in the future or far from the Date field is reported
  (REASON_SIGNING_TIME_SUSPICIOUS, informational: it never changes the
  banner by itself, by the issue's rule);
- an expired or not-yet-valid certificate or key is never GREEN at the
  validation time asked for, and is GREEN at a time it was valid.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from adv_support import (
    ALICE,
    SCHEMES,
    Cast,
    GnuPG,
    PGPKey,
    V,
    expect,
    expect_attack,
    forge_signed,
    headers,
    message,
    pgp_key,
    pgp_multipart_signed,
    sign_rpc,
    text_part,
    verify_rpc,
)
from google.protobuf import timestamp_pb2
from service_support import Client
from testpki import end_entity

from secmail.v1 import keys_pb2

NOW = datetime.now(UTC)


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(when)
    return t


def date(when: datetime) -> str:
    return email.utils.format_datetime(when)


def test_smime_signing_time_in_the_future_is_informational(academy: Client, cast: Cast) -> None:
    msg = forge_signed(
        headers(date=date(NOW + timedelta(days=3))), V.SCHEME_SMIME, cast.alice, at=NOW + timedelta(days=3)
    )
    v = verify_rpc(academy, msg).verdict
    expect(v, banner=V.BANNER_GREEN, reasons=[V.REASON_SIGNING_TIME_SUSPICIOUS])
    assert v.signers[0].claimed_signing_time.ToDatetime(tzinfo=UTC) == (NOW + timedelta(days=3)).replace(
        microsecond=0
    )


@pytest.mark.interop
def test_pgp_signing_time_in_the_future_is_informational(academy: Client, gpg: GnuPG) -> None:
    future = NOW + timedelta(days=3)
    payload = text_part()
    sig = gpg.run(
        "--faked-system-time",
        future.strftime("%Y%m%dT%H%M%S"),
        "--armor",
        "--detach-sign",
        "--local-user",
        ALICE,
        input=payload,
    ).stdout
    msg = message(headers(date=date(future)), pgp_multipart_signed(payload, sig))
    v = verify_rpc(academy, msg).verdict
    expect(v, banner=V.BANNER_GREEN, reasons=[V.REASON_SIGNING_TIME_SUSPICIOUS], coverage=V.COVERAGE_BODY)


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_signing_time_far_from_date_field_is_informational(academy: Client, scheme: int) -> None:
    msg = message(headers(date=date(NOW - timedelta(days=10))))
    v = verify_rpc(academy, sign_rpc(academy, ALICE, msg, scheme)).verdict
    expect(v, banner=V.BANNER_GREEN, reasons=[V.REASON_SIGNING_TIME_SUSPICIOUS])


# --- S/MIME certificate validity -----------------------------------------------------------------


def test_smime_expired_certificate(academy: Client, cast: Cast) -> None:
    signed_at = datetime(2025, 3, 1, 12, tzinfo=UTC)
    old = end_entity(cast.people.pki.intermediate, ALICE, not_after=datetime(2025, 6, 1, tzinfo=UTC))
    msg = forge_signed(headers(date=date(signed_at)), V.SCHEME_SMIME, old, at=signed_at)
    v = verify_rpc(academy, msg).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_CERT_EXPIRED])
    # Judged at validation_time: while the certificate was valid, GREEN.
    v = verify_rpc(academy, msg, validation_time=ts(signed_at + timedelta(hours=1))).verdict
    expect(v, banner=V.BANNER_GREEN)
    assert v.validation_time.ToDatetime(tzinfo=UTC) == signed_at + timedelta(hours=1)


def test_smime_not_yet_valid_certificate(academy: Client, cast: Cast) -> None:
    starts = NOW + timedelta(days=30)
    early = end_entity(cast.people.pki.intermediate, ALICE, not_before=starts)
    msg = forge_signed(headers(), V.SCHEME_SMIME, early, at=NOW)
    v = verify_rpc(academy, msg).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_CERT_NOT_YET_VALID])
    v = verify_rpc(academy, msg, validation_time=ts(starts + timedelta(days=1))).verdict
    expect(v, banner=V.BANNER_GREEN)


# --- OpenPGP key validity --------------------------------------------------------------------------

FRANK = "frank@ac-besancon.fr"
READER = "dan@ac-besancon.fr"


@pytest.fixture(scope="module")
def frank(academy: Client) -> Iterator[PGPKey]:
    """A key valid for one hour, in dan's address book."""
    key = pgp_key(f"Frank <{FRANK}>", validity_seconds=3600)
    academy.keys.ImportKey(keys_pb2.ImportKeyRequest(user=READER, data=key.armored_cert))
    yield key


def test_pgp_expired_key(academy: Client, frank: PGPKey) -> None:
    msg = forge_signed(headers(from_=f"Frank <{FRANK}>"), V.SCHEME_OPENPGP, frank)
    v = verify_rpc(academy, msg, user=READER).verdict
    expect(v, banner=V.BANNER_GREEN)
    v = verify_rpc(academy, msg, user=READER, validation_time=ts(NOW + timedelta(hours=3))).verdict
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=[V.REASON_CERT_EXPIRED])


def test_pgp_not_yet_valid_key(academy: Client, frank: PGPKey) -> None:
    msg = forge_signed(headers(from_=f"Frank <{FRANK}>"), V.SCHEME_OPENPGP, frank)
    v = verify_rpc(academy, msg, user=READER, validation_time=ts(NOW - timedelta(days=3))).verdict
    # Three days before the key existed: not yet valid, none of its binding
    # signatures existed either (so the signing subkey is not part of it
    # yet), and the signature claims a time after the validation time.
    expect_attack(
        v,
        banner=V.BANNER_YELLOW,
        reasons=[V.REASON_CERT_NOT_YET_VALID, V.REASON_SIGNER_KEY_MISSING, V.REASON_SIGNING_TIME_SUSPICIOUS],
    )
