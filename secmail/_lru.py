"""A small thread-safe LRU bounded by entry count and by total weight.

The verification caches hold parsed certificates and what was read from
messages. Messages may be large (tens of MB) and their certificates are
chosen by whoever sent them, so a count bound alone would let a few
hundred large messages pin gigabytes: each entry also carries a weight
(about its size in bytes), and the total is bounded as well. An entry
heavier than ``max_entry_weight`` is not kept at all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

_V = TypeVar("_V")

__all__ = ["BoundedLRU", "CertificateMemo", "der_weight"]


class BoundedLRU(Generic[_V]):
    def __init__(self, max_entries: int, max_weight: int, *, max_entry_weight: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_weight = max_weight
        self.max_entry_weight = max_weight // 8 if max_entry_weight is None else max_entry_weight
        self._entries: OrderedDict[Hashable, tuple[_V, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def weight(self) -> int:
        return self._weight

    def get(self, key: Hashable) -> _V | None:
        """The value for ``key`` (None when absent; store no None values)."""
        # No lock on this hot path: each OrderedDict call is atomic under
        # the GIL (keys are ids, bytes, str and tuples of them: hashing and
        # comparing them runs no Python code), and an entry evicted between
        # the two calls merely is not refreshed.
        found = self._entries.get(key)
        if found is None:
            return None
        try:
            self._entries.move_to_end(key)
        except KeyError:
            pass
        return found[0]

    def put(self, key: Hashable, value: _V, weight: int = 1, *, replace: bool = False) -> _V:
        """Keep ``value`` (unless too heavy) and return the value now kept
        for ``key``. Without ``replace``, a value stored meanwhile for the
        same key (by another thread) wins, so that every caller sees one
        object per key."""
        if weight > self.max_entry_weight:
            return value
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                if not replace:
                    self._entries.move_to_end(key)
                    return found[0]
                del self._entries[key]
                self._weight -= found[1]
            self._entries[key] = (value, weight)
            self._weight += weight
            while self._entries and (len(self._entries) > self.max_entries or self._weight > self.max_weight):
                _, (_, dropped) = self._entries.popitem(last=False)
                self._weight -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._weight = 0


def der_weight(*certs: x509.Certificate) -> int:
    """The DER size of ``certs``, as the weight of an entry pinning them."""
    return sum(len(cert.public_bytes(Encoding.DER)) for cert in certs) + 64


class CertificateMemo(BoundedLRU[tuple[x509.Certificate, _V]]):
    """Results of functions of a certificate alone, by certificate object.

    Keyed by ``id(cert)``, each entry holding the certificate (kept alive,
    so its id is not reused while the entry exists): the certificates of a
    message and of a trust snapshot are the same objects from one message to
    the next (``smime._certs``, ``trust.interned``), and hashing a
    certificate would cost more than most of what is memoised. Weighted by
    the certificate's DER size.
    """

    def read(self, cert: x509.Certificate, compute: Callable[[x509.Certificate], _V]) -> _V:
        """``compute(cert)``, once per certificate object while it is kept.
        Each memo serves one ``compute`` (its call sites pass the same one)."""
        found = self.get(id(cert))
        if found is not None and found[0] is cert:
            return found[1]
        value = compute(cert)
        self.put(id(cert), (cert, value), der_weight(cert), replace=True)
        return value
