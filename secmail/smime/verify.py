"""CMS SignedData verification (RFC 5652 §5, RFC 8551 §2-§3).

Every SignerInfo becomes one :class:`SignerResult`, failed ones included; a
failed check is a :class:`Reason`, never an exception. Only input that
cannot be read as a SignedData raises (:class:`InputError`).

What a signer must pass, in order: the content is unambiguous (a detached
content and a different eContent in the same message is the CMS "content
confusion" attack), the named certificate is among the message's
certificates, the algorithms are known, the signed attributes are
well-formed and bind the content (contentType, messageDigest), the signature
mathematics hold, and then the certificate path (``secmail.trust.path``).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar, cast

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from secmail._lru import BoundedLRU
from secmail.context import VerifyContext
from secmail.errors import InputError, UnsupportedAlgorithmError
from secmail.mime.addresses import normalise_addr_spec
from secmail.smime import _certs
from secmail.smime import algorithms as alg
from secmail.smime._certs import MessageCert as _MessageCert
from secmail.trust import path as trust_path
from secmail.verdict import ChainCertificate, Reason, Scheme, SignerResult

logger = logging.getLogger(__name__)

_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError)


@dataclass(frozen=True)
class SignedDataResult:
    #: One result per SignerInfo, in message order; failed signers included.
    signers: tuple[SignerResult, ...]
    #: The encapsulated content (opaque signing), or None when detached.
    encap_content: bytes | None
    #: Every X.509 certificate the message carries.
    certificates: tuple[x509.Certificate, ...]


class _SignerStopError(Exception):
    """Ends one signer's evaluation with the reasons gathered so far."""

    def __init__(self, *reasons: Reason) -> None:
        super().__init__()
        self.reasons = reasons


@dataclass(slots=True)
class _SignerFacts:
    claimed_key_id: str = ""
    cert: _MessageCert | None = None
    algorithm: str = ""
    claimed_signing_time: datetime | None = None
    reasons: list[Reason] = field(default_factory=list)


def verify_signed_data(der: bytes, *, detached_content: bytes | None, ctx: VerifyContext) -> SignedDataResult:
    """Verify every signer of a DER (or BER) ContentInfo(SignedData).

    ``detached_content`` is the signed content of a multipart/signed message
    (the first part's exact bytes) or None for opaque signed-data.
    """
    signer_infos, econtent_type, econtent, certs = _parse(der)

    content: bytes | None
    content_problem: Reason | None = None
    if detached_content is not None and econtent is not None and econtent != detached_content:
        # Two different contents claim the same signature; whichever the
        # signature covers, the other would be displayed as signed.
        content, content_problem = None, Reason.BAD_SIGNATURE
    elif detached_content is not None:
        content = detached_content
    elif econtent is not None:
        content = econtent
    else:
        content, content_problem = None, Reason.MALFORMED_SIGNATURE

    results = tuple(
        _evaluate_signer(head, content, content_problem, econtent_type, certs, ctx) for head in signer_infos
    )
    return SignedDataResult(
        signers=results,
        encap_content=econtent,
        certificates=tuple(c.cert for c in certs),
    )


# --- parsing -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Sid:
    """What a SignerIdentifier names (RFC 5652 §5.3)."""

    by_issuer: bool
    #: issuerAndSerialNumber: the issuer Name's DER and the serial number.
    issuer_der: bytes = b""
    serial: int = 0
    #: subjectKeyIdentifier.
    ski: bytes = b""


@dataclass(frozen=True, slots=True)
class _Attribute:
    """A signed attribute (RFC 5652 §5.3), as far as secmail reads it."""

    oid: str
    #: For the interpreted attributes, what each value reads as: contentType
    #: the dotted OID (None: not an OID), messageDigest and signingTime
    #: asn1crypto's native value. Empty for the others.
    values: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class _SignerHead:
    """What is read from a SignerInfo before its evaluation."""

    sid: _Sid
    digest_oid: str
    signature_oid: str
    #: None when the SignerInfo has no signed attributes.
    attributes: tuple[_Attribute, ...] | None
    #: The signed attributes' contents octets (under the [0] tag), as received.
    signed_attrs: bytes | None
    signature: bytes
    #: The SignerInfo's received octets, for the rarer reads (an issuer Name
    #: compared semantically, RSASSA-PSS parameters): see :meth:`asn1`.
    der: bytes
    parsed: cms.SignerInfo | None = field(default=None, compare=False)

    def asn1(self) -> cms.SignerInfo:
        """asn1crypto's SignerInfo (parsed again from :attr:`der` when the
        fast reading below produced this head)."""
        return self.parsed if self.parsed is not None else cms.SignerInfo.load(self.der)


_Parsed = tuple[list[_SignerHead], str, bytes | None, list[_MessageCert]]


