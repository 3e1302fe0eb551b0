"""Mutated inputs never leak a library exception (only SecmailError) and
never yield a valid signer or plaintext from tampered data."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgp_support import KeyPair, ctx_with

from secmail.errors import SecmailError
from secmail.pgp import _backend
from secmail.pgp import packets as pk
from secmail.pgp.decrypt import decrypt
from secmail.pgp.encrypt import encrypt
from secmail.pgp.keys import parse_openpgp_keys
from secmail.pgp.sign import sign_detached
from secmail.pgp.verify import verify_detached, verify_inline

DATA = b"fuzz me\r\n"
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)


@st.composite
def mutated(draw: st.DrawFn, blob: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "zero"]))
    i = draw(st.integers(0, len(blob) - 1))
    if kind == "flip":
        return blob[:i] + bytes([blob[i] ^ draw(st.integers(1, 255))]) + blob[i + 1 :]
    if kind == "truncate":
        return blob[:i]
    if kind == "insert":
        return blob[:i] + draw(st.binary(min_size=1, max_size=8)) + blob[i:]
    return blob[:i] + bytes(draw(st.integers(1, 16))) + blob[i + 16 :]


@pytest.fixture(scope="module")
def material(alice: KeyPair, carol_v6: KeyPair) -> dict[str, bytes]:
    sig = pk.to_binary(sign_detached(DATA, alice.tsk)[0])
    return {
        "tsk": alice.tsk,
        "cert": carol_v6.cert,
        "sig": sig,
        "inline": pk.to_binary(_backend.inline_sign(alice.tsk, DATA)),
        "msg": pk.to_binary(encrypt(DATA, [carol_v6.cert], signer_tsk=alice.tsk)),
    }


def _only_secmail_errors(fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except SecmailError:
        pass


@SETTINGS
@given(data=st.data())
def test_fuzz_key_import(data: st.DataObject, material: dict[str, bytes]) -> None:
    for name in ("tsk", "cert"):
        blob = data.draw(mutated(material[name]))
        _only_secmail_errors(lambda b=blob: parse_openpgp_keys(b, None))


@SETTINGS
@given(data=st.data())
def test_fuzz_signatures(data: st.DataObject, material: dict[str, bytes], alice: KeyPair) -> None:
    ctx = ctx_with([alice.cert])
    sig = data.draw(mutated(material["sig"]))
    _only_secmail_errors(lambda: verify_detached(DATA, sig, ctx))
    # Whatever the mutation (it may sit in the unhashed area and keep the
    # signature valid, RFC 9580 §5.2.3), it never verifies other data.
    try:
        assert not any(r.crypto_valid for r in verify_detached(DATA + b"x", sig, ctx))
    except SecmailError:
        pass
    inline = data.draw(mutated(material["inline"]))
    try:
        signers, content = verify_inline(inline, ctx)
    except SecmailError:
        return
    if any(s.crypto_valid for s in signers):
        assert content == DATA


@SETTINGS
@given(data=st.data())
def test_fuzz_decrypt(
    data: st.DataObject, material: dict[str, bytes], carol_v6: KeyPair, alice: KeyPair
) -> None:
    msg = data.draw(mutated(material["msg"]))
    try:
        out = decrypt(msg, [carol_v6.tsk], ctx_with([alice.cert]))
    except SecmailError:
        return
    # Anything that decrypts is the original plaintext (AEAD-authenticated).
    assert out.content == DATA
