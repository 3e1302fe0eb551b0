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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from secmail.context import VerifyContext
from secmail.errors import InputError, UnsupportedAlgorithmError
from secmail.mime.addresses import normalise_addr_spec
from secmail.smime import algorithms as alg
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
class _MessageCert:
    cert: x509.Certificate
    asn1: asn1_x509.Certificate

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def subject_key_identifier(self) -> bytes | None:
        try:
            ext = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except (x509.ExtensionNotFound, ValueError):
            return None
        return ext.value.digest


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
    signed_data, econtent_type, econtent, certs = _parse(der)

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

    try:
        signer_infos = list(signed_data["signer_infos"])
    except _PARSE_ERRORS as exc:
        raise InputError("unreadable CMS SignerInfos") from exc

    results = tuple(
        _evaluate_signer(si, content, content_problem, econtent_type, certs, ctx) for si in signer_infos
    )
    return SignedDataResult(
        signers=results,
        encap_content=econtent,
        certificates=tuple(c.cert for c in certs),
    )


# --- parsing -------------------------------------------------------------------------------
def _parse(der: bytes) -> tuple[cms.SignedData, str, bytes | None, list[_MessageCert]]:
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
        signed_data["digest_algorithms"].native  # noqa: B018
        for signer_info in signed_data["signer_infos"]:
            _parse_signer_info(signer_info)
        econtent_type, econtent = _encapsulated_content(signed_data)
        certs = _message_certificates(signed_data)
    except InputError:
        raise
    except _PARSE_ERRORS as exc:
        raise InputError("unreadable CMS SignedData") from exc
    return signed_data, econtent_type, econtent, certs


class _EncapsulatedContentInfo(core.Sequence):
    """RFC 5652 §5.2, with eContent kept opaque: asn1crypto's own class
    parses eContent by eContentType, and what is signed is just octets."""

    _fields = [  # noqa: RUF012 - asn1crypto's declarative spec
        ("content_type", core.ObjectIdentifier),
        ("content", core.Any, {"explicit": 0, "optional": True}),
    ]


def _encapsulated_content(signed_data: cms.SignedData) -> tuple[str, bytes | None]:
    raw = bytes(signed_data["encap_content_info"].dump())
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


def _parse_signer_info(signer_info: cms.SignerInfo) -> None:
    """Parse the parts of a SignerInfo that are evaluated. Other attributes'
    values stay opaque: asn1crypto's idea of e.g. an ESS security label must
    not make a message unreadable (RFC 4134 §4.10 carries such labels)."""
    for name in ("version", "sid", "digest_algorithm", "signature_algorithm", "signature"):
        signer_info[name].native  # noqa: B018
    signed_attrs = signer_info["signed_attrs"]
    if isinstance(signed_attrs, core.Void):
        return
    for attribute in signed_attrs:
        if attribute["type"].dotted in _INTERPRETED_ATTRIBUTES:
            attribute["values"].native  # noqa: B018


def _message_certificates(signed_data: cms.SignedData) -> list[_MessageCert]:
    found: list[_MessageCert] = []
    cert_set = signed_data["certificates"]
    if isinstance(cert_set, core.Void):
        return found
    for choice in cert_set:
        if choice.name != "certificate":
            continue  # attribute certificates and "other" formats: not signers
        der = bytes(choice.chosen.dump())
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            # cryptography refuses some certificates asn1crypto reads; such a
            # certificate cannot be a verified signer, so it is left out.
            continue
        found.append(_MessageCert(cert=cert, asn1=choice.chosen))
    return found


# --- one signer ---------------------------------------------------------------------------------
def _evaluate_signer(
    signer_info: cms.SignerInfo,
    content: bytes | None,
    content_problem: Reason | None,
    econtent_type: str,
    certs: Sequence[_MessageCert],
    ctx: VerifyContext,
) -> SignerResult:
    facts = _SignerFacts()
    try:
        try:
            _check_signer(signer_info, content, content_problem, econtent_type, certs, ctx, facts)
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
        chain = tuple(
            ChainCertificate(
                fingerprint=c.fingerprint(hashes.SHA256()).hex(), subject=c.subject.rfc4514_string()
            )
            for c in path.chain
        )
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
        verified_addresses=_addresses(facts.cert.cert),
        fingerprint=facts.cert.fingerprint,
        claimed_key_id=facts.claimed_key_id,
        claimed_signing_time=signing_time,
        chain=chain,
        algorithm=facts.algorithm,
    )