def _parse(der: bytes) -> _Parsed:
    known = _parse_known(der)
    return known if known is not None else _parse_asn1(der)


def _parse_asn1(der: bytes) -> _Parsed:
    try:
        info = cms.ContentInfo.load(bytes(der), strict=True)
        if info["content_type"].dotted != alg.OID_SIGNED_DATA:
            raise InputError("not a CMS SignedData")
        signed_data = info["content"]
        if not isinstance(signed_data, cms.SignedData):
            raise InputError("not a CMS SignedData")
        # Parse everything that is evaluated below now, so broken ASN.1 is an
        # InputError here and not a surprise halfway through the signers.
        signed_data["version"].native  # noqa: B018
        _derived("SignedData.digestAlgorithms", signed_data["digest_algorithms"], _read_fully)
        signer_infos = [_parse_signer_info(si) for si in signed_data["signer_infos"]]
        econtent_type, econtent = _encapsulated_content(signed_data)
        certs = _message_certificates(signed_data)
    except InputError:
        raise
    except _PARSE_ERRORS as exc:
        raise InputError("unreadable CMS SignedData") from exc
    return signer_infos, econtent_type, econtent, certs


# --- the known-parts reading --------------------------------------------------------------
# Written by hand (no library splits DER into exact octets without building
# an object tree): asn1crypto's lazy tree costs ~60 us per message, more than
# the RSA verification. It reads only what :func:`_parse` would read, and only
# where the outcome is already known: every part whose reading is memoised
# (_derived) must be found in the memo under its exact octets, i.e. read by
# asn1crypto before, and the per-message parts (version, signature,
# messageDigest, signingTime, eContent) must have the one plain DER shape read
# below. Anything else (BER, long or unusual forms, CRLs, unsigned attributes,
# a part seen for the first time) returns None and the message goes through
# asn1crypto, so both readings give the same result for every input
# (tests/smime/test_verify_caches.py compares them, on damaged input too).


class _NotKnownError(Exception):
    """The known-parts reading does not apply: read with asn1crypto."""


def _element(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, contents start, contents end) of the DER element at ``pos``,
    which must end by ``end``; definite lengths in their shortest form only."""
    if pos + 2 > end:
        raise _NotKnownError
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise _NotKnownError  # high tag number form
    first = data[pos + 1]
    if first < 0x80:
        length, start = first, pos + 2
    elif first == 0x81 and pos + 3 <= end and data[pos + 2] >= 0x80:
        length, start = data[pos + 2], pos + 3
    elif first == 0x82 and pos + 4 <= end and data[pos + 2] != 0:
        length, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
    elif first == 0x83 and pos + 5 <= end and data[pos + 2] != 0:
        length, start = int.from_bytes(data[pos + 2 : pos + 5], "big"), pos + 5
    else:
        raise _NotKnownError  # indefinite (BER), non-minimal or beyond 16 MiB
    if start + length > end:
        raise _NotKnownError
    return tag, start, start + length


def _elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, contents start, end) of each element in ``data[start:end]``."""
    found = []
    pos = start
    while pos < end:
        tag, contents, after = _element(data, pos, end)
        found.append((tag, pos, contents, after))
        pos = after
    return found


def _known(kind: str, raw: bytes) -> object:
    """The memoised reading of ``raw`` as ``kind`` (see :func:`_derived`)."""
    found = _derived_memo.get((kind, raw))
    if found is None:
        raise _NotKnownError
    return found[0]


_SIGNED_DATA_TYPE = bytes.fromhex("06092a864886f70d010702")  # id-signedData
_DATA_TYPE = bytes.fromhex("06092a864886f70d010701")  # id-data
#: CMSVersion 1 and 3, the SignedData and SignerInfo versions of RFC 5652 §5.1 and §5.3
#: for X.509 certificates (3: a SignerInfo naming its key by subjectKeyIdentifier).
_VERSIONS = (bytes.fromhex("020101"), bytes.fromhex("020103"))


def _parse_known(der: bytes) -> _Parsed | None:
    try:
        return _read_known(bytes(der))
    except (_NotKnownError, *_PARSE_ERRORS):
        # Unreadable parts (a signingTime that is no time) are reported by
        # the asn1crypto reading, as InputError.
        return None


