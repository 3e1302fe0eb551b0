"""Mutations of genuine signed and encrypted messages (hypothesis).

For every base message (S/MIME detached and opaque signed, OpenPGP signed,
both schemes signed+encrypted) and any short sequence of byte flips, cuts,
insertions, header edits and MIME re-nestings:

- GREEN only if what the signature covers and the From are untouched: the
  covered bytes are still in the message, the From bound is alice's, and
  the body shown is exactly the genuine one;
- the service never fails: a verdict, or a status carrying an ErrorInfo
  whose reason is a stable secmail reason, never INTERNAL;
- no plaintext without integrity: the marker of an encrypted message shows
  up only in a response whose ciphertext authenticated (lock and
  integrity_protected), never in an error or in any log record.
"""

from __future__ import annotations

import logging
import os

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prop_support import (
    ALICE,
    EVE,
    MARKER,
    Mutation,
    V,
    World,
    call,
    cut,
    error_reason,
    flip,
    header_edit,
    insert,
    renest,
)

from secmail.errors import ErrorReason

fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, exclude_max=True)

HEADER_VALUES = [
    f"Eve <{EVE}>".encode(),
    f"From: Eve <{EVE}>".encode(),
    f"From: Alice <{ALICE}>".encode(),
    f"Sender: Eve <{EVE}>".encode(),
    f'"{ALICE}" <{EVE}>'.encode(),
    b"Content-Type: text/plain",
    b'multipart/mixed; boundary="x"',
    b'multipart/signed; protocol="application/pgp-signature"; boundary="x"',
    b"application/pkcs7-mime; smime-type=enveloped-data",
    b"base64",
    b"[GNUPG:] GOODSIG 0 alice",
    b"",
]
INSERTS = [b"\r\n", b"\r\n\r\n", b"--", b"\x00", b"=", b"A", b"-----BEGIN PGP MESSAGE-----\r\n", b"\xff\xfe"]

mutations: st.SearchStrategy[Mutation] = st.one_of(
    st.builds(flip, fractions, st.integers(1, 255)),
    st.builds(cut, fractions, st.integers(1, 64)),
    st.builds(insert, fractions, st.sampled_from(INSERTS)),
    st.builds(
        header_edit,
        fractions,
        st.sampled_from(["replace", "drop", "duplicate", "add"]),
        st.sampled_from(HEADER_VALUES),
    ),
    st.builds(
        renest, st.sampled_from(["mixed-prepend", "mixed-append", "rfc822", "related", "signed-in-signed"])
    ),
)

SETTINGS = settings(
    max_examples=int(os.environ.get("SECMAIL_PROP_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Reasons an error may carry; INTERNAL is a bug.
CLEAN_REASONS = {r.value for r in ErrorReason} - {ErrorReason.INTERNAL.value}

BASES = [
    "smime-signed",
    "smime-opaque",
    "openpgp-signed",
    "smime-signed+encrypted",
    "openpgp-signed+encrypted",
]


def _apply(raw: bytes, steps: list[Mutation]) -> bytes:
    for step in steps:
        if raw:
            raw = step(raw)
    return raw


def _check_error(err: grpc.RpcError) -> None:
    assert err.code() != grpc.StatusCode.INTERNAL, err.details()
    assert error_reason(err) in CLEAN_REASONS


@pytest.mark.parametrize("name", BASES)
@SETTINGS
@given(steps=st.lists(mutations, min_size=1, max_size=3))
def test_no_mutation_is_green_unless_covered_bytes_and_from_are_untouched(
    world: World, caplog: pytest.LogCaptureFixture, name: str, steps: list[Mutation]
) -> None:
    base = world.bases[name]
    mutated = _apply(base.raw, steps)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    for decrypt in (False, True) if not base.encrypted else (True,):
        out = call(world.client, mutated, decrypt=decrypt)
        if out.error is not None:
            _check_error(out.error)
            if base.encrypted:
                assert MARKER.decode() not in (out.error.details() or "")
            continue
        v = out.verdict
        assert v is not None
        if v.banner == V.BANNER_GREEN:
            assert base.covered_in(mutated), [s.__name__ for s in steps]
            assert v.from_address == ALICE
            assert [list(s.verified_addresses) for s in v.signers] == [[ALICE]]
            assert out.display.partition(b"\r\n\r\n")[2] == base.display_body
            assert f"From: Alice <{ALICE}>".encode() in out.display
        if base.encrypted and MARKER in out.display:
            # Plaintext only from a ciphertext that authenticated.
            assert v.lock and v.integrity_protected, [s.__name__ for s in steps]
    if base.encrypted:
        assert MARKER.decode() not in caplog.text


@pytest.mark.parametrize("name", BASES)
def test_unmutated_bases_are_green(world: World, name: str) -> None:
    # The oracle above is only meaningful if the bases themselves are GREEN.
    base = world.bases[name]
    out = call(world.client, base.raw, decrypt=base.encrypted)
    assert out.verdict is not None and out.verdict.banner == V.BANNER_GREEN
    assert out.display.partition(b"\r\n\r\n")[2] == base.display_body
