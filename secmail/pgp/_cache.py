"""A small bounded, thread-safe memo for time-independent OpenPGP work.

What may be memoised, and how (the rules every user of this module
follows, and that ``tests/pgp/test_pgp_cache.py`` checks):

* only the result of a *pure* function of bytes: parsing a certificate,
  or checking one self-signature's mathematics. Nothing that depends on
  the time of the question (expiry, revocation at ``at``, "is this key
  usable now") is ever stored: that is judged again on every call;
* keyed by *all* the bytes the result was computed from (never by a
  fingerprint, a key id or a digest of them), so that other bytes are
  always recomputed and the same bytes always get the same answer;
* never holding secret material: secret-key packets (TSKs) are neither
  keys nor values here; message content is never a key or a value.

Entries are evicted least recently used first, so that a flood of
distinct certificates costs memory up to the bound and no more.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from secmail._lru import BoundedLRU

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMemo(BoundedLRU[V], Generic[K, V]):
    """secmail's bounded LRU with the rules above: at most ``maxsize``
    entries and ``max_weight`` total weight (the callers weigh an entry by
    the bytes it was computed from); an entry heavier than ``max_weight`` on
    its own is not kept; a new value for a key replaces the old one. Counts
    hits and misses (the tests check that a parse was served from it)."""

    def __init__(self, maxsize: int, max_weight: int) -> None:
        if maxsize < 1 or max_weight < 1:
            raise ValueError("bounds must be positive")
        super().__init__(maxsize, max_weight, max_entry_weight=max_weight)
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:  # type: ignore[override]
        value = super().get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: K, value: V, weight: int) -> None:  # type: ignore[override]
        super().put(key, value, weight, replace=True)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def clear(self) -> None:
        super().clear()
        self.hits = 0
        self.misses = 0