def _read_known(der: bytes) -> _Parsed:
    # ContentInfo ::= SEQUENCE { contentType, content [0] EXPLICIT SignedData }.
    start, end = _typed_content(der, _SIGNED_DATA_TYPE, 0x30)
    # SignedData ::= SEQUENCE { version, digestAlgorithms, encapContentInfo,
    #   certificates [0] IMPLICIT OPTIONAL, crls [1] IMPLICIT OPTIONAL, signerInfos }
    fields = _elements(der, start, end)
    tags = [f[0] for f in fields]
    if tags not in ([0x02, 0x31, 0x30, 0xA0, 0x31], [0x02, 0x31, 0x30, 0x31]):
        raise _NotKnownError
    raw = [der[f[1] : f[3]] for f in fields]
    if raw[0] not in _VERSIONS:
        raise _NotKnownError
    _known("SignedData.digestAlgorithms", raw[1])
    econtent_type, econtent = _known_encapsulated(raw[2])
    certs = (
        _message_certs(cast("tuple[bytes, ...]", _known("SignedData.certificates", raw[3])))
        if len(raw) == 5
        else []
    )
    infos = fields[-1]
    heads = [_known_signer_info(der, f) for f in _elements(der, infos[2], infos[3])]
    return heads, econtent_type, econtent, certs


def _known_encapsulated(raw: bytes) -> tuple[str, bytes | None]:
    if len(raw) <= _SMALL_ENCAP:
        return cast("tuple[str, bytes | None]", _known("SignedData.encapContentInfo", raw))
    # Opaque signing: SEQUENCE { id-data, [0] EXPLICIT OCTET STRING (primitive) }.
    start, end = _typed_content(raw, _DATA_TYPE, 0x04)
    return alg.OID_DATA, raw[start:end]


def _typed_content(data: bytes, type_oid: bytes, inner_tag: int) -> tuple[int, int]:
    """Where the contents of X are in ``data`` = SEQUENCE { ``type_oid``, [0]
    EXPLICIT X }, X tagged ``inner_tag``, nothing after (ContentInfo, and
    EncapsulatedContentInfo with its content)."""
    tag, start, end = _element(data, 0, len(data))
    if tag != 0x30 or end != len(data):
        raise _NotKnownError
    parts = _elements(data, start, end)
    if len(parts) != 2 or data[parts[0][1] : parts[0][3]] != type_oid or parts[1][0] != 0xA0:
        raise _NotKnownError
    inner = _elements(data, parts[1][2], parts[1][3])
    if len(inner) != 1 or inner[0][0] != inner_tag:
        raise _NotKnownError
    return inner[0][2], inner[0][3]


def _known_signer_info(der: bytes, element: tuple[int, int, int, int]) -> _SignerHead:
    # SignerInfo ::= SEQUENCE { version, sid, digestAlgorithm, signedAttrs [0]
    #   IMPLICIT OPTIONAL, signatureAlgorithm, signature, unsignedAttrs [1] IMPLICIT OPTIONAL }
    tag, _, start, end = element
    if tag != 0x30:
        raise _NotKnownError
    fields = _elements(der, start, end)
    tags = [f[0] for f in fields]
    if len(tags) not in (5, 6) or tags[0] != 0x02 or tags[1] not in (0x30, 0x80) or tags[2] != 0x30:
        raise _NotKnownError
    if tags[3:] not in ([0xA0, 0x30, 0x04], [0x30, 0x04]):
        raise _NotKnownError
    raw = [der[f[1] : f[3]] for f in fields]
    if raw[0] not in _VERSIONS:
        raise _NotKnownError
    sid = cast("_Sid", _known("SignerInfo.sid", raw[1]))
    digest_oid = cast("str", _known("SignerInfo.digestAlgorithm", raw[2]))
    attributes: tuple[_Attribute, ...] | None = None
    contents: bytes | None = None
    if len(fields) == 6:
        attrs = fields[3]
        contents = der[attrs[2] : attrs[3]]
        attributes = tuple(
            _known_attribute(der[a[1] : a[3]], a[0]) for a in _elements(der, attrs[2], attrs[3])
        )
    signature_oid = cast("str", _known("SignerInfo.signatureAlgorithm", raw[-2]))
    signature = der[fields[-1][2] : fields[-1][3]]
    return _SignerHead(sid, digest_oid, signature_oid, attributes, contents, signature, der[element[1] : end])


def _known_attribute(raw: bytes, tag: int) -> _Attribute:
    if tag != 0x30:
        raise _NotKnownError
    quick = _quick_attribute(raw)
    if quick is not None:
        return quick
    return cast("_Attribute", _known("SignerInfo.signedAttrs[]", raw))


class _EncapsulatedContentInfo(core.Sequence):
    """RFC 5652 §5.2, with eContent kept opaque: asn1crypto's own class
    parses eContent by eContentType, and what is signed is just octets."""

    _fields = [  # noqa: RUF012 - asn1crypto's declarative spec
        ("content_type", core.ObjectIdentifier),
        ("content", core.Any, {"explicit": 0, "optional": True}),
    ]


#: An EncapsulatedContentInfo up to this size is remembered by its bytes
#: (a detached signature's is a dozen bytes; larger ones carry content).
_SMALL_ENCAP = 512


