"""UI redressing ("Johnny, you are fired" §6): HTML that draws its own
"signed" indicator. The verdict is the only source of the banner and the
lock, whatever the content draws, and the README tells webmails to render
them outside the message frame.
"""

from __future__ import annotations

import re

import pytest
from adv_support import (
    ALICE,
    PROJECT_ROOT,
    SCHEMES,
    Cast,
    V,
    decrypt_rpc,
    encrypt_rpc,
    expect_attack,
    forge_signed,
    headers,
    message,
    multipart,
    signer_of,
    text_part,
    verify_rpc,
)
from service_support import Client

FAKE_BANNER = (
    b'<html><body><div style="background:#1e7e34;color:white;padding:8px;font-family:sans-serif">'
    b"&#x1F512; &#x2714; Message sign&eacute; et chiffr&eacute; &mdash; sign&eacute; par "
    b"alice@ac-besancon.fr (certificat v&eacute;rifi&eacute;)</div>"
    b"<p>Merci de transmettre les notes du conseil de classe.</p></body></html>\r\n"
)


def _fake(subtype: str = "alternative") -> bytes:
    return multipart(
        subtype,
        text_part(b"Message signe par alice@ac-besancon.fr\r\n"),
        text_part(FAKE_BANNER, subtype="html"),
    )


def test_unsigned_html_drawing_a_banner_gets_none(academy: Client) -> None:
    msg = message(headers(), _fake())
    for call in (verify_rpc, decrypt_rpc):
        resp = call(academy, msg)
        expect_attack(resp.verdict, banner=V.BANNER_NONE)
        assert not resp.verdict.signers
        assert resp.display_message == msg


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_encrypted_unsigned_html_drawing_a_banner_gets_only_the_lock(academy: Client, scheme: int) -> None:
    enc = encrypt_rpc(academy, ALICE, message(headers(), _fake()), scheme)
    resp = decrypt_rpc(academy, enc)
    expect_attack(resp.verdict, banner=V.BANNER_NONE, lock=True)
    assert b"sign&eacute; par" in resp.display_message


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_outsider_signed_html_drawing_a_banner_is_not_green(academy: Client, cast: Cast, scheme: int) -> None:
    msg = forge_signed(headers(), scheme, signer_of(cast, "mallory", scheme), entity=_fake())
    v = verify_rpc(academy, msg).verdict
    want = (
        [V.REASON_UNTRUSTED_CHAIN, V.REASON_SENDER_MISMATCH]
        if scheme == V.SCHEME_SMIME
        else [V.REASON_SIGNER_KEY_MISSING]
    )
    expect_attack(v, banner=V.BANNER_YELLOW, reasons=want)


def test_readme_tells_clients_to_render_outside_the_frame() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Render contract", 1)[1].split("\n## ", 1)[0]
    flat = re.sub(r"\s+", " ", section)
    assert "The verdict is the only source of the lock and the banner" in flat
    assert "outside the frame that shows the message" in flat
    assert "UI redressing" in flat
