from __future__ import annotations

import pytest
from pgp_support import KeyPair

from secmail.errors import InputError
from secmail.pgp import _backend
from secmail.pgp import packets as pk


def test_armor_round_trip_and_binary_passthrough() -> None:
    binary = b"\xc0\x05hello"  # a (nonsense) new-format packet, tag 0 is refused below
    armored = _backend.armor(pk.encode_packet(pk.TAG_LITERAL, b"b\x00\x00\x00\x00\x00hi"), "message")
    assert pk.is_armored(armored)
    raw = pk.to_binary(armored)
    assert pk.to_binary(raw) == raw
    lit = pk.parse_literal(pk.read_packets(raw)[0])
    assert lit.content == b"hi"
    with pytest.raises(InputError):
        pk.read_packets(binary)


def test_armor_headers_are_skipped() -> None:
    body = pk.encode_packet(pk.TAG_MARKER, b"PGP")
    armored = _backend.armor(body, "message").replace(
        b"-----\n\n", b"-----\nComment: x\nCharset: UTF-8\n\n", 1
    )
    assert pk.to_binary(armored) == body


def test_partial_body_lengths_are_joined() -> None:
    content = bytes(range(256)) * 4  # 1024 octets
    literal_body = b"b\x00\x00\x00\x00\x00" + content
    # 512-octet partial chunk, then the remainder with a normal length.
    first, rest = literal_body[:512], literal_body[512:]
    raw = bytes([0xC0 | pk.TAG_LITERAL, 0xE0 | 9]) + first + pk.encode_length(len(rest)) + rest
    (packet,) = pk.read_packets(raw)
    assert pk.parse_literal(packet).content == content


def test_partial_length_refused_on_signature_packets() -> None:
    raw = bytes([0xC0 | pk.TAG_SIGNATURE, 0xE1]) + b"\x04\x00"
    with pytest.raises(InputError):
        pk.read_packets(raw)


@pytest.mark.parametrize("cut", [1, 2, 10])
def test_truncated_packets_raise_input_error(cut: int) -> None:
    raw = pk.encode_packet(pk.TAG_LITERAL, b"b\x00\x00\x00\x00\x00" + b"x" * 300)
    with pytest.raises(InputError):
        pk.read_packets(raw[:-cut])


def test_garbage_is_input_error() -> None:
    with pytest.raises(InputError):
        pk.to_binary(b"hello world")
    with pytest.raises(InputError):
        pk.to_binary(b"-----BEGIN PGP MESSAGE-----\n\n!!!!\n-----END PGP MESSAGE-----\n")


def test_signature_subpackets_issuer_and_time(alice: KeyPair) -> None:

    assert isinstance(alice, KeyPair)
    armored = _backend.sign_detached(alice.tsk, b"data")
    (packet,) = pk.read_packets(pk.to_binary(armored))
    sig = pk.parse_signature(packet)
    assert sig.sig_type == pk.SIG_BINARY
    assert sig.created is not None
    assert sig.issuer_fingerprint is not None and len(sig.issuer_fingerprint) == 40
    assert sig.issuer_key_id == sig.issuer_fingerprint[-16:]


def test_cleartext_dash_escaping_and_whitespace() -> None:
    text = (
        b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"
        b"- -dashed line  \nplain\t\n" + _backend.armor(pk.encode_packet(pk.TAG_MARKER, b"PGP"), "signature")
    )
    clear = pk.parse_cleartext(text)
    assert clear.signed_text == b"-dashed line\r\nplain"
    assert clear.hash_headers == ("SHA256",)