def _encapsulated_content(signed_data: cms.SignedData) -> tuple[str, bytes | None]:
    value = signed_data["encap_content_info"]
    received = _received_encoding(value)
    if received is not None and len(received) <= _SMALL_ENCAP:
        return _derived("SignedData.encapContentInfo", value, _read_encapsulated_content)
    return _read_encapsulated_content(value)


def _read_encapsulated_content(value: cms.EncapsulatedContentInfo) -> tuple[str, bytes | None]:
    raw = bytes(value.dump())
    encap = _EncapsulatedContentInfo.load(raw)
    value = encap["content"]
    if isinstance(value, core.Void):
        return encap["content_type"].dotted, None
    octets = value.parse(core.OctetString).native
    if not isinstance(octets, bytes):
        raise InputError("eContent is not an OCTET STRING")
    return encap["content_type"].dotted, octets


#: The signed attributes whose values secmail interprets.
_INTERPRETED_ATTRIBUTES = frozenset({alg.OID_CONTENT_TYPE, alg.OID_MESSAGE_DIGEST, alg.OID_SIGNING_TIME})


def _parse_signer_info(signer_info: cms.SignerInfo) -> _SignerHead:
    """Parse the parts of a SignerInfo that are evaluated. Other attributes'
    values stay opaque: asn1crypto's idea of e.g. an ESS security label must
    not make a message unreadable (RFC 4134 §4.10 carries such labels)."""
    signer_info["version"].native  # noqa: B018
    sid = _derived("SignerInfo.sid", signer_info["sid"], _read_sid)
    digest_oid = _derived("SignerInfo.digestAlgorithm", signer_info["digest_algorithm"], _read_algorithm)
    signature_oid = _derived(
        "SignerInfo.signatureAlgorithm", signer_info["signature_algorithm"], _read_algorithm
    )
    signature = bytes(signer_info["signature"].native)
    signed_attrs = signer_info["signed_attrs"]
    attributes: tuple[_Attribute, ...] | None = None
    contents: bytes | None = None
    if not isinstance(signed_attrs, core.Void):
        attributes = tuple(_read_signed_attribute(attribute) for attribute in signed_attrs)
        contents = bytes(signed_attrs.contents)
    received = _received_encoding(signer_info)
    return _SignerHead(
        sid, digest_oid, signature_oid, attributes, contents, signature, received or b"", signer_info
    )


def _read_signed_attribute(attribute: cms.CMSAttribute) -> _Attribute:
    raw = _received_encoding(attribute)
    if raw is not None:
        quick = _quick_attribute(raw)
        if quick is not None:
            return quick
    return _derived("SignerInfo.signedAttrs[]", attribute, _read_attribute, keep=_worth_keeping)


_MESSAGE_DIGEST_TYPE = bytes.fromhex("06092a864886f70d010904")  # OID 1.2.840.113549.1.9.4
_SIGNING_TIME_TYPE = bytes.fromhex("06092a864886f70d010905")  # OID 1.2.840.113549.1.9.5


def _quick_attribute(raw: bytes) -> _Attribute | None:
    """What :func:`_read_attribute` reads from ``raw``, for the two
    attributes each message has its own of (messageDigest, signingTime as
    UTCTime), when they are encoded the plain way; None for anything else.

    The plain way, byte by byte: SEQUENCE (30, short length) { the OID
    (06 09 ...), SET (31, short length) { one OCTET STRING (04) or UTCTime
    (17), primitive, short length } }, every length exact. asn1crypto reads
    such octets as exactly this (the time itself is still read by it), and
    reading them through a CMSAttribute costs ~15-20 µs each.
    """
    size = len(raw)
    # Short-form lengths only: with size <= 129 every length octet that
    # matches below is < 0x80, so none can be a long-form length prefix.
    if (
        not 17 <= size <= 129
        or raw[0] != 0x30
        or raw[1] != size - 2
        or raw[13] != 0x31
        or raw[14] != size - 15
    ):
        return None
    value = raw[15:]
    if value[1] != len(value) - 2:
        return None
    kind = raw[2:13]
    if kind == _MESSAGE_DIGEST_TYPE and value[0] == 0x04:
        return _Attribute(alg.OID_MESSAGE_DIGEST, (value[2:],))
    if kind == _SIGNING_TIME_TYPE and value[0] == 0x17:
        return _Attribute(alg.OID_SIGNING_TIME, (core.UTCTime.load(value).native,))
    return None


def _read_attribute(attribute: cms.CMSAttribute) -> _Attribute:
    oid = str(attribute["type"].dotted)
    if oid not in _INTERPRETED_ATTRIBUTES:
        return _Attribute(oid)
    values = attribute["values"]
    values.native  # noqa: B018 - raises on broken ASN.1
    if oid == alg.OID_CONTENT_TYPE:
        return _Attribute(
            oid, tuple(v.dotted if isinstance(v, core.ObjectIdentifier) else None for v in values)
        )
    return _Attribute(oid, tuple(v.native for v in values))


