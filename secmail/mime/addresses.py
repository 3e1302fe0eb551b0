"""Reading mailboxes out of header fields, strictly.

The sender check is where "Johnny, you are fired" identity attacks land:
display names that look like addresses, several From fields or
mailboxes, look-alike or invisible characters. Only one well-formed ASCII
addr-spec is ever compared; anything else is ambiguous and never GREEN.
Internationalised (SMTPUTF8) addresses are treated as ambiguous for now:
comparing them safely needs RFC 8398 normalisation on both sides.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from email.headerregistry import Address, AddressHeader
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import default as _default_policy

from secmail.mime.entity import Entity
from secmail.verdict import FromCheck, Reason

# RFC 5322 dot-atom local part, or any printable ASCII once unquoted; an
# LDH domain with at least one dot (or a bracketed literal, refused).
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$")


def normalise_addr_spec(value: str) -> str | None:
    """``local@domain`` with the domain lower-cased, or None if not plain.

    The local part is kept as is: RFC 5321 §2.4 makes it case-sensitive.
    """
    # Every call reads the acting user's address, and most read a From:
    # the same few strings again and again. Memoised up to the longest
    # address RFC 5321 allows (with angle brackets and some space).
    if len(value) <= _MEMO_LENGTH:
        return _normalise_memo(value)
    return _normalise(value)


_MEMO_LENGTH = 320


@functools.lru_cache(maxsize=4096)
def _normalise_memo(value: str) -> str | None:
    return _normalise(value)


def _normalise(value: str) -> str | None:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    if not value.isascii() or value.count("@") != 1:
        return None
    local, domain = value.split("@")
    if not local or len(local) > 64:
        return None
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        local = local[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if not local or any(ord(c) < 0x21 or ord(c) > 0x7E for c in local):
            return None
    elif not _LOCAL.match(local) or local.startswith(".") or ".." in local or local.endswith("."):
        return None
    if not _DOMAIN.match(domain):
        return None
    return f"{local}@{domain.lower()}"


def _parse_address_field(raw: bytes) -> tuple[Address, ...] | None:
    msg = BytesHeaderParser(policy=_default_policy).parsebytes(raw + b"\r\n\r\n")
    name = raw.split(b":", 1)[0].decode("ascii", "replace")
    header = msg[name]
    if not isinstance(header, AddressHeader) or bool(getattr(header, "defects", None)):
        return None
    return tuple(header.addresses)


#: Unicode categories that draw nothing or reorder text: control, format
#: (zero-width joiners, bidi overrides), separators, private use, surrogates,
#: unassigned. None belongs in a From field secmail would vouch for.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})
#: Characters that read as the "@" of an address.
_AT_SIGNS = "@\uff20\ufe6b"


def _has_invisible(text: str) -> bool:
    return any(c not in "\t\r\n" and unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in text)


def _count_at_signs(text: str) -> int:
    return sum(text.count(c) for c in _AT_SIGNS)


def read_from(entity: Entity) -> FromCheck:
    """The single From mailbox of a message (RFC 5322 §3.6.2), or a problem.

    Ambiguous, and so never bound to a signer: no From or several From
    fields, several mailboxes or a group, an unreadable field, invisible
    or reordering characters anywhere in it, a non-ASCII addr-spec, and a
    display name or comment that shows another address than the addr-spec
    ("alice@corp" <eve@corp>, "Johnny, you are fired" §4.2).
    """
    fields = entity.get_all("from")
    if len(fields) != 1:
        return FromCheck(None, Reason.FROM_AMBIGUOUS)
    return _read_from_field(fields[0].raw)


# A pure function of the field's bytes: the email package's address parser
# costs ~0.5 ms, and a reader verifies many messages from the same senders.
@functools.lru_cache(maxsize=4096)
def _read_from_field(raw: bytes) -> FromCheck:
    ambiguous = FromCheck(None, Reason.FROM_AMBIGUOUS)
    try:
        # RFC 6532 allows UTF-8 in header values (display names with
        # accents); any other 8-bit bytes cannot be read reliably.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return ambiguous
    if _has_invisible(text):
        return ambiguous
    try:
        header = HeaderParser(policy=_default_policy).parsestr(text + "\r\n\r\n")["from"]
    except Exception:  # the email package raises a variety of errors on junk
        return ambiguous
    if not isinstance(header, AddressHeader) or getattr(header, "defects", None):
        return ambiguous
    if any(group.display_name is not None for group in header.groups) or len(header.addresses) != 1:
        return ambiguous
    addr = header.addresses[0]
    if not addr.username or not addr.domain:
        return ambiguous
    normalised = normalise_addr_spec(f"{_quote_local(addr.username)}@{addr.domain}")
    if normalised is None:
        return ambiguous
    name = addr.display_name or ""
    # Encoded words (RFC 2047) are decoded into the display name only.
    if _has_invisible(name):
        return ambiguous
    name_is_the_address = normalise_addr_spec(name) == normalised
    if _count_at_signs(name) and not name_is_the_address:
        return ambiguous
    # A second "@" in the raw field sits in a comment or a quoted local
    # part, which some clients show in place of the address.
    if _count_at_signs(text) > (2 if name_is_the_address else 1):
        return ambiguous
    return FromCheck(normalised)


def _quote_local(local: str) -> str:
    return local if _LOCAL.match(local) and ".." not in local else '"' + local.replace('"', '\\"') + '"'


def read_recipients(entity: Entity, names: tuple[str, ...] = ("to", "cc", "bcc")) -> list[str]:
    """Every addr-spec of To, Cc and Bcc, normalised, in order, no duplicates.

    Raises nothing; unreadable mailboxes are returned as their raw text so
    that the caller can report them as missing keys rather than drop them.
    """
    out: list[str] = []
    for name in names:
        for field in entity.get_all(name):
            try:
                addresses = _parse_address_field(field.raw) or ()
            except Exception:
                addresses = ()
            for addr in addresses:
                if not addr.username and not addr.domain:
                    continue
                spec = f"{_quote_local(addr.username)}@{addr.domain}"
                out.append(normalise_addr_spec(spec) or spec)
    return list(dict.fromkeys(out))
