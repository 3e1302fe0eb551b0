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

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    """At most ``maxsize`` entries and ``max_weight`` total weight (the
    callers weigh an entry by the bytes it was computed from), least
    recently used evicted first. An entry heavier than ``max_weight`` on
    its own is not kept."""

    def __init__(self, maxsize: int, max_weight: int) -> None:
        if maxsize < 1 or max_weight < 1:
            raise ValueError("bounds must be positive")
        self._maxsize = maxsize
        self._max_weight = max_weight
        self._weight = 0
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            try:
                value, _ = self._data[key]
            except KeyError:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: K, value: V, weight: int) -> None:
        if weight > self._max_weight:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._data[key] = (value, weight)
            self._weight += weight
            while len(self._data) > self._maxsize or self._weight > self._max_weight:
                _, (_, w) = self._data.popitem(last=False)
                self._weight -= w

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._weight = 0
            self.hits = 0
            self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data