def _worth_keeping(attribute: _Attribute) -> bool:
    # A message's digest and signing time are its own: keeping them would
    # only push out what other messages repeat.
    return attribute.oid not in (alg.OID_MESSAGE_DIGEST, alg.OID_SIGNING_TIME)


def _read_fully(value: core.Asn1Value) -> None:
    value.native  # noqa: B018 - raises on broken ASN.1


def _read_sid(sid: cms.SignerIdentifier) -> _Sid:
    sid.native  # noqa: B018 - raises on broken ASN.1
    if sid.name == "issuer_and_serial_number":
        wanted = sid.chosen
        return _Sid(
            by_issuer=True, issuer_der=bytes(wanted["issuer"].dump()), serial=wanted["serial_number"].native
        )
    return _Sid(by_issuer=False, ski=bytes(sid.chosen.native))


def _read_algorithm(value: algos.DigestAlgorithm | algos.SignedDigestAlgorithm) -> str:
    value.native  # noqa: B018 - raises on broken ASN.1
    return str(value["algorithm"].dotted)


#: What was read from received encodings, by (kind, exact octets). Reading
#: a part of a message is a pure function of its asn1crypto type and its
#: octets, so the result of reading the same octets again is known: a
#: correspondent's messages repeat their SignerIdentifier, algorithm
#: identifiers and certificates, and reading them costs more than checking
#: the signature (a Name alone, ~0.1 ms). Only results are kept (plain
#: values, never asn1crypto objects); a read that raises is not kept, so
#: broken input raises every time. Bounded (LRU) in entries and in bytes.
_derived_memo: BoundedLRU[tuple[object]] = BoundedLRU(2048, 16 << 20, max_entry_weight=256 << 10)

_T = TypeVar("_T")
_V = TypeVar("_V", bound=core.Asn1Value)


def _derived(
    kind: str, value: _V, read: Callable[[_V], _T], *, keep: Callable[[_T], bool] | None = None
) -> _T:
    """``read(value)``, once per distinct encoding of ``value``.

    ``kind`` names both the field (hence the asn1crypto type ``value`` was
    parsed as) and ``read``: each call site passes its own. ``keep`` may
    decline to remember a result.
    """
    raw = _received_encoding(value)
    if raw is None:
        return read(value)
    key = (kind, raw)
    found = _derived_memo.get(key)
    if found is not None:
        return cast("_T", found[0])
    result = read(value)
    if keep is None or keep(result):
        # The key holds the octets, the result at most as many again
        # (the certificates of a CertificateSet).
        _derived_memo.put(key, (result,), 2 * len(raw) + 256)
    return result


def _received_encoding(value: core.Asn1Value) -> bytes | None:
    """The exact octets ``value`` was parsed from (tag, length, contents,
    end-of-contents), or None when they cannot be told.

    asn1crypto (pinned at 1.5.1) keeps them as ``_header``, ``contents``
    and ``_trailer``; ``dump()`` is not used because it re-encodes BER. An
    untagged CHOICE keeps them on the alternative it chose.
    """
    if isinstance(value, core.Choice):
        if value.explicit is not None:
            return None
        value = value.chosen
    header = getattr(value, "_header", None)
    contents = value.contents
    trailer = getattr(value, "_trailer", None)
    if not isinstance(header, bytes) or not isinstance(contents, bytes) or not isinstance(trailer, bytes):
        return None
    return header + contents + trailer


def _message_certificates(signed_data: cms.SignedData) -> list[_MessageCert]:
    found: list[_MessageCert] = []
    cert_set = signed_data["certificates"]
    if isinstance(cert_set, core.Void):
        return found
    return _message_certs(_derived("SignedData.certificates", cert_set, _certificate_ders))


def _message_certs(ders: Sequence[bytes]) -> list[_MessageCert]:
    found: list[_MessageCert] = []
    for der in ders:
        cert = _certs.message_cert(der)
        if cert is None:
            # cryptography refuses some certificates asn1crypto reads; such a
            # certificate cannot be a verified signer, so it is left out.
            continue
        found.append(cert)
    return found


def _certificate_ders(cert_set: cms.CertificateSet) -> tuple[bytes, ...]:
    # Attribute certificates and "other" formats are not signers: left out.
    return tuple(bytes(choice.chosen.dump()) for choice in cert_set if choice.name == "certificate")


