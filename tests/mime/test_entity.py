from __future__ import annotations

import base64
import os
import random
import re

import pytest

from secmail.errors import InputError, MessageTooLargeError
from secmail.mime.entity import (
    base64_lines,
    canonicalize,
    check_structure,
    children,
    parse_entity,
    split_multipart,
)


def test_canonicalize_bare_lf_and_cr() -> None:
    assert canonicalize(b"a\nb\r\nc\rd") == b"a\r\nb\r\nc\r\nd"
    assert canonicalize(b"a\r\nb") == b"a\r\nb"


def test_parse_entity_keeps_folded_fields_and_body() -> None:
    raw = b"Subject: one\r\n two\r\nFrom: a@b.org\r\n\r\nbody\r\n"
    e = parse_entity(raw)
    assert [h.name for h in e.headers] == ["Subject", "From"]
    assert e.get("subject") == "one two"
    assert e.body == b"body\r\n"
    assert e.raw == raw


def test_malformed_header_line_is_input_error() -> None:
    with pytest.raises(InputError):
        parse_entity(b"Subject: x\r\nthis is not a header\r\n\r\nbody")


def test_split_multipart_is_byte_exact() -> None:
    body = b"preamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n\r\n--b\r\nX: y\r\n\r\nsecond\r\n--b--\r\nepilogue"
    parts = split_multipart(body, "b")
    # RFC 2046: the CRLF preceding a delimiter belongs to the delimiter.
    assert parts == [b"Content-Type: text/plain\r\n\r\nfirst\r\n", b"X: y\r\n\r\nsecond"]


def test_boundary_prefix_inside_content_is_not_a_delimiter() -> None:
    body = b"--b\r\n\r\nline --b inside\r\n--bx\r\n--b--\r\n"
    assert split_multipart(body, "b") == [b"\r\nline --b inside\r\n--bx"]


def test_no_delimiter_is_input_error() -> None:
    with pytest.raises(InputError):
        split_multipart(b"nothing here", "b")


def _nested(depth: int) -> bytes:
    msg = b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    for i in range(depth):
        b = f"b{i}".encode()
        msg = (
            b'Content-Type: multipart/mixed; boundary="'
            + b
            + b'"\r\n\r\n--'
            + b
            + b"\r\n"
            + msg
            + b"\r\n--"
            + b
            + b"--\r\n"
        )
    return b"From: a@b.org\r\n" + msg


def test_deep_nesting_is_refused_quickly() -> None:
    root = parse_entity(_nested(10_000))
    with pytest.raises(MessageTooLargeError):
        check_structure(root)


def test_reasonable_nesting_is_fine() -> None:
    root = parse_entity(_nested(5))
    check_structure(root)
    assert len(children(root)) == 1


def test_huge_header_values_are_not_memoised() -> None:
    """A sender must not be able to pin memory through the header-value memo."""
    from secmail.mime import entity as entity_module

    before = entity_module._unfolded_value.cache_info().currsize
    huge = b"Subject: " + b"x" * 100_000
    raw = huge + b"\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
    parsed = parse_entity(raw)
    assert parsed.get("subject") == "x" * 100_000
    assert entity_module._unfolded_value.cache_info().currsize <= before + 1  # Content-Type only


def test_only_content_fields_are_memoised() -> None:
    """From, Subject and the like (of decrypted messages too) are read, never kept process-wide."""
    from secmail.mime import entity as entity_module

    entity_module._unfolded_value.cache_clear()
    raw = b"From: Alice <alice@ac-besancon.fr>\r\nSubject: secret plans\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
    parsed = parse_entity(raw)
    assert parsed.get("from") == "Alice <alice@ac-besancon.fr>"
    assert parsed.get("subject") == "secret plans"
    assert parsed.get("content-type") == "text/plain"
    assert entity_module._unfolded_value.cache_info().currsize == 1  # Content-Type only


@pytest.mark.parametrize("size", [0, 1, 2, 3, 56, 57, 58, 113, 114, 115, 3000, 3001])
def test_base64_lines_match_the_standard_library(size: int) -> None:
    data = os.urandom(size)
    encoded = base64_lines(data)
    assert encoded == base64.encodebytes(data).replace(b"\n", b"\r\n")
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    assert base64.b64decode(encoded.replace(b"\r\n", b"")) == data


def test_canonicalize_turns_every_line_break_into_crlf() -> None:
    rng = random.Random(8551)
    for _ in range(3000):
        data = bytes(rng.choice(b"a\r\n") for _ in range(rng.randrange(12)))
        expected = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
        assert canonicalize(data) == expected, data
        assert canonicalize(expected) == expected
