"""One parsed object per distinct trust-store certificate or CRL.

The service re-reads its trust store every few seconds (``Secmail._trust``).
Parsing the same DER again would give new objects each time, and the
per-process caches of path validation (``secmail.trust._pathcache``, the
shared CRL checker) recognise a trust snapshot's certificates and CRLs by
object identity: new objects would turn every reload into misses, and pin
one copy of the trust store per reload in those caches. Handing out the
same object for the same DER keeps identities stable for as long as the
store does not change (and saves the parsing).

Certificates and CRLs are immutable, so sharing them is safe. Keyed by the
exact DER; bounded (LRU, in entries and bytes): past the bounds, objects
are merely parsed again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from cryptography import x509

from secmail._lru import BoundedLRU

__all__ = ["certificate", "crl"]

_certificates: BoundedLRU[x509.Certificate] = BoundedLRU(8192, 64 << 20)
_crls: BoundedLRU[x509.CertificateRevocationList] = BoundedLRU(256, 512 << 20, max_entry_weight=512 << 20)


_T = TypeVar("_T")


def _intern(cache: BoundedLRU[_T], der: bytes, load: Callable[[bytes], _T]) -> _T:
    der = bytes(der)
    found = cache.get(der)
    if found is None:
        found = cache.put(der, load(der), len(der))
    return found


def certificate(der: bytes) -> x509.Certificate:
    """``x509.load_der_x509_certificate(der)``, one object per DER."""
    return _intern(_certificates, der, x509.load_der_x509_certificate)


def crl(der: bytes) -> x509.CertificateRevocationList:
    """``x509.load_der_x509_crl(der)``, one object per DER."""
    return _intern(_crls, der, x509.load_der_x509_crl)