# --- one signer ---------------------------------------------------------------------------------
def _evaluate_signer(
    head: _SignerHead,
    content: bytes | None,
    content_problem: Reason | None,
    econtent_type: str,
    certs: Sequence[_MessageCert],
    ctx: VerifyContext,
) -> SignerResult:
    facts = _SignerFacts()
    try:
        try:
            _check_signer(head, content, content_problem, econtent_type, certs, ctx, facts)
        except UnsupportedAlgorithmError as exc:
            raise _SignerStopError(Reason.UNSUPPORTED_ALGORITHM) from exc
        except _PARSE_ERRORS as exc:
            # A part of this SignerInfo that only now turned out unreadable.
            raise _SignerStopError(Reason.MALFORMED_SIGNATURE) from exc
    except _SignerStopError as stop:
        facts.reasons.extend(stop.reasons)
        return SignerResult(
            scheme=Scheme.SMIME,
            crypto_valid=False,
            reasons=tuple(dict.fromkeys(facts.reasons)),
            fingerprint=facts.cert.fingerprint if facts.cert else "",
            claimed_key_id=facts.claimed_key_id,
            claimed_signing_time=facts.claimed_signing_time,
            algorithm=facts.algorithm,
        )

    assert facts.cert is not None
    chain: tuple[ChainCertificate, ...] = ()
    try:
        path = trust_path.validate_email_signer(
            facts.cert.cert, [c.cert for c in certs], ctx.trust, at=ctx.at, policy=ctx.policy
        )
        facts.reasons.extend(path.reasons)
        chain = tuple(_certs.chain_certificate(c) for c in path.chain)
    except Exception:
        # A path validator that cannot decide must not let a signer look
        # trusted: fail closed to UNTRUSTED_CHAIN.
        logger.warning("S/MIME path validation raised; signer treated as untrusted", exc_info=True)
        facts.reasons.append(Reason.UNTRUSTED_CHAIN)

    signing_time = facts.claimed_signing_time
    if signing_time is not None and signing_time > ctx.at + ctx.policy.signing_time_tolerance:
        facts.reasons.append(Reason.SIGNING_TIME_SUSPICIOUS)

    return SignerResult(
        scheme=Scheme.SMIME,
        crypto_valid=True,
        reasons=tuple(dict.fromkeys(facts.reasons)),
        verified_addresses=facts.cert.addresses(_addresses),
        fingerprint=facts.cert.fingerprint,
        claimed_key_id=facts.claimed_key_id,
        claimed_signing_time=signing_time,
        chain=chain,
        algorithm=facts.algorithm,
    )


def _check_signer(
    head: _SignerHead,
    content: bytes | None,
    content_problem: Reason | None,
    econtent_type: str,
    certs: Sequence[_MessageCert],
    ctx: VerifyContext,
    facts: _SignerFacts,
) -> None:
    """Fill ``facts``; raise _SignerStopError with the reason that ends the evaluation."""
    candidates = _matching_certs(head, certs)
    facts.claimed_key_id = _claimed_key_id(head, candidates)
    if content_problem is not None:
        raise _SignerStopError(content_problem)
    assert content is not None
    if not candidates:
        raise _SignerStopError(Reason.SIGNER_KEY_MISSING)
    facts.cert = candidates[0]

    digest_name = alg.DIGEST_NAMES.get(head.digest_oid)
    sig_oid = head.signature_oid
    spec = alg.SIGNATURE_ALGORITHMS.get(sig_oid)
    facts.algorithm = sig_oid
    if digest_name is None or spec is None:
        raise _SignerStopError(Reason.UNSUPPORTED_ALGORITHM)

    family = spec.family
    pss: padding.PSS | None = None
    if family is alg.SigFamily.RSA_PSS:
        pss_params = _derived(
            "SignerInfo.signatureAlgorithm/pss", head.asn1()["signature_algorithm"], _pss_parameters
        )
        if pss_params is None:
            raise _SignerStopError(Reason.UNSUPPORTED_ALGORITHM)
        sig_hash, pss = pss_params
    elif family in (alg.SigFamily.ED25519, alg.SigFamily.ED448):
        sig_hash = None
    else:
        sig_hash = spec.digest or digest_name
    facts.algorithm = _algorithm_name(family, sig_hash, facts.cert.cert)
    if family in alg.REFUSED_SIGNATURE_FAMILIES:
        raise _SignerStopError(Reason.UNSUPPORTED_ALGORITHM)

    attributes = head.attributes
    if attributes is None:
        # RFC 5652 §5.3: attributes are mandatory unless the content is id-data.
        if econtent_type != alg.OID_DATA:
            raise _SignerStopError(Reason.MALFORMED_SIGNATURE)
        signed_bytes = content
    else:
        _check_signed_attributes(attributes, digest_name, econtent_type, content, facts)
        # RFC 5652 §5.4: the signature covers the attributes' DER under the
        # SET OF tag, not the [0] IMPLICIT tag they travel with. The received
        # octets are used as they are (they MUST already be DER).
        assert head.signed_attrs is not None
        signed_bytes = alg.der_tlv(0x31, head.signed_attrs)

    signature = head.signature
    verified: _MessageCert | None = None
    unsupported_key = False
    for candidate in candidates:
        try:
            public_key = candidate.public_key()
        except (ValueError, crypto_exceptions.UnsupportedAlgorithm):
            unsupported_key = True
            continue
        if _signature_holds(public_key, family, sig_hash, pss, signature, signed_bytes):
            verified = candidate
            break
    if verified is None:
        raise _SignerStopError(Reason.UNSUPPORTED_ALGORITHM if unsupported_key else Reason.BAD_SIGNATURE)
    facts.cert = verified
    facts.algorithm = _algorithm_name(family, sig_hash, verified.cert)

    weak = False
    eddsa = family in (alg.SigFamily.ED25519, alg.SigFamily.ED448)
    if attributes is not None or not eddsa:
        # RFC 8419 §3.1 fixes SHAKE256 for Ed448; it is not the policy's choice.
        if not (family is alg.SigFamily.ED448 and digest_name == "shake256"):
            weak |= alg.is_weak_digest(digest_name, ctx.policy.algorithms)
    if sig_hash is not None:
        weak |= alg.is_weak_digest(sig_hash, ctx.policy.algorithms)
    key = verified.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < ctx.policy.algorithms.min_rsa_bits:
        weak = True
    if weak:
        facts.reasons.append(Reason.WEAK_ALGORITHM)


