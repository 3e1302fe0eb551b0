"""A bounded cache of certificate paths cryptography's verifier accepted.

Path validation (building and checking a chain with cryptography's
verifier, plus the checks ``_engine`` adds) costs far more than the rest of
verifying a signature, and a correspondent signs many messages with the
same certificate. What a validation finds depends on:

- the certificates (end entity, candidate intermediates in order, anchors),
  the usage and the other knobs of the request, the algorithm policy —
  all part of the key;
- the validation time, through one thing only: whether each certificate
  is inside its validity period (cryptography's verifier uses the time for
  nothing else, and the checks ``_engine`` adds after it accepts a path
  do not use it). An entry is therefore reused only while every
  certificate of the request — not just those of the chain found — is on
  the same side of its validity bounds as when the entry was made, so the
  verifier would see exactly the same inputs and return the same path;
- revocation, which is never cached here: ``_engine`` evaluates it again
  at every request's time.

Only clean outcomes are kept (the verifier accepted the path at the
validation time and no added check found anything); every failure is
validated again, so its reasons are always computed afresh.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from secmail._lru import BoundedLRU

_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class _Entry:
    chain: tuple[x509.Certificate, ...]
    #: The interval [low, high) of validation times (None: unbounded) in
    #: which every certificate of the request keeps its validity status.
    low: datetime | None
    high: datetime | None
    #: The objects whose ids the key holds, kept alive so that no other
    #: object can take one of those ids while the entry exists.
    pins: tuple[object, ...]


def _within(at: datetime, low: datetime | None, high: datetime | None) -> bool:
    return (low is None or low <= at) and (high is None or at < high)


def status_window(certs: Iterable[x509.Certificate], at: datetime) -> tuple[datetime | None, datetime | None]:
    """The largest interval [low, high) around ``at`` in which no
    certificate of ``certs`` enters or leaves its validity period."""
    low: datetime | None = None
    high: datetime | None = None
    for cert in certs:
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        lo: datetime | None
        hi: datetime | None
        if at < start:
            lo, hi = None, start
        elif at <= end:
            lo, hi = start, end + _MICROSECOND
        else:
            lo, hi = end + _MICROSECOND, None
        if lo is not None and (low is None or lo > low):
            low = lo
        if hi is not None and (high is None or hi < high):
            high = hi
    return low, high


class PathCache:
    """Accepted paths by request, each valid for an interval of time.

    Bounded (LRU) in entries and in the DER size of the message
    certificates the entries keep alive.
    """

    def __init__(self, maxsize: int = 512, max_bytes: int = 16 << 20) -> None:
        self._entries: BoundedLRU[_Entry] = BoundedLRU(maxsize, max_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def get(self, key: Hashable, at: datetime) -> tuple[x509.Certificate, ...] | None:
        """The cached path for ``key`` if ``at`` lies in its window."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        # cryptography's verifier drops the sub-second part of the time:
        # with both the exact and the truncated instant inside the window,
        # every certificate has the same status whichever it compares.
        if _within(at, entry.low, entry.high) and _within(at.replace(microsecond=0), entry.low, entry.high):
            return entry.chain
        return None

    def put(
        self,
        key: Hashable,
        chain: tuple[x509.Certificate, ...],
        certs: Iterable[x509.Certificate],
        at: datetime,
        pins: tuple[object, ...],
        *,
        weight: int = 1,
    ) -> None:
        """Remember ``chain``, found at ``at`` among ``certs`` (every
        certificate the verifier was given, anchors included). ``weight``:
        the size of what ``pins`` keeps alive that nothing else does."""
        low, high = status_window(certs, at)
        if not _within(at.replace(microsecond=0), low, high):
            return  # a validity bound lies inside this very second
        # Replaces an entry whose window has passed.
        self._entries.put(key, _Entry(chain, low, high, pins), weight, replace=True)
