"""Reading imported key files, trust bundles and CRLs.

Everything that comes in through the key and trust APIs is parsed here into
the store's vocabulary (:class:`ParsedKey`, :class:`TrustEntry`,
:class:`StoredCRL`). The functions raise only :mod:`secmail.errors` types,
with messages that name the problem and never a secret.

PKCS#12 is read with cryptography first. Files protected with the legacy
PBE algorithms of RFC 7292 Appendix C (``openssl pkcs12 -legacy``, most
exports from Windows and older browsers) need RC2, which OpenSSL 3 keeps in
its *legacy* provider; when that provider is not loaded, OpenSSL answers
"invalid password" for a correct one. So when cryptography refuses a file,
a small built-in reader takes over: it checks the MAC to tell a wrong
passphrase apart for certain, and decrypts the RFC 7292 PBE algorithms
itself (3DES through cryptography's default provider, RC2 with the
RFC 2268 implementation below).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

from asn1crypto import algos as asn1_algos
from asn1crypto import keys as asn1_keys
from asn1crypto import parser as asn1_parser
from asn1crypto import pkcs12 as asn1_pkcs12
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    rsa,
    x448,
    x25519,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_der_private_key,
    load_pem_private_key,
    pkcs7,
    pkcs12,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from secmail.errors import (
    ErrorReason,
    InputError,
    InvalidKeyError,
    MessageTooLargeError,
    UnsupportedAlgorithmError,
    WrongPassphraseError,
)
from secmail.keystore.api import ParsedKey, StoredCRL, TrustEntry
from secmail.mime.addresses import normalise_addr_spec
from secmail.trust.revocation import why_crl_unusable
from secmail.verdict import Scheme

__all__ = ["parse_crl", "parse_key_file", "parse_trust_bundle"]

log = logging.getLogger(__name__)

#: Larger files are refused before any parsing (a trust bundle of every CA
#: on earth is well under 1 MiB).
MAX_IMPORT_BYTES: Final = 16 * 1024 * 1024

#: Caps the work an imported file can ask for: the PKCS#12 KDF runs in
#: Python, and a crafted iteration count must not pin a core for hours.
MAX_KDF_ITERATIONS: Final = 2_000_000

_Private = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | x25519.X25519PrivateKey
    | x448.X448PrivateKey
    | dsa.DSAPrivateKey
)

#: What cryptography raises on malformed certificates and CRLs
#: (InvalidVersion is not a ValueError).
_PARSE_ERRORS: Final = (ValueError, x509.InvalidVersion)

# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def parse_key_file(data: bytes, passphrase: str | None, *, now: datetime | None = None) -> list[ParsedKey]:
    """Parse a user's key file: PKCS#12, PEM or DER certificates and keys,
    or OpenPGP keys.

    Certificates without a private key come back as certificate-only keys
    (correspondents). A private key must come with a certificate whose
    public key matches it. ``now`` (default: the current time) decides
    expiry for the ``usable_for_*`` flags and ``problems``.
    """
    _check_size(data, InvalidKeyError)
    when = now if now is not None else datetime.now(UTC)
    if _looks_openpgp(data):
        return _parse_openpgp_keys(data, passphrase)
    if _looks_pem(data):
        keys, certs = _read_pem_key_file(data, passphrase)
    else:
        keys, certs = _read_der_key_file(data, passphrase)
    return _assemble(keys, certs, when)


def parse_trust_bundle(name: str, data: bytes) -> list[TrustEntry]:
    """Parse a bundle of CA certificates (PEM, DER, PKCS#7 certs-only) or
    OpenPGP trust-anchor keys.

    Self-signed CA certificates become anchors, other CA certificates
    intermediates. The whole bundle is refused when it holds an end-entity
    certificate: trusting one by mistake is not something to half-do.
    """
    _check_size(data, InputError)
    if _looks_openpgp(data):
        return _parse_openpgp_trust(name, data)
    if _looks_pem(data):
        certs = _read_pem_bundle(data)
    else:
        certs = _read_der_bundle(data)
    if not certs:
        raise _bundle_error("the trust bundle holds no certificate")
    entries: dict[str, TrustEntry] = {}
    rejected: list[str] = []
    for cert in certs:
        der = cert.public_bytes(Encoding.DER)
        anchor_id = hashlib.sha256(der).hexdigest()
        if anchor_id in entries:
            continue
        with _cert_errors("a certificate in the bundle", _bundle_error):
            kind = _ca_kind(cert)
            subject = _name(cert.subject)
            not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        if kind is None:
            rejected.append(subject or f"sha256:{anchor_id[:16]}")
            continue
        entries[anchor_id] = TrustEntry(
            anchor_id=anchor_id,
            bundle=name,
            scheme=Scheme.SMIME,
            data=der,
            is_anchor=kind == "anchor",
            subject=subject,
            not_before=not_before,
            not_after=not_after,
        )
    if rejected:
        raise _bundle_error(
            "the trust bundle holds end-entity (non-CA) certificates, nothing was "
            "imported: " + "; ".join(rejected)
        )
    return list(entries.values())


def parse_crl(data: bytes) -> StoredCRL:
    """Parse one CRL, PEM or DER. Its signature is checked where it is used
    (the trust code knows the issuer), not here."""
    _check_size(data, InputError)
    try:
        if _looks_pem(data):
            blocks = [(label, body) for label, body, _ in _pem_blocks(data)]
            crl_blocks = [_pem_body_der(body) for label, body in blocks if label == "X509 CRL"]
            if len(crl_blocks) != 1:
                raise _crl_error(f"expected one X509 CRL PEM block, found {len(crl_blocks)}")
            crl = x509.load_der_x509_crl(crl_blocks[0])
        else:
            crl = x509.load_der_x509_crl(data)
        problem = why_crl_unusable(crl)
        if problem is not None:
            # Kept, it would be ignored at every verification: refuse it now.
            raise _crl_error(f"this CRL could never be used: {problem}")
        return StoredCRL(
            issuer=_name(crl.issuer),
            data=crl.public_bytes(Encoding.DER),
            this_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
        )
    except _PARSE_ERRORS:
        raise _crl_error("the data is not a readable X.509 CRL") from None


# ---------------------------------------------------------------------------
# Format sniffing
# ---------------------------------------------------------------------------

# First octet of a transferable public or secret key (RFC 9580 §4.2, §10.1):
# old-format tags 5 (secret key) and 6 (public key) with any length type, and
# new-format 0xC5 / 0xC6. DER starts with 0x30, which has bit 7 clear, so
# the two can never be confused.
_OPENPGP_FIRST_OCTETS: Final = frozenset({0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0xC5, 0xC6})


def _looks_openpgp(data: bytes) -> bool:
    first = data.find(b"-----BEGIN ")
    if first >= 0:
        return data.startswith(b"-----BEGIN PGP ", first)
    stripped = data.lstrip()
    return bool(stripped) and stripped[0] in _OPENPGP_FIRST_OCTETS


def _looks_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data


def _check_size(data: bytes, error: type[InputError]) -> None:
    if not data or not data.strip():
        raise error("the file is empty")
    if len(data) > MAX_IMPORT_BYTES:
        raise MessageTooLargeError(f"the file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB")


_PEM_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 #]+)-----\r?\n(.*?)-----END \1-----",
    re.DOTALL,
)


def _pem_blocks(data: bytes) -> list[tuple[str, bytes, bytes]]:
    """(label, body, whole block) for each PEM block; text around is ignored
    (``openssl pkcs12 -nodes`` writes "Bag Attributes" lines between them)."""
    blocks = [(m[1].decode("ascii"), m[2], m[0]) for m in _PEM_RE.finditer(data)]
    if not blocks:
        raise InputError("the PEM data has no complete BEGIN/END block")
    return blocks


def _pem_body_der(body: bytes) -> bytes:
    lines = body.splitlines()
    # RFC 1421 headers (Proc-Type, DEK-Info) precede a blank line.
    if any(b":" in line for line in lines):
        try:
            lines = lines[lines.index(b"") + 1 :]
        except ValueError:
            lines = [line for line in lines if b":" not in line]
    try:
        return base64.b64decode(b"".join(line.strip() for line in lines), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("a PEM block is not valid base64") from None


def _der_children(der: bytes) -> tuple[tuple[int, int, int], ...] | None:
    """(class, method, tag) of the first children of a DER SEQUENCE, or None
    when ``der`` is not exactly one SEQUENCE."""
    try:
        cls, method, tag, _hdr, contents, _trl = asn1_parser.parse(der, strict=True)
        if (cls, method, tag) != (0, 1, 16):
            return None
        kids: list[tuple[int, int, int]] = []
        pos = 0
        while pos < len(contents) and len(kids) < 4:
            c_cls, c_method, c_tag, c_hdr, c_contents, c_trl = asn1_parser.parse(contents[pos:])
            kids.append((c_cls, c_method, c_tag))
            pos += len(c_hdr) + len(c_contents) + len(c_trl)
        return tuple(kids)
    except (ValueError, TypeError, IndexError):
        return None


_INTEGER = (0, 0, 2)
_BIT_STRING = (0, 0, 3)
_OCTET_STRING = (0, 0, 4)
_OID = (0, 0, 6)
_SEQUENCE = (0, 1, 16)


def _classify_der(der: bytes) -> str:
    """ "pkcs12", "private-key", "encrypted-private-key", "certificate",
    "pkcs7" or "unknown", from the shape of the outer SEQUENCE."""
    kids = _der_children(der)
    if not kids:
        return "unknown"
    if kids[0] == _INTEGER and len(kids) >= 2:
        # PFX ::= SEQUENCE { version INTEGER, authSafe ContentInfo, macData MacData OPTIONAL }
        # (RFC 7292 §4) versus PrivateKeyInfo { INTEGER, AlgorithmIdentifier,
        # OCTET STRING } or the traditional RSA/EC private key structures.
        if kids[1] == _SEQUENCE and (len(kids) == 2 or kids[2] == _SEQUENCE):
            return "pkcs12"
        return "private-key"
    if kids[0] == _OID:
        return "pkcs7"
    if kids[0] == _SEQUENCE:
        if len(kids) == 2 and kids[1] == _OCTET_STRING:
            return "encrypted-private-key"
        if len(kids) == 3 and kids[2] == _BIT_STRING:
            return "certificate"
    return "unknown"


# ---------------------------------------------------------------------------
# Key files
# ---------------------------------------------------------------------------

_KEY_LABELS: Final = frozenset(
    {"PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY"}
)
_CERT_LABELS: Final = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"})
_PKCS7_LABELS: Final = frozenset({"PKCS7", "PKCS #7 SIGNED DATA", "CMS"})


def _read_pem_key_file(data: bytes, passphrase: str | None) -> tuple[list[_Private], list[x509.Certificate]]:
    keys: list[_Private] = []
    certs: list[x509.Certificate] = []
    ignored: list[str] = []
    try:
        blocks = _pem_blocks(data)
    except InputError as exc:
        raise InvalidKeyError(exc.message) from None
    for label, body, whole in blocks:
        if label in _CERT_LABELS:
            certs.append(_load_cert(_pem_body_der(body), label=label))
        elif label in _KEY_LABELS:
            keys.append(
                _load_private_key(whole, passphrase, encrypted=_pem_key_encrypted(label, body), pem=True)
            )
        elif label in _PKCS7_LABELS:
            certs.extend(_load_pkcs7(_pem_body_der(body), InvalidKeyError))
        elif label == "PKCS12":
            k, c = _load_pkcs12(_pem_body_der(body), passphrase)
            keys.extend(k)
            certs.extend(c)
        else:
            ignored.append(label)
    if not certs:
        found = f" (found: {', '.join(sorted(set(ignored)))})" if ignored else ""
        if keys:
            raise InvalidKeyError(_LONE_KEY_MESSAGE)
        raise InvalidKeyError("the file holds no certificate" + found)
    return keys, certs


def _read_der_key_file(data: bytes, passphrase: str | None) -> tuple[list[_Private], list[x509.Certificate]]:
    kind = _classify_der(data)
    if kind == "pkcs12":
        return _load_pkcs12(data, passphrase)
    if kind == "certificate":
        return [], [_load_cert(data)]
    if kind == "pkcs7":
        return [], _load_pkcs7(data, InvalidKeyError)
    if kind in ("private-key", "encrypted-private-key"):
        # Validates the key (and the passphrase) before saying why it is refused.
        _load_private_key(data, passphrase, encrypted=kind != "private-key", pem=False)
        raise InvalidKeyError(_LONE_KEY_MESSAGE)
    raise InvalidKeyError(
        "unrecognised key file: expected PKCS#12 (.p12/.pfx), PEM or DER certificates "
        "and keys, or OpenPGP keys"
    )


def _pem_key_encrypted(label: str, body: bytes) -> bool:
    if label == "ENCRYPTED PRIVATE KEY":
        return True
    # Traditional OpenSSL keys say so in an RFC 1421 header.
    return any(line.startswith(b"Proc-Type:") and b"ENCRYPTED" in line for line in body.splitlines())


_LONE_KEY_MESSAGE: Final = (
    "the file holds a private key without its certificate; a private key alone cannot be "
    "used for S/MIME: import it together with its certificate (PKCS#12, or one PEM file "
    "with both)"
)


def _load_cert(der: bytes, *, label: str = "CERTIFICATE") -> x509.Certificate:
    if label == "TRUSTED CERTIFICATE":
        # OpenSSL's "trusted" form appends its own trust settings after the
        # certificate; keep the certificate only.
        try:
            der = asn1_x509.Certificate.load(der, strict=False).dump()
        except ValueError:
            raise InvalidKeyError("a certificate in the file cannot be parsed") from None
    try:
        return x509.load_der_x509_certificate(der)
    except _PARSE_ERRORS:
        raise InvalidKeyError("a certificate in the file cannot be parsed") from None


def _load_pkcs7(der: bytes, error: type[InputError]) -> list[x509.Certificate]:
    try:
        return list(pkcs7.load_der_pkcs7_certificates(der))
    except (*_PARSE_ERRORS, UnsupportedAlgorithm):
        raise error("the PKCS#7 data is not a readable certs-only SignedData") from None


def _load_private_key(data: bytes, passphrase: str | None, *, encrypted: bool, pem: bool) -> _Private:
    password = passphrase.encode("utf-8") if (encrypted and passphrase is not None) else None
    if encrypted and password is None:
        raise WrongPassphraseError("the private key is encrypted: a passphrase is required")
    loader = load_pem_private_key if pem else load_der_private_key
    try:
        key = loader(data, password)
    except TypeError:
        raise InvalidKeyError("the private key cannot be read") from None
    except UnsupportedAlgorithm:
        raise UnsupportedAlgorithmError(
            "the private key uses an algorithm secmail does not support"
        ) from None
    except ValueError:
        if encrypted:
            # cryptography says the same for a wrong passphrase and a broken
            # encrypted blob; check the structure to tell them apart.
            if _encrypted_pkcs8_is_well_formed(data, pem):
                raise WrongPassphraseError("the passphrase does not decrypt the private key") from None
        raise InvalidKeyError("the private key cannot be read") from None
    if not isinstance(key, _Private):
        raise UnsupportedAlgorithmError(
            f"{type(key).__name__.removesuffix('PrivateKey') or 'this'} keys cannot be used for S/MIME"
        )
    return key


def _encrypted_pkcs8_is_well_formed(data: bytes, pem: bool) -> bool:
    try:
        der = data
        if pem:
            blocks = _pem_blocks(data)
            if blocks[0][0] != "ENCRYPTED PRIVATE KEY":
                # Traditional "Proc-Type: 4,ENCRYPTED" keys: if the base64
                # decodes, a decryption failure is the passphrase.
                _pem_body_der(blocks[0][1])
                return True
            der = _pem_body_der(blocks[0][1])
        info = asn1_keys.EncryptedPrivateKeyInfo.load(der, strict=True)
        _ = info["encryption_algorithm"]["algorithm"].native
        return bool(info["encrypted_data"].native)
    except (ValueError, TypeError, KeyError, InputError):
        return False


def _assemble(keys: Sequence[_Private], certs: Sequence[x509.Certificate], now: datetime) -> list[ParsedKey]:
    """Pair private keys with their certificates and build the ParsedKeys."""
    unique: dict[bytes, x509.Certificate] = {}
    for cert in certs:
        unique.setdefault(cert.public_bytes(Encoding.DER), cert)
    certs = list(unique.values())
    if not certs:
        raise InvalidKeyError("the file holds no certificate")

    spki_of = {id(c): _cert_spki(c) for c in certs}
    paired: list[tuple[x509.Certificate, _Private]] = []
    for key in keys:
        key_spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        matches = [c for c in certs if spki_of[id(c)] == key_spki]
        if not matches:
            if len(certs) == 1:
                raise InvalidKeyError("the private key does not match the certificate")
            raise InvalidKeyError("a private key does not match any certificate in the file")
        # A renewed certificate for the same key: one entry per certificate.
        paired.extend((c, key) for c in matches)

    leaves: list[tuple[x509.Certificate, _Private | None]]
    if paired:
        owners = {id(c) for c, _ in paired}
        leaves = list(paired)
        rest = [c for c in certs if id(c) not in owners]
    else:
        # Certificates only: the leaves are those that issued nothing else in
        # the file; the others are their chain.
        issuers = {id(c) for c in certs if any(_issued(c, o) for o in certs if o is not c)}
        leaves_only = [c for c in certs if id(c) not in issuers] or certs
        leaves = [(c, None) for c in leaves_only]
        rest = [c for c in certs if id(c) in issuers and c not in leaves_only]

    parsed: list[ParsedKey] = []
    for cert, private in leaves:
        private_der = (
            private.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
            if private is not None
            else None
        )
        parsed.append(_parsed_key(cert, private_der, _order_chain(cert, rest), now))
    return parsed


def _issued(issuer: x509.Certificate, cert: x509.Certificate) -> bool:
    return cert.issuer == issuer.subject


def _order_chain(leaf: x509.Certificate, others: Sequence[x509.Certificate]) -> tuple[bytes, ...]:
    """The other certificates, leaf's issuer first, then its issuer..."""
    remaining = [c for c in others if c is not leaf]
    ordered: list[x509.Certificate] = []
    current = leaf
    while True:
        nxt = next((c for c in remaining if _issued(c, current)), None)
        if nxt is None:
            break
        ordered.append(nxt)
        remaining.remove(nxt)
        current = nxt
    return tuple(c.public_bytes(Encoding.DER) for c in ordered + remaining)


def _cert_spki(cert: x509.Certificate) -> bytes:
    with _cert_errors("a certificate in the file"):
        return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@contextmanager
def _cert_errors(what: str, make_error: Callable[[str], InputError] = InvalidKeyError) -> Iterator[None]:
    """cryptography parses certificates lazily: a malformed extension or key
    surfaces as ValueError on first access. Name the culprit instead."""
    try:
        yield
    except UnsupportedAlgorithm:
        raise UnsupportedAlgorithmError(
            f"{what} uses a public key algorithm secmail does not support"
        ) from None
    except (*_PARSE_ERRORS, TypeError):
        raise make_error(f"{what} is malformed and cannot be used") from None


# Problems, as shown to users next to a key. Stable strings.
PROBLEM_EXPIRED: Final = "expired"
PROBLEM_NOT_YET_VALID: Final = "not yet valid"
PROBLEM_NO_ADDRESS: Final = "no email address"
PROBLEM_NO_EMAIL_EKU: Final = "no emailProtection EKU"
PROBLEM_KU_NO_ENCRYPTION: Final = "keyUsage does not allow encryption"
PROBLEM_KU_NO_SIGNING: Final = "keyUsage does not allow signing"
PROBLEM_CANNOT_ENCRYPT: Final = "key type cannot encrypt"
PROBLEM_CANNOT_SIGN: Final = "key type cannot sign"
PROBLEM_WEAK_RSA: Final = "RSA key shorter than 2048 bits"


def _parsed_key(
    cert: x509.Certificate, private_der: bytes | None, chain: tuple[bytes, ...], now: datetime
) -> ParsedKey:
    with _cert_errors("a certificate in the file"):
        der = cert.public_bytes(Encoding.DER)
        pub = cert.public_key()
        algorithm, encrypt_bit, can_sign = _algorithm(pub)
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        addresses = _cert_addresses(cert)
        key_usage = _extension(cert, x509.KeyUsage)
        eku = _extension(cert, x509.ExtendedKeyUsage)
        subject = _name(cert.subject)
        issuer = _name(cert.issuer)

    problems: list[str] = []
    if not addresses:
        problems.append(PROBLEM_NO_ADDRESS)
    time_ok = not_before <= now <= not_after
    if now > not_after:
        problems.append(PROBLEM_EXPIRED)
    elif now < not_before:
        problems.append(PROBLEM_NOT_YET_VALID)
    # RFC 8550 §4.4.4: with an EKU extension, emailProtection (or
    # anyExtendedKeyUsage) must be there for S/MIME.
    eku_ok = eku is None or any(
        oid in (ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)
        for oid in eku
    )
    if not eku_ok:
        problems.append(PROBLEM_NO_EMAIL_EKU)
    if isinstance(pub, rsa.RSAPublicKey) and pub.key_size < 2048:
        problems.append(PROBLEM_WEAK_RSA)

    # RFC 8550 §4.4.2: key transport (RSA) needs keyEncipherment, key
    # agreement (ECDH, X25519/X448) needs keyAgreement.
    if encrypt_bit is None:
        ku_encrypt_ok = False
        problems.append(PROBLEM_CANNOT_ENCRYPT)
    else:
        ku_encrypt_ok = key_usage is None or bool(getattr(key_usage, encrypt_bit))
        if not ku_encrypt_ok:
            problems.append(PROBLEM_KU_NO_ENCRYPTION)

    usable_for_signing = False
    if private_der is not None:
        ku_sign_ok = key_usage is None or key_usage.digital_signature or key_usage.content_commitment
        if not can_sign:
            problems.append(PROBLEM_CANNOT_SIGN)
        elif not ku_sign_ok:
            problems.append(PROBLEM_KU_NO_SIGNING)
        usable_for_signing = can_sign and ku_sign_ok and eku_ok and time_ok

    return ParsedKey(
        scheme=Scheme.SMIME,
        key_id=hashlib.sha256(der).hexdigest(),
        public_data=der,
        private_data=private_der,
        addresses=addresses,
        not_before=not_before,
        not_after=not_after,
        algorithm=algorithm,
        subject=subject,
        issuer=issuer,
        chain=chain,
        problems=tuple(problems),
        usable_for_encryption=ku_encrypt_ok and eku_ok and time_ok,
        usable_for_signing=usable_for_signing,
    )


def _algorithm(pub: object) -> tuple[str, str | None, bool]:
    """(name, keyUsage bit needed to encrypt or None if it cannot, can sign)."""
    if isinstance(pub, rsa.RSAPublicKey):
        return f"rsa-{pub.key_size}", "key_encipherment", True
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return f"ec-{pub.curve.name}", "key_agreement", True
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return "ed25519", None, True
    if isinstance(pub, ed448.Ed448PublicKey):
        return "ed448", None, True
    if isinstance(pub, x25519.X25519PublicKey):
        return "x25519", "key_agreement", False
    if isinstance(pub, x448.X448PublicKey):
        return "x448", "key_agreement", False
    if isinstance(pub, dsa.DSAPublicKey):
        return f"dsa-{pub.key_size}", None, True
    raise UnsupportedAlgorithmError("the certificate's public key algorithm is not supported")


def _name(name: x509.Name) -> str:
    # RFC 4514 with emailAddress spelled out rather than as its OID.
    return name.rfc4514_string({NameOID.EMAIL_ADDRESS: "emailAddress"})


def _extension(cert: x509.Certificate, kind: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _cert_addresses(cert: x509.Certificate) -> tuple[str, ...]:
    """SAN rfc822Name values, then subject emailAddress (RFC 8550 §3: the
    SAN is where the address belongs; emailAddress is the legacy place)."""
    raw: list[str] = []
    san = _extension(cert, x509.SubjectAlternativeName)
    if san is not None:
        raw.extend(san.get_values_for_type(x509.RFC822Name))
    for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        if isinstance(attr.value, str):
            raw.append(attr.value)
    seen: dict[str, None] = {}
    for value in raw:
        norm = normalise_addr_spec(value)
        if norm is not None:
            seen.setdefault(norm, None)
    return tuple(seen)


# ---------------------------------------------------------------------------
# Trust bundles
# ---------------------------------------------------------------------------


def _bundle_error(message: str) -> InputError:
    return InputError(message, reason=ErrorReason.INVALID_CERTIFICATE)


def _crl_error(message: str) -> InputError:
    return InputError(message, reason=ErrorReason.INVALID_CERTIFICATE)


def _read_pem_bundle(data: bytes) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for label, body, _whole in _pem_blocks(data):
        if label in _CERT_LABELS:
            try:
                certs.append(_load_cert(_pem_body_der(body), label=label))
            except InvalidKeyError:
                raise _bundle_error("a certificate in the bundle cannot be parsed") from None
        elif label in _PKCS7_LABELS:
            certs.extend(_load_pkcs7(_pem_body_der(body), InputError))
        else:
            raise _bundle_error(f"unexpected PEM block {label!r} in a trust bundle")
    return certs


def _read_der_bundle(data: bytes) -> list[x509.Certificate]:
    kind = _classify_der(data)
    if kind == "certificate":
        try:
            return [x509.load_der_x509_certificate(data)]
        except _PARSE_ERRORS:
            raise _bundle_error("the certificate cannot be parsed") from None
    if kind == "pkcs7":
        return _load_pkcs7(data, InputError)
    raise _bundle_error(
        "unrecognised trust bundle: expected PEM or DER certificates, PKCS#7 (.p7b/.p7c) or OpenPGP keys"
    )


def _ca_kind(cert: x509.Certificate) -> str | None:
    """ "anchor", "intermediate", or None for an end-entity certificate."""
    if cert.version == x509.Version.v1:
        # v1 certificates carry no basicConstraints; old roots are v1 and are
        # accepted as anchors when self-signed (RFC 5280 §6.1.1(d) leaves
        # trust anchors' form open). A v1 intermediate is never a CA
        # (RFC 5280 §6.1.4(k)).
        return "anchor" if _self_signed(cert) else None
    bc = _extension(cert, x509.BasicConstraints)
    if bc is None or not bc.ca:
        return None
    return "anchor" if _self_signed(cert) else "intermediate"


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


# ---------------------------------------------------------------------------
# OpenPGP delegation (secmail.pgp.keys owns the format)
# ---------------------------------------------------------------------------


def _parse_openpgp_keys(data: bytes, passphrase: str | None) -> list[ParsedKey]:
    try:
        from secmail.pgp.keys import parse_openpgp_keys
    except ImportError:
        raise UnsupportedAlgorithmError(
            "OpenPGP keys cannot be imported: OpenPGP support is not available"
        ) from None
    return list(parse_openpgp_keys(data, passphrase))


def _parse_openpgp_trust(name: str, data: bytes) -> list[TrustEntry]:
    try:
        from secmail.pgp.keys import parse_openpgp_trust
    except ImportError:
        raise UnsupportedAlgorithmError(
            "OpenPGP trust anchors cannot be imported: OpenPGP support is not available"
        ) from None
    return list(parse_openpgp_trust(data, name))


# ---------------------------------------------------------------------------
# PKCS#12
# ---------------------------------------------------------------------------


def _load_pkcs12(der: bytes, passphrase: str | None) -> tuple[list[_Private], list[x509.Certificate]]:
    _precheck_pkcs12(der)
    password = passphrase.encode("utf-8") if passphrase is not None else None
    try:
        p12 = pkcs12.load_pkcs12(der, password)
    except UnsupportedAlgorithm:
        raise UnsupportedAlgorithmError("the PKCS#12 file holds a key of an unsupported algorithm") from None
    except _PARSE_ERRORS:
        # Wrong passphrase, or a PBE algorithm this OpenSSL cannot run: the
        # built-in reader checks the MAC and decides which.
        keys_der, certs_der = _read_pkcs12(der, passphrase)
        log.debug("PKCS#12 file opened by the built-in RFC 7292 reader")
        keys = [_load_private_key(k, None, encrypted=False, pem=False) for k in keys_der]
        certs = [_load_cert(c) for c in certs_der]
        return keys, certs
    keys_out: list[_Private] = []
    if p12.key is not None:
        if not isinstance(p12.key, _Private):
            raise UnsupportedAlgorithmError("the PKCS#12 key algorithm cannot be used for S/MIME")
        keys_out.append(p12.key)
    bags = ([p12.cert] if p12.cert is not None else []) + list(p12.additional_certs)
    return keys_out, [bag.certificate for bag in bags]


def _precheck_pkcs12(der: bytes) -> None:
    """Structure and work-factor checks before any KDF runs."""
    try:
        pfx = asn1_pkcs12.Pfx.load(der, strict=True)
        if pfx["version"].native != "v3":
            raise InvalidKeyError("unsupported PKCS#12 version")
        mac = pfx["mac_data"]
        if mac.native is not None:
            _check_iterations(mac["iterations"].native)
        if pfx["auth_safe"]["content_type"].native != "data":
            raise UnsupportedAlgorithmError("PKCS#12 files in public-key integrity mode are not supported")
        for info in asn1_pkcs12.AuthenticatedSafe.load(pfx["auth_safe"]["content"].native):
            ctype = info["content_type"].native
            if ctype == "encrypted_data":
                alg = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]
                _check_iterations(alg.kdf_iterations)
            elif ctype == "data":
                for bag in asn1_pkcs12.SafeContents.load(info["content"].native):
                    if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                        _check_iterations(bag["bag_value"]["encryption_algorithm"].kdf_iterations)
    except (InvalidKeyError, UnsupportedAlgorithmError):
        raise
    except (ValueError, TypeError, KeyError, AttributeError):
        raise InvalidKeyError("the PKCS#12 file is malformed") from None


def _check_iterations(count: object) -> None:
    if not isinstance(count, int) or count < 1:
        raise InvalidKeyError("the PKCS#12 file has an invalid iteration count")
    if count > MAX_KDF_ITERATIONS:
        raise InvalidKeyError(
            f"the PKCS#12 file asks for {count} KDF iterations (limit {MAX_KDF_ITERATIONS})"
        )


class _BadDecryptError(Exception):
    """Padding or structure wrong after decryption: wrong password or
    corrupted ciphertext."""


def _bmp_password(passphrase: str | None) -> list[bytes]:
    """RFC 7292 Appendix B.1: the password is a BMPString with a two-zero
    terminator. A missing password is ambiguous in practice: OpenSSL tries
    both the empty string (00 00) and no password at all, and so do we."""
    if not passphrase:
        return [b"\x00\x00", b""] if passphrase == "" else [b"", b"\x00\x00"]
    return [passphrase.encode("utf-16-be") + b"\x00\x00"]


def _read_pkcs12(der: bytes, passphrase: str | None) -> tuple[list[bytes], list[bytes]]:
    """Private keys (PKCS#8 DER) and certificates (DER) of a password-mode
    PKCS#12 file, by RFC 7292 alone."""
    try:
        pfx = asn1_pkcs12.Pfx.load(der, strict=True)
        content: bytes = pfx["auth_safe"]["content"].native
        candidates = _bmp_password(passphrase)
        utf8_password = (passphrase or "").encode("utf-8")
        mac = pfx["mac_data"]
        if mac.native is not None:
            bmp = _verify_pkcs12_mac(mac, content, candidates)
            if bmp is None:
                raise WrongPassphraseError("the passphrase does not open the PKCS#12 file")
            candidates = [bmp]
        last_error: _BadDecryptError | None = None
        for bmp in candidates:
            try:
                return _read_auth_safe(content, bmp, utf8_password)
            except _BadDecryptError as exc:
                last_error = exc
        if mac.native is not None:
            # The MAC vouched for the passphrase: the content itself is broken.
            raise InvalidKeyError("the PKCS#12 content cannot be decrypted") from last_error
        raise WrongPassphraseError("the passphrase does not open the PKCS#12 file")
    except (InvalidKeyError, WrongPassphraseError, UnsupportedAlgorithmError):
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError):
        raise InvalidKeyError("the PKCS#12 file is malformed") from None


