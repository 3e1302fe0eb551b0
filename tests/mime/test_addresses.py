"""From parsing against the identity classes of "Johnny, you are fired"."""

from __future__ import annotations

import pytest

from secmail.mime.addresses import normalise_addr_spec, read_from, read_recipients
from secmail.mime.entity import parse_entity
from secmail.verdict import Reason


def from_of(header_lines: bytes) -> tuple[str | None, Reason | None]:
    check = read_from(parse_entity(header_lines + b"\r\n\r\nbody"))
    return check.address, check.problem


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (b"From: Alice <alice@Example.ORG>", "alice@example.org"),
        (b"From: alice@example.org", "alice@example.org"),
        (b'From: "alice"@example.org', "alice@example.org"),
        ("From: Élodie Dupré <elodie@example.org>".encode(), "elodie@example.org"),
    ],
    ids=["display-name", "bare", "quoted-local", "utf8-display-name"],
)
def test_single_mailbox(field: bytes, expected: str) -> None:
    assert from_of(field) == (expected, None)


@pytest.mark.parametrize(
    "lines",
    [
        b"To: bob@example.org",  # missing
        b"From: ",  # empty
        b"From: alice@example.org\r\nFrom: eve@evil.example",  # two fields
        b"From: alice@example.org, eve@evil.example",  # two mailboxes
        b"From: undisclosed:;",  # group
        "From: al\u200bice@example.org".encode(),  # zero-width space
        "From: alice@exаmple.org".encode(),  # Cyrillic a
        "From: alice@example.org\u202e".encode(),  # bidi override
        b"From: <alice@example.org",  # broken
        b"From: alice@[127.0.0.1]",  # address literal
        # A display name that looks like an address would be what a user
        # reads: ambiguous, never GREEN ("Johnny, you are fired" §4.2).
        b'From: "manager@corp.example" <eve@evil.example>',
        b"From: =?utf-8?q?boss=40corp=2Eexample?= <eve@evil.example>",
    ],
    ids=[
        "missing",
        "empty",
        "two-fields",
        "two-mailboxes",
        "group",
        "zero-width",
        "homoglyph",
        "bidi",
        "broken",
        "literal",
        "address-like-name",
        "encoded-address-like-name",
    ],
)
def test_ambiguous_from(lines: bytes) -> None:
    assert from_of(lines) == (None, Reason.FROM_AMBIGUOUS)


def test_normalise() -> None:
    assert normalise_addr_spec(" Jean.Dupont@AC-Besancon.FR ") == "Jean.Dupont@ac-besancon.fr"
    assert normalise_addr_spec("a..b@example.org") is None
    assert normalise_addr_spec("no-at-sign") is None
    assert normalise_addr_spec("é@example.org") is None


def test_recipients() -> None:
    e = parse_entity(b"To: A <a@x.org>, b@y.org\r\nCc: c@z.org\r\nBcc: a@x.org\r\n\r\n")
    assert read_recipients(e) == ["a@x.org", "b@y.org", "c@z.org"]
