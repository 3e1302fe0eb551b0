from __future__ import annotations

import base64
import os

import pytest

from secmail.errors import InputError
from secmail.mime.entity import parse_entity
from secmail.mime.layers import decode_body


def _part(body: bytes) -> bytes:
    return b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body


def test_base64_body_skips_exactly_the_whitespace_characters() -> None:
    data = os.urandom(300)
    encoded = base64.b64encode(data)
    # Each of the six characters rb"\s" matches, between the base64 characters.
    spaced = b"".join(
        encoded[i : i + 7] + b" \t\n\r\x0b\x0c"[i % 6 : i % 6 + 1] for i in range(0, len(encoded), 7)
    )
    assert decode_body(parse_entity(_part(spaced))) == data


@pytest.mark.parametrize("junk", [b"\x00", b"!", b"\xa0", b"-"])
def test_base64_body_with_other_characters_is_refused(junk: bytes) -> None:
    encoded = base64.b64encode(os.urandom(30))
    with pytest.raises(InputError):
        decode_body(parse_entity(_part(encoded[:8] + junk + encoded[8:])))