def _check_signer(
    signer_info: cms.SignerInfo,
    content: bytes | None,
    content_problem: Reason | None,
    econtent_type: str,
    certs: Sequence[_MessageCert],
    ctx: VerifyContext,
    facts: _SignerFacts,
) -> None:
    """Fill ``facts``; raise _SignerStopError with the reason that ends the evaluation."""
    sid = signer_info["sid"]
    candidates = _matching_certs(sid, certs)
    facts.claimed_key_id = _claimed_key_id(sid, candidates)
    if content_problem is not None:
        raise _SignerStopError(content_problem)
    assert content is not None
    if not candidates:
        raise _SignerStopError(Reason.SIGNER_KEY_MISSING)
    facts.cert = candidates[0]

    digest_oid = signer_info["digest_algorithm"]["algorithm"].dotted
    digest_name = alg.DIGEST_NAMES.get(digest_oid)
    sig_alg = signer_info["signature_algorithm"]
    sig_oid = sig_alg["algorithm"].dotted
    spec = alg.SIGNATURE_ALGORITHMS.get(sig_oid)
    facts.algorithm = sig_oid
    if digest_name is None or spec is None:
        raise _SignerStopError(Reason.UNSUPPORTED_ALGORITHM)

    family = spec.family
    pss: padding.PSS | None = None
    if family is alg.SigFamily.RSA_PSS:
        pss_params = _pss_parameters(sig_alg)
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

    signed_attrs = signer_info["signed_attrs"]
    if isinstance(signed_attrs, core.Void):
        # RFC 5652 §5.3: attributes are mandatory unless the content is id-data.
        if econtent_type != alg.OID_DATA:
            raise _SignerStopError(Reason.MALFORMED_SIGNATURE)
        signed_bytes = content
    else:
        _check_signed_attributes(signed_attrs, digest_name, econtent_type, content, facts)
        # RFC 5652 §5.4: the signature covers the attributes' DER under the
        # SET OF tag, not the [0] IMPLICIT tag they travel with. The received
        # octets are used as they are (they MUST already be DER).
        signed_bytes = alg.der_tlv(0x31, bytes(signed_attrs.contents))

    signature = bytes(signer_info["signature"].native)
    verified: _MessageCert | None = None
    unsupported_key = False
    for candidate in candidates:
        try:
            public_key = candidate.cert.public_key()
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
    if not isinstance(signed_attrs, core.Void) or not eddsa:
        # RFC 8419 §3.1 fixes SHAKE256 for Ed448; it is not the policy's choice.
        if not (family is alg.SigFamily.ED448 and digest_name == "shake256"):
            weak |= alg.is_weak_digest(digest_name, ctx.policy.algorithms)
    if sig_hash is not None:
        weak |= alg.is_weak_digest(sig_hash, ctx.policy.algorithms)
    key = verified.cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < ctx.policy.algorithms.min_rsa_bits:
        weak = True
    if weak:
        facts.reasons.append(Reason.WEAK_ALGORITHM)


def _check_signed_attributes(
    signed_attrs: cms.CMSAttributes,
    digest_name: str,
    econtent_type: str,
    content: bytes,
    facts: _SignerFacts,
) -> None:
    values: dict[str, list[core.Asn1Value]] = {}
    for attribute in signed_attrs:
        oid = attribute["type"].dotted
        if oid == alg.OID_COUNTER_SIGNATURE:
            raise _SignerStopError(Reason.MALFORMED_SIGNATURE)  # RFC 5652 §11.4: unsigned only
        if oid not in _INTERPRETED_ATTRIBUTES:
            continue
        # RFC 5652 §11.1-§11.3: contentType, messageDigest and signingTime
        # are single-valued and appear at most once.
        if oid in values:
            raise _SignerStopError(Reason.MALFORMED_SIGNATURE)
        values[oid] = list(attribute["values"])

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
    if not isinstance(content_type, core.ObjectIdentifier):
        raise _SignerStopError(Reason.MALFORMED_SIGNATURE)
    if content_type.dotted != econtent_type:
        raise _SignerStopError(Reason.BAD_SIGNATURE)
    message_digest = digests[0].native
    if not isinstance(message_digest, bytes):
        raise _SignerStopError(Reason.MALFORMED_SIGNATURE)
    if not hmac.compare_digest(message_digest, alg.digest(digest_name, content)):
        raise _SignerStopError(Reason.BAD_SIGNATURE)


def _as_utc(value: core.Asn1Value) -> datetime | None:
    native = value.native
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
def _matching_certs(sid: cms.SignerIdentifier, certs: Sequence[_MessageCert]) -> list[_MessageCert]:
    if sid.name == "issuer_and_serial_number":
        wanted = sid.chosen
        issuer = wanted["issuer"]
        serial = wanted["serial_number"].native
        # Byte-equal DER first: asn1crypto's semantic Name comparison runs
        # LDAP string preparation and costs ~0.2 ms per certificate.
        issuer_der = issuer.dump()
        return [
            c
            for c in certs
            if c.asn1.serial_number == serial
            and (c.asn1.issuer.dump() == issuer_der or c.asn1.issuer == issuer)
        ]
    ski = bytes(sid.chosen.native)
    return [c for c in certs if c.subject_key_identifier() == ski]


def _claimed_key_id(sid: cms.SignerIdentifier, candidates: Sequence[_MessageCert]) -> str:
    """``issuer=<RFC 4514>;serial=<hex>`` or ``ski=<hex>``, as the signer named itself."""
    if sid.name == "issuer_and_serial_number":
        serial = sid.chosen["serial_number"].native
        if candidates:
            issuer = candidates[0].cert.issuer.rfc4514_string()
        else:
            issuer = _rfc4514(sid.chosen["issuer"])
        return f"issuer={issuer};serial={serial:x}"
    return f"ski={bytes(sid.chosen.native).hex()}"


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
