"""The genuine messages: the only ones of this suite that may be GREEN."""

from __future__ import annotations

import pytest
from adv_support import (
    ALICE,
    MARKER,
    SCHEMES,
    Cast,
    V,
    decrypt_rpc,
    encrypt_rpc,
    expect,
    message,
    sign_rpc,
    verify_rpc,
)
from service_support import Client


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_signed_baseline_is_green(academy: Client, cast: Cast, scheme: int) -> None:
    signed = sign_rpc(academy, ALICE, message(), scheme)
    resp = verify_rpc(academy, signed)
    v = resp.verdict
    expect(v, banner=V.BANNER_GREEN)
    assert v.scheme == scheme
    assert v.from_address == ALICE
    assert [list(s.verified_addresses) for s in v.signers] == [[ALICE]]
    assert [s.status for s in v.signers] == [V.SIGNATURE_STATUS_VALID]
    assert MARKER in resp.display_message
    assert b"Subject: Conseil de classe" in resp.display_message


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_signed_and_encrypted_baseline_is_green_with_lock(academy: Client, scheme: int) -> None:
    enc = encrypt_rpc(academy, ALICE, message(), scheme, sign=True)
    assert MARKER not in enc
    assert b"Subject: [...]" in enc
    resp = decrypt_rpc(academy, enc)
    v = resp.verdict
    expect(v, banner=V.BANNER_GREEN, lock=True)
    assert v.integrity_protected
    assert v.scheme == scheme
    assert [list(s.verified_addresses) for s in v.signers] == [[ALICE]]
    assert MARKER in resp.display_message
    assert b"Subject: Conseil de classe" in resp.display_message
    assert b"[...]" not in resp.display_message