_PKCS12_MAC_HASHES: Final = frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"})


def _verify_pkcs12_mac(mac: asn1_pkcs12.MacData, content: bytes, candidates: Iterable[bytes]) -> bytes | None:
    """The candidate password whose MAC key (RFC 7292 Appendix B, ID 3)
    authenticates ``content``, or None."""
    hash_name = mac["mac"]["digest_algorithm"]["algorithm"].native
    if hash_name not in _PKCS12_MAC_HASHES:
        raise UnsupportedAlgorithmError(f"unsupported PKCS#12 MAC algorithm {hash_name!r}")
    salt: bytes = mac["mac_salt"].native
    iterations: int = mac["iterations"].native
    _check_iterations(iterations)
    expected: bytes = mac["mac"]["digest"].native
    size = hashlib.new(hash_name).digest_size
    for bmp in candidates:
        key = _pkcs12_kdf(hash_name, bmp, salt, 3, iterations, size)
        if hmac.compare_digest(hmac.new(key, content, hash_name).digest(), expected):
            return bmp
    return None


def _read_auth_safe(
    content: bytes, bmp_password: bytes, utf8_password: bytes
) -> tuple[list[bytes], list[bytes]]:
    keys: list[bytes] = []
    certs: list[bytes] = []
    for info in asn1_pkcs12.AuthenticatedSafe.load(content):
        ctype = info["content_type"].native
        if ctype == "data":
            safe = info["content"].native
        elif ctype == "encrypted_data":
            eci = info["content"]["encrypted_content_info"]
            ciphertext = eci["encrypted_content"].native
            if ciphertext is None:
                continue
            safe = _pbe_decrypt(eci["content_encryption_algorithm"], ciphertext, bmp_password, utf8_password)
        else:
            raise UnsupportedAlgorithmError(f"PKCS#12 content of type {ctype!r} is not supported")
        try:
            bags = asn1_pkcs12.SafeContents.load(safe, strict=True)
            _read_bags(bags, bmp_password, utf8_password, keys, certs, depth=0)
        except (ValueError, TypeError, KeyError) as exc:
            if ctype == "encrypted_data":
                # Valid padding by chance under a wrong key; the bytes are noise.
                raise _BadDecryptError from exc
            raise
    return keys, certs