def _check_signed_attributes(
    attributes: Sequence[_Attribute],
    digest_name: str,
    econtent_type: str,
    content: bytes,
    facts: _SignerFacts,
) -> None:
    values: dict[str, tuple[object, ...]] = {}
    for attribute in attributes:
        oid = attribute.oid
        if oid == alg.OID_COUNTER_SIGNATURE:
            raise _SignerStopError(Reason.MALFORMED_SIGNATURE)  # RFC 5652 §11.4: unsigned only
        if oid not in _INTERPRETED_ATTRIBUTES:
            continue
        # RFC 5652 §11.1-§11.3: contentType, messageDigest and signingTime
        # are single-valued and appear at most once.
        if oid in values:
            raise _SignerStopError(Reason.MALFORMED_SIGNATURE)
        values[oid] = attribute.values

    times = values.get(alg.OID_SIGNING_TIME)
    if times is not None:
        if len(times) != 1:
            raise _SignerStopError(Reason.MALFORMED_SIGNATURE)
        facts.claimed_signing_time = _as_utc(times[0])

    content_types = values.get(alg.OID_CONTENT_TYPE)
    digests = values.get(alg.OID_MESSAGE_DIGEST)
    if content_types is None or digests is None or len(content_types) != 1 or len(digests) != 1:
        raise _SignerStopError(Reason.MALFORMED_SIGNATURE)
    content_type = content_types[0]
    if content_type is None:
        raise _SignerStopError(Reason.MALFORMED_SIGNATURE)
    if content_type != econtent_type:
        raise _SignerStopError(Reason.BAD_SIGNATURE)
    message_digest = digests[0]
    if not isinstance(message_digest, bytes):
        raise _SignerStopError(Reason.MALFORMED_SIGNATURE)
    if not hmac.compare_digest(message_digest, alg.digest(digest_name, content)):
        raise _SignerStopError(Reason.BAD_SIGNATURE)


def _as_utc(native: object) -> datetime | None:
    if not isinstance(native, datetime):
        raise _SignerStopError(Reason.MALFORMED_SIGNATURE)
    if native.tzinfo is None:
        native = native.replace(tzinfo=UTC)
    return native.astimezone(UTC)


def _pss_parameters(sig_alg: algos.SignedDigestAlgorithm) -> tuple[str, padding.PSS] | None:
    """(hash name, padding) from RSASSA-PSS-params (RFC 4055 §3.1), or None
    when they ask for something cryptography cannot check."""
    params = sig_alg["parameters"]
    if isinstance(params, core.Void):
        return None  # RFC 4056 §2: parameters MUST be present in CMS
    hash_name = alg.DIGEST_NAMES.get(params["hash_algorithm"]["algorithm"].dotted)
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].dotted != alg.OID_MGF1:
        return None
    mgf_hash = alg.DIGEST_NAMES.get(mgf["parameters"]["algorithm"].dotted)
    if hash_name is None or mgf_hash is None or hash_name == "shake256" or mgf_hash == "shake256":
        return None
    if params["trailer_field"].native not in (1, "trailer_field_bc"):
        return None
    salt = int(params["salt_length"].native)
    return hash_name, padding.PSS(mgf=padding.MGF1(alg.hash_algorithm(mgf_hash)), salt_length=salt)


