from __future__ import annotations

from secmail.mime.entity import parse_entity
from secmail.mime.protect import build_payload, compose_display, read_payload

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: Secret plans\r\n"
    b"Keywords: plans\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"Received: from somewhere\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"hello\r\n"
)


def test_signed_payload_copies_user_facing_headers() -> None:
    payload, outer = build_payload(parse_entity(MESSAGE), hp="clear")
    inner = parse_entity(payload)
    assert inner.content_type.param("hp") == "clear"
    assert inner.get("subject") == "Secret plans"
    assert inner.get("received") is None
    assert [h.name for h in outer] == ["From", "To", "Subject", "Keywords", "Message-ID", "Received"]


def test_encrypted_payload_obscures_outer_subject() -> None:
    payload, outer = build_payload(parse_entity(MESSAGE), hp="cipher")
    inner = parse_entity(payload)
    assert inner.content_type.param("hp") == "cipher"
    outer_fields = {h.lname: h.value for h in outer}
    assert outer_fields["subject"] == "[...]"
    assert "keywords" not in outer_fields
    assert "Subject: [...]" in [h.value for h in inner.get_all("hp-outer")]


def test_read_payload_replaces_outer_headers() -> None:
    payload, outer = build_payload(parse_entity(MESSAGE), hp="cipher")
    read = read_payload(parse_entity(payload))
    assert read.protected is not None
    outer_entity = parse_entity(b"".join(h.raw + b"\r\n" for h in outer) + b"\r\n")
    display = parse_entity(compose_display(outer_entity, read))
    assert display.get("subject") == "Secret plans"
    assert len(display.get_all("subject")) == 1
    assert display.get("received") == "from somewhere"
    assert display.content_type.param("hp") is None
    assert display.body == b"hello\r\n"


def test_no_protection_keeps_outer_headers() -> None:
    payload, _outer = build_payload(parse_entity(MESSAGE), hp=None)
    read = read_payload(parse_entity(payload))
    assert read.protected is None
    assert parse_entity(payload).get("subject") is None


def test_legacy_display_part_is_dropped() -> None:
    inner = (
        b'Content-Type: multipart/mixed; boundary="6ae"; protected-headers="v1"\r\n'
        b"Subject: Real subject\r\n\r\n"
        b'--6ae\r\ncontent-type: text/plain; protected-headers="v1"\r\n\r\nSubject: Real subject\r\n\r\n'
        b"--6ae\r\nContent-Type: text/plain\r\n\r\nthe body\r\n--6ae--\r\n"
    )
    read = read_payload(parse_entity(inner))
    assert read.protected is not None and read.protected[0].value == "Real subject"
    assert b"Subject: Real subject" not in read.content.body
    assert b"the body" in read.content.body