def _read_bags(
    bags: asn1_pkcs12.SafeContents,
    bmp_password: bytes,
    utf8_password: bytes,
    keys: list[bytes],
    certs: list[bytes],
    *,
    depth: int,
) -> None:
    if depth > 4:
        raise InvalidKeyError("the PKCS#12 file nests its contents too deeply")
    for bag in bags:
        bag_id = bag["bag_id"].native
        value = bag["bag_value"]
        if bag_id == "key_bag":
            # bag_value is [0] EXPLICIT: drop the tag to get the PrivateKeyInfo.
            keys.append(value.untag().dump(force=True))
        elif bag_id == "pkcs8_shrouded_key_bag":
            plain = _pbe_decrypt(
                value["encryption_algorithm"],
                value["encrypted_data"].native,
                bmp_password,
                utf8_password,
            )
            try:
                keys.append(asn1_keys.PrivateKeyInfo.load(plain, strict=True).dump())
            except ValueError as exc:
                raise _BadDecryptError from exc
        elif bag_id == "cert_bag":
            if value["cert_id"].native == "x509":
                certs.append(value["cert_value"].parsed.dump())
        elif bag_id == "safe_contents":
            _read_bags(value, bmp_password, utf8_password, keys, certs, depth=depth + 1)
        # CRL and secret bags carry nothing secmail stores.


