"""Certificates carried by signed messages, parsed once per process.

A correspondent's messages carry the same certificates again and again;
parsing them (cryptography and asn1crypto) and deriving what verification
reads from them (fingerprint, issuer and serial number, subject key
identifier, addresses) cost more than checking the signature. Everything
here is a function of the certificate's DER alone, so it is cached by those
exact bytes, in a bounded LRU. Facts are derived lazily, on first use, and
a derivation that raises is not cached (it raises again next time, as it
would have without the cache).
"""

from __future__ import annotations

from collections.abc import Callable

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from secmail._lru import BoundedLRU, CertificateMemo
from secmail.verdict import ChainCertificate

_SHA256 = hashes.SHA256()

#: How many distinct certificates stay parsed, and their total DER size.
CACHE_SIZE = 1024
CACHE_BYTES = 16 << 20


class MessageCert:
    """One certificate of a message, with facts derived on demand.

    Shared between threads: every fact is a pure function of ``der`` and
    is stored once computed (two threads computing it at once store equal
    values), and cryptography's certificate and key objects are immutable.
    """

    __slots__ = (
        "_addresses",
        "_fingerprint",
        "_issuer_serial",
        "_issuer_text",
        "_public_key",
        "_ski",
        "cert",
        "der",
    )

    def __init__(self, der: bytes, cert: x509.Certificate) -> None:
        self.der = der
        self.cert = cert
        self._fingerprint: str | None = None
        self._issuer_serial: tuple[bytes, int] | None = None
        self._ski: tuple[bytes | None] | None = None
        self._public_key: CertificatePublicKeyTypes | None = None
        self._addresses: tuple[str, ...] | None = None
        self._issuer_text: str | None = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER, hex."""
        if self._fingerprint is None:
            self._fingerprint = self.cert.fingerprint(_SHA256).hex()
        return self._fingerprint

    def issuer_and_serial(self) -> tuple[bytes, int]:
        """(issuer Name DER, serial number) as asn1crypto reads them (may raise)."""
        if self._issuer_serial is None:
            parsed = self.asn1()
            self._issuer_serial = (parsed.issuer.dump(), parsed.serial_number)
        return self._issuer_serial

    def issuer_rfc4514(self) -> str:
        """The issuer in RFC 4514 form (may raise, as reading the name may)."""
        if self._issuer_text is None:
            self._issuer_text = self.cert.issuer.rfc4514_string()
        return self._issuer_text

    def asn1(self) -> asn1_x509.Certificate:
        """A fresh asn1crypto view (asn1crypto objects are not shared between threads)."""
        return asn1_x509.Certificate.load(self.der)

    def subject_key_identifier(self) -> bytes | None:
        if self._ski is None:
            try:
                ext = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except (x509.ExtensionNotFound, ValueError):
                self._ski = (None,)
            else:
                self._ski = (ext.value.digest,)
        return self._ski[0]

    def public_key(self) -> CertificatePublicKeyTypes:
        """The certificate's key (may raise, as ``cert.public_key()``)."""
        if self._public_key is None:
            self._public_key = self.cert.public_key()
        return self._public_key

    def addresses(self, derive: Callable[[x509.Certificate], tuple[str, ...]]) -> tuple[str, ...]:
        """``derive(cert)``, computed once (``derive`` must be a pure function
        of the certificate, and always the same one)."""
        if self._addresses is None:
            self._addresses = derive(self.cert)
        return self._addresses


#: DER -> (certificate or None when cryptography refuses it). Bounded in
#: entries and in bytes: messages bring certificates of their choosing.
_cache: BoundedLRU[tuple[MessageCert | None]] = BoundedLRU(CACHE_SIZE, CACHE_BYTES, max_entry_weight=1 << 20)


def message_cert(der: bytes) -> MessageCert | None:
    """The certificate with this DER, or None when cryptography refuses it."""
    found = _cache.get(der)
    if found is not None:
        return found[0]
    try:
        parsed: MessageCert | None = MessageCert(der, x509.load_der_x509_certificate(der))
    except ValueError:
        parsed = None
    # Another thread may have stored the same certificate meanwhile: the
    # first stored wins, so that every message sees one object per DER.
    return _cache.put(der, (parsed,), len(der) + 256)[0]


#: (certificate, its verdict entry) by the certificate object's id. Path
#: chains are made of the same objects from one message to the next (this
#: cache's certificates, a trust snapshot's anchors and intermediates); the
#: entry keeps its certificate alive, so its id is not reused meanwhile.
_chain_entries: CertificateMemo[ChainCertificate] = CertificateMemo(
    CACHE_SIZE, CACHE_BYTES, max_entry_weight=1 << 20
)


def chain_certificate(cert: x509.Certificate) -> ChainCertificate:
    """The verdict's description of a chain certificate (may raise, as
    reading the subject may)."""
    return _chain_entries.read(cert, _describe)


def _describe(cert: x509.Certificate) -> ChainCertificate:
    return ChainCertificate(
        fingerprint=cert.fingerprint(_SHA256).hex(), subject=cert.subject.rfc4514_string()
    )


def clear() -> None:
    _cache.clear()
    _chain_entries.clear()


def size() -> int:
    return len(_cache)