def _signature_holds(
    public_key: CertificatePublicKeyTypes,
    family: alg.SigFamily,
    sig_hash: str | None,
    pss: padding.PSS | None,
    signature: bytes,
    data: bytes,
) -> bool:
    try:
        if family is alg.SigFamily.RSA_PKCS1 and isinstance(public_key, rsa.RSAPublicKey):
            assert sig_hash is not None
            public_key.verify(signature, data, padding.PKCS1v15(), alg.hash_algorithm(sig_hash))
        elif family is alg.SigFamily.RSA_PSS and isinstance(public_key, rsa.RSAPublicKey):
            assert sig_hash is not None and pss is not None
            public_key.verify(signature, data, pss, alg.hash_algorithm(sig_hash))
        elif family is alg.SigFamily.ECDSA and isinstance(public_key, ec.EllipticCurvePublicKey):
            assert sig_hash is not None
            public_key.verify(signature, data, ec.ECDSA(alg.hash_algorithm(sig_hash)))
        elif family is alg.SigFamily.ED25519 and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        elif family is alg.SigFamily.ED448 and isinstance(public_key, ed448.Ed448PublicKey):
            public_key.verify(signature, data)
        else:
            return False  # the certificate's key is not of the signature's kind
    except (crypto_exceptions.InvalidSignature, ValueError, crypto_exceptions.UnsupportedAlgorithm):
        return False
    return True


# --- identities ------------------------------------------------------------------------------
def _matching_certs(head: _SignerHead, certs: Sequence[_MessageCert]) -> list[_MessageCert]:
    named = head.sid
    if named.by_issuer:
        return [c for c in certs if _issued_as(c, head)]
    return [c for c in certs if c.subject_key_identifier() == named.ski]


def _issued_as(cert: _MessageCert, head: _SignerHead) -> bool:
    named = head.sid
    cert_issuer_der, cert_serial = cert.issuer_and_serial()
    if cert_serial != named.serial:
        return False
    # Byte-equal DER first: asn1crypto's semantic Name comparison runs
    # LDAP string preparation and costs ~0.2 ms per certificate.
    return cert_issuer_der == named.issuer_der or cert.asn1().issuer == head.asn1()["sid"].chosen["issuer"]


def _claimed_key_id(head: _SignerHead, candidates: Sequence[_MessageCert]) -> str:
    """``issuer=<RFC 4514>;serial=<hex>`` or ``ski=<hex>``, as the signer named itself."""
    named = head.sid
    if named.by_issuer:
        if candidates:
            issuer = candidates[0].issuer_rfc4514()
        else:
            issuer = _rfc4514(head.asn1()["sid"].chosen["issuer"])
        return f"issuer={issuer};serial={named.serial:x}"
    return f"ski={named.ski.hex()}"


def _rfc4514(name: asn1_x509.Name) -> str:
    """RFC 4514 form of a name no certificate of the message carries."""
    try:
        rdns = [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(x509.ObjectIdentifier(attr["type"].dotted), str(attr["value"].native))
                    for attr in rdn
                ]
            )
            for rdn in name.chosen
        ]
        return x509.Name(rdns).rfc4514_string()
    except _PARSE_ERRORS:
        return str(name.human_friendly)


def _algorithm_name(family: alg.SigFamily, sig_hash: str | None, cert: x509.Certificate) -> str:
    hash_part = (sig_hash or "").replace("_", "-")
    if family is alg.SigFamily.ECDSA:
        curve = ""
        try:
            key = cert.public_key()
            if isinstance(key, ec.EllipticCurvePublicKey):
                curve = {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}.get(
                    key.curve.name, key.curve.name
                )
        except (ValueError, crypto_exceptions.UnsupportedAlgorithm):
            pass
        return "-".join(p for p in ("ecdsa", curve, hash_part) if p)
    if family in (alg.SigFamily.ED25519, alg.SigFamily.ED448):
        return family.value
    return f"{family.value}-{hash_part}"


def _addresses(cert: x509.Certificate) -> tuple[str, ...]:
    """SAN rfc822Name values and subject emailAddress, normalised as the
    MIME layer normalises From (domain lower-cased, local part kept)."""
    found: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        found.extend(san.value.get_values_for_type(x509.RFC822Name))
    except (x509.ExtensionNotFound, ValueError):
        pass
    try:
        for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
            if isinstance(attr.value, str):
                found.append(attr.value)
    except ValueError:
        pass
    # The same normaliser as the From side, so verdict.address_matches
    # compares like with like; an address it refuses is never "verified".
    normalised = (normalise_addr_spec(a) for a in found)
    return tuple(dict.fromkeys(a for a in normalised if a))