def _pbe_decrypt(
    alg: asn1_algos.EncryptionAlgorithm, data: bytes, bmp_password: bytes, utf8_password: bytes
) -> bytes:
    name = alg["algorithm"].native
    if name.startswith("pkcs12_sha1_"):
        # RFC 7292 Appendix C: key (ID 1) and IV (ID 2) from the Appendix B KDF.
        params = alg["parameters"]
        salt: bytes = params["salt"].native
        iterations: int = params["iterations"].native
        _check_iterations(iterations)
        key_len = alg.key_length
        key = _pkcs12_kdf("sha1", bmp_password, salt, 1, iterations, key_len)
        iv = _pkcs12_kdf("sha1", bmp_password, salt, 2, iterations, 8)
        cipher = alg.encryption_cipher
        if cipher == "tripledes":
            plain = _cbc_decrypt(lambda: Cipher(TripleDES(key), modes.CBC(iv)), data)
        elif cipher == "rc2":
            plain = _rc2_cbc_decrypt(key, 8 * key_len, iv, data)
        else:
            raise UnsupportedAlgorithmError(f"PKCS#12 encryption {name!r} is not supported (RC4 is refused)")
        return _unpad(plain, 8)
    if name == "pbes2":
        # RFC 8018 §6.2; OpenSSL feeds PBKDF2 the UTF-8 passphrase, not BMP.
        if alg.kdf != "pbkdf2":
            raise UnsupportedAlgorithmError(f"PBES2 with KDF {alg.kdf!r} is not supported")
        iterations = alg.kdf_iterations
        _check_iterations(iterations)
        hash_cls = _PBKDF2_HASHES.get(alg.kdf_hmac)
        if hash_cls is None:
            raise UnsupportedAlgorithmError(f"PBKDF2 with {alg.kdf_hmac!r} is not supported")
        cipher_name, mode = alg.encryption_cipher, alg.encryption_mode
        if mode != "cbc" or cipher_name not in ("aes", "tripledes"):
            raise UnsupportedAlgorithmError(f"PBES2 with {cipher_name}-{mode} is not supported")
        key = PBKDF2HMAC(
            algorithm=hash_cls(), length=alg.key_length, salt=alg.kdf_salt, iterations=iterations
        ).derive(utf8_password)
        iv = alg.encryption_iv
        if cipher_name == "aes":
            plain = _cbc_decrypt(lambda: Cipher(algorithms.AES(key), modes.CBC(iv)), data)
            return _unpad(plain, 16)
        plain = _cbc_decrypt(lambda: Cipher(TripleDES(key), modes.CBC(iv)), data)
        return _unpad(plain, 8)
    raise UnsupportedAlgorithmError(f"PKCS#12 encryption {name!r} is not supported")


