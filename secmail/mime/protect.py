"""Header protection (RFC 9788) and the legacy ``protected-headers="v1"`` form.

Writing: the user-facing header fields are copied into the Cryptographic
Payload, whose Content-Type gets ``hp="clear"`` (signed only) or
``hp="cipher"`` (encrypted); for encrypted messages the outer Subject is
replaced by ``[...]`` (hcp_baseline, RFC 9788 §3.2) and the outer values
are recorded as ``HP-Outer`` fields inside.

Reading: when the payload carries protected headers they replace the outer
ones entirely (RFC 9788 §4: unprotected copies are not merged in), and a
legacy display element (RFC 9788 §2.1.2, or the v1 draft's first
``text/rfc822-headers``-like part) is dropped from what is displayed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from secmail.mime.entity import CRLF, Entity, Header, children, parse_entity

#: Fields copied into (and, when reading, taken from) the protected section.
USER_FACING = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "references",
    "in-reply-to",
    "reply-to",
    "followup-to",
    "sender",
    "keywords",
    "comments",
    "mail-followup-to",
)

_OBSCURED_SUBJECT = b"Subject: [...]"
_HCP_REMOVED = ("keywords", "comments")


def is_content_field(name: str) -> bool:
    n = name.lower()
    return n.startswith("content-") or n == "mime-version"


@dataclass(frozen=True, slots=True)
class Payload:
    """What a protected or unprotected payload says about its headers."""

    #: The protected header fields, or None when the payload has none.
    protected: tuple[Header, ...] | None
    #: The content entity to display (legacy display element removed).
    content: Entity


def _hp_value(entity: Entity) -> str | None:
    ctype = entity.content_type
    hp = ctype.param("hp")
    if hp is not None:
        return hp.lower()
    if (ctype.param("protected-headers") or "").lower() == "v1":
        return "v1"
    return None


def read_payload(entity: Entity) -> Payload:
    """Split a cryptographic payload into protected headers and content."""
    hp = _hp_value(entity)
    if hp is None:
        return Payload(None, entity)
    protected = tuple(h for h in entity.headers if not is_content_field(h.name) and h.lname != "hp-outer")
    return Payload(protected, _drop_legacy_display(entity, hp))


def _drop_legacy_display(entity: Entity, hp: str) -> Entity:
    ctype = entity.content_type
    if ctype.mime_type != "multipart/mixed":
        return entity
    try:
        kids = children(entity)
    except Exception:
        return entity
    if len(kids) < 2:
        return entity
    first = kids[0].content_type
    legacy = (first.param("hp-legacy-display") == "1") or (
        hp == "v1" and first.maintype == "text" and (first.param("protected-headers") or "").lower() == "v1"
    )
    if not legacy:
        return entity
    boundary = ctype.param("boundary") or ""
    # Rebuild the multipart without its first part; the remaining parts keep
    # their bytes.
    body = b"".join(b"--" + boundary.encode() + CRLF + k.raw + CRLF for k in kids[1:])
    body += b"--" + boundary.encode() + b"--" + CRLF
    raw = entity.header_bytes() + CRLF + body
    return parse_entity(raw)


def outer_fields_for_display(outer: Entity, protected: tuple[Header, ...] | None) -> list[Header]:
    """Outer fields that stay in the displayed message.

    Content fields always come from the payload. With protected headers,
    every user-facing outer field is dropped (the protected ones replace
    them); transport fields (Received, Authentication-Results...) stay.
    """
    keep: list[Header] = []
    for h in outer.headers:
        if is_content_field(h.name):
            continue
        if protected is not None and h.lname in USER_FACING:
            continue
        keep.append(h)
    return keep


def compose_display(outer: Entity, payload: Payload) -> bytes:
    """The message a webmail shows: header fields + the content entity."""
    fields = outer_fields_for_display(outer, payload.protected)
    if payload.protected is not None:
        fields = [*payload.protected, *fields]
    content = payload.content
    content_fields = [h for h in content.headers if is_content_field(h.name) and h.lname != "mime-version"]
    # Strip the hp / protected-headers parameters: they describe the payload,
    # not the displayed message.
    content_fields = [_strip_hp_param(h) if h.lname == "content-type" else h for h in content_fields]
    head = b"".join(h.raw + CRLF for h in fields)
    head += b"MIME-Version: 1.0" + CRLF
    head += b"".join(h.raw + CRLF for h in content_fields)
    return head + CRLF + content.body


_HP_PARAM = re.compile(rb';\s*(?:hp|protected-headers)="?[A-Za-z0-9]+"?', re.IGNORECASE)


def _strip_hp_param(h: Header) -> Header:
    return Header(h.name, _HP_PARAM.sub(b"", h.raw))


def build_payload(message: Entity, *, hp: str | None) -> tuple[bytes, list[Header]]:
    """The Cryptographic Payload for an outgoing message, and its outer fields.

    ``hp`` is "clear", "cipher" or None (no header protection). Returns
    the payload entity bytes (CRLF) and the non-content outer fields to put
    above the cryptographic layer.
    """
    outer = [h for h in message.headers if not is_content_field(h.name)]
    content = [h for h in message.headers if is_content_field(h.name) and h.lname != "mime-version"]
    if not any(h.lname == "content-type" for h in content):
        content.insert(0, Header("Content-Type", b'Content-Type: text/plain; charset="us-ascii"'))
    if hp is not None:
        content = [_add_hp_param(h, hp) if h.lname == "content-type" else h for h in content]
    protected: list[Header] = []
    if hp is not None:
        protected = [h for h in outer if h.lname in USER_FACING]
    hp_outer: list[Header] = []
    new_outer = list(outer)
    if hp == "cipher":
        new_outer = []
        for h in outer:
            if h.lname == "subject":
                new_outer.append(Header("Subject", _OBSCURED_SUBJECT))
            elif h.lname in _HCP_REMOVED:
                continue
            else:
                new_outer.append(h)
        for h in new_outer:
            if h.lname in USER_FACING:
                hp_outer.append(Header("HP-Outer", b"HP-Outer: " + h.raw))
    payload = b"".join(h.raw + CRLF for h in [*content, *protected, *hp_outer])
    payload += CRLF + message.body
    return payload, new_outer


def _add_hp_param(h: Header, hp: str) -> Header:
    raw = _HP_PARAM.sub(b"", h.raw)
    return Header(h.name, raw + b'; hp="' + hp.encode() + b'"')
