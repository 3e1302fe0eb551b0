"""Neutralising active and remote content in HTML (EFAIL countermeasure).

Decrypted content that is not integrity protected (CBC EnvelopedData
without a valid signature over it) may have been modified by CBC gadgets
to exfiltrate plaintext through remote URLs (EFAIL, USENIX Security 2018).
Such HTML is returned cleaned by Ammonia (through ``nh3``): no scripts,
no forms, no styles that can load anything, and only ``cid:`` and
``mailto:`` URLs survive, so nothing can be fetched from the network.
"""

from __future__ import annotations

import nh3

from secmail.mime.entity import CRLF, Entity, Header, base64_lines, canonicalize, children, parse_entity
from secmail.mime.layers import decode_body

_URL_SCHEMES = {"cid", "mailto"}
#: Types a webmail renders as HTML.
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_MAX_DEPTH = 32


#: Attributes whose value is a URL a browser may fetch or follow.
_URL_ATTRIBUTES = frozenset(
    {
        "action",
        "archive",
        "background",
        "cite",
        "classid",
        "codebase",
        "data",
        "dynsrc",
        "formaction",
        "href",
        "icon",
        "longdesc",
        "lowsrc",
        "manifest",
        "ping",
        "poster",
        "profile",
        "src",
        "srcset",
        "usemap",
        "xlink:href",
    }
)


def _keep_attribute(_tag: str, attribute: str, value: str) -> str | None:
    # url_schemes only judges URLs that have a scheme: a relative URL
    # ("//evil.example/x", "\\evil.example\\x", "x.png") would resolve
    # against whatever base the client uses, which for "//" and "\\\\" is
    # any host. Only cid: and mailto: survive, whatever their form.
    if attribute.lower() in _URL_ATTRIBUTES and not value.strip().lower().startswith(("cid:", "mailto:")):
        return None
    return value


def clean_html(html: str) -> str:
    return nh3.clean(
        html,
        url_schemes=_URL_SCHEMES,
        attribute_filter=_keep_attribute,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )


def _clean_entity(entity: Entity, depth: int) -> tuple[bytes, bool]:
    ctype = entity.content_type
    if depth > _MAX_DEPTH:
        return entity.raw, False
    if ctype.maintype == "multipart":
        boundary = ctype.param("boundary") or ""
        changed = False
        parts: list[bytes] = []
        for kid in children(entity):
            raw, kid_changed = _clean_entity(kid, depth + 1)
            changed = changed or kid_changed
            parts.append(raw)
        if not changed:
            return entity.raw, False
        delim = b"--" + boundary.encode("ascii", "replace")
        body = b"".join(delim + CRLF + p + CRLF for p in parts) + delim + b"--" + CRLF
        return entity.header_bytes() + CRLF + body, True
    if ctype.mime_type == "message/rfc822":
        # Webmails render an attached message inline: its HTML is as live as
        # a top-level part's (RFC 2046 §5.2.1 keeps it 7bit/8bit/binary, but
        # an encoded one is decoded rather than skipped). An unreadable one
        # raises InputError, as an unreadable multipart does: nothing that
        # could not be cleaned is released.
        inner = parse_entity(canonicalize(decode_body(entity)))
        cleaned_inner, changed = _clean_entity(inner, depth + 1)
        if not changed:
            return entity.raw, False
        kept = [h for h in entity.headers if h.lname != "content-transfer-encoding"]
        return b"".join(h.raw + CRLF for h in kept) + CRLF + cleaned_inner, True
    if ctype.mime_type in _HTML_TYPES:
        charset = ctype.param("charset") or "utf-8"
        try:
            text = decode_body(entity).decode(charset, "replace")
        except LookupError:
            text = decode_body(entity).decode("utf-8", "replace")
        cleaned = clean_html(text)
        headers = [h for h in entity.headers if h.lname not in ("content-type", "content-transfer-encoding")]
        head = b"".join(h.raw + CRLF for h in headers)
        head += b'Content-Type: text/html; charset="utf-8"' + CRLF
        head += b"Content-Transfer-Encoding: base64" + CRLF
        body = base64_lines(cleaned.encode("utf-8"))
        return head + CRLF + body, True
    return entity.raw, False


def neutralise_message(message: bytes) -> tuple[bytes, bool]:
    """Clean every text/html part; returns (message, whether any was cleaned)."""
    root = parse_entity(message)
    content_headers = [h for h in root.headers if h.lname.startswith("content-")]
    other = [h for h in root.headers if not h.lname.startswith("content-")]
    entity = Entity(tuple(content_headers), root.body, _header_bytes(content_headers) + CRLF + root.body)
    cleaned, changed = _clean_entity(entity, 0)
    if not changed:
        return message, False
    return _header_bytes(other) + cleaned, True


def _header_bytes(headers: list[Header]) -> bytes:
    return b"".join(h.raw + CRLF for h in headers)