_PBKDF2_HASHES: Final[dict[str, Callable[[], hashes.HashAlgorithm]]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _cbc_decrypt(make: Callable[[], Cipher[modes.CBC]], data: bytes) -> bytes:
    try:
        decryptor = make().decryptor()
        return decryptor.update(data) + decryptor.finalize()
    except ValueError as exc:  # data not a whole number of blocks
        raise _BadDecryptError from exc


def _unpad(plain: bytes, block_size: int) -> bytes:
    unpadder = padding.PKCS7(8 * block_size).unpadder()
    try:
        return unpadder.update(plain) + unpadder.finalize()
    except ValueError as exc:
        raise _BadDecryptError from exc


def _fill(data: bytes, v: int) -> bytes:
    """``data`` repeated to v * ceil(len(data) / v) bytes (RFC 7292 B.2 steps 2-3)."""
    if not data:
        return b""
    length = v * -(-len(data) // v)
    return (data * -(-length // len(data)))[:length]


def _pkcs12_kdf(hash_name: str, password: bytes, salt: bytes, purpose: int, iterations: int, n: int) -> bytes:
    """RFC 7292 Appendix B.2: ``n`` bytes of key (purpose 1), IV (2) or MAC
    key (3) material."""
    u = hashlib.new(hash_name).digest_size
    v = hashlib.new(hash_name).block_size
    d = bytes([purpose]) * v
    i = bytearray(_fill(salt, v) + _fill(password, v))
    out = b""
    while True:
        a = hashlib.new(hash_name, d + bytes(i)).digest()
        for _ in range(iterations - 1):
            a = hashlib.new(hash_name, a).digest()
        out += a
        if len(out) >= n:
            return out[:n]
        b = int.from_bytes((a * -(-v // u))[:v], "big") + 1
        mod = 1 << (8 * v)
        for j in range(0, len(i), v):
            block = (int.from_bytes(i[j : j + v], "big") + b) % mod
            i[j : j + v] = block.to_bytes(v, "big")


# ---------------------------------------------------------------------------
# RC2 (RFC 2268), decryption only in production.
#
# Handwritten because RC2 lives in OpenSSL 3's legacy provider, which
# cryptography does not always load (and some distributions do not ship),
# while 40-bit RC2-CBC is still what many PKCS#12 exporters use for the
# certificate bag. It only ever decrypts data the user hands us with its
# passphrase; nothing secmail writes uses RC2.
# ---------------------------------------------------------------------------

_RC2_PITABLE: Final = bytes.fromhex(
    "d978f9c419ddb5ed28e9fd794aa0d89dc67e37832b76538e624c6488448bfba2"
    "179a59f587b34f1361456d8d09817d32bd8f40eb86b77b0bf09521225c6b4e82"
    "54d66593ce60b21c7356c014a78cf1dc1275ca1f3bbee4d1423dd430a33cb626"
    "6fbf0eda4669075727f21d9bbc944303f811c7f690ef3ee706c3d52fc8661ed7"
    "08e8eade8052eef784aa72ac354d6a2a961ad2715a1549744b9fd05e0418a4ec"
    "c2e0416e0f51cbcc2491af50a1f47039997c3a8523b8b47afc02365b25559731"
    "2d5dfa98e38a92ae05df2910676cbac9d300e6cfe19ea82c6316013f58e289a9"
    "0d38341bab33ffb0bb480c5fb9b1cd2ec5f3db47e5a59c770aa62068fe7fc1ad"
)
_RC2_SHIFTS: Final = (1, 2, 3, 5)


def _rc2_expand(key: bytes, effective_bits: int) -> list[int]:
    """RFC 2268 §2: the 64 16-bit subkeys K[0..63]."""
    t = len(key)
    if not 1 <= t <= 128 or not 1 <= effective_bits <= 1024:
        raise ValueError("RC2 key length out of range")
    t8 = (effective_bits + 7) // 8
    tm = 0xFF >> (8 * t8 - effective_bits)
    buf = bytearray(128)
    buf[:t] = key
    for i in range(t, 128):
        buf[i] = _RC2_PITABLE[(buf[i - 1] + buf[i - t]) & 0xFF]
    buf[128 - t8] = _RC2_PITABLE[buf[128 - t8] & tm]
    for i in range(127 - t8, -1, -1):
        buf[i] = _RC2_PITABLE[buf[i + 1] ^ buf[i + t8]]
    return [buf[2 * i] | (buf[2 * i + 1] << 8) for i in range(64)]


def _rc2_encrypt_block(k: Sequence[int], block: bytes) -> bytes:
    """RFC 2268 §3. Used by the tests against the RFC's vectors."""
    r = list(struct.unpack("<4H", block))
    j = 0

    def mix() -> None:
        nonlocal j
        for i in range(4):
            x = (r[i] + k[j] + (r[i - 1] & r[i - 2]) + (~r[i - 1] & r[i - 3])) & 0xFFFF
            j += 1
            s = _RC2_SHIFTS[i]
            r[i] = ((x << s) | (x >> (16 - s))) & 0xFFFF

    def mash() -> None:
        for i in range(4):
            r[i] = (r[i] + k[r[i - 1] & 63]) & 0xFFFF

    for step in _RC2_ROUNDS:
        if step:
            mix()
        else:
            mash()
    return struct.pack("<4H", *r)


def _rc2_decrypt_block(k: Sequence[int], block: bytes) -> bytes:
    """RFC 2268 §4: the rounds of §3 undone in reverse order."""
    r = list(struct.unpack("<4H", block))
    j = 63

    def rmix() -> None:
        nonlocal j
        for i in (3, 2, 1, 0):
            s = _RC2_SHIFTS[i]
            x = ((r[i] >> s) | (r[i] << (16 - s))) & 0xFFFF
            r[i] = (x - k[j] - (r[i - 1] & r[i - 2]) - (~r[i - 1] & r[i - 3])) & 0xFFFF
            j -= 1

    def rmash() -> None:
        for i in (3, 2, 1, 0):
            r[i] = (r[i] - k[r[i - 1] & 63]) & 0xFFFF

    for step in reversed(_RC2_ROUNDS):
        if step:
            rmix()
        else:
            rmash()
    return struct.pack("<4H", *r)


#: True = mixing round, False = mashing round (RFC 2268 §3.3: five mixing,
#: one mashing, six mixing, one mashing, five mixing).
_RC2_ROUNDS: Final = (True,) * 5 + (False,) + (True,) * 6 + (False,) + (True,) * 5


def _rc2_cbc_decrypt(key: bytes, effective_bits: int, iv: bytes, data: bytes) -> bytes:
    if len(data) % 8 or len(iv) != 8:
        raise _BadDecryptError
    k = _rc2_expand(key, effective_bits)
    out = bytearray()
    prev = iv
    for pos in range(0, len(data), 8):
        block = data[pos : pos + 8]
        plain = _rc2_decrypt_block(k, block)
        out += bytes(a ^ b for a, b in zip(plain, prev, strict=True))
        prev = block
    return bytes(out)
