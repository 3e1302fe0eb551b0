"""A cache for fetched revocation data (OCSP responses, CRLs).

The checkers store the DER they fetched, with an expiry (the response's or
CRL's nextUpdate), and authenticate it again every time they read it: the
cache is a performance device, never a source of trust, so a shared or
database-backed cache cannot make a certificate look good. Anything
implementing :class:`RevocationCache` can replace :class:`MemoryCache`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["MemoryCache", "RevocationCache", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


class RevocationCache(Protocol):
    """Opaque bytes under string keys, each kept until its expiry.

    Implementations must be thread-safe, must never return an entry after
    its expiry (by their own clock), and may drop entries at any time
    (bounded size). Values may be empty (the checkers use empty values as
    "recently failed" markers).
    """

    def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None (absent or expired)."""
        ...

    def put(self, key: str, value: bytes, *, expires: datetime) -> None:
        """Store ``value`` until ``expires`` (an aware datetime); an
        expiry in the past stores nothing and removes ``key``."""
        ...


class MemoryCache:
    """An in-process, least-recently-used :class:`RevocationCache`.

    Bounded both in entries and in total bytes, since a CRL may weigh up
    to the fetcher's size cap.
    """

    def __init__(
        self,
        *,
        max_entries: int = 4096,
        max_bytes: int = 64 << 20,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if max_entries <= 0 or max_bytes <= 0:
            raise ValueError("cache bounds must be positive")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[datetime, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= now:
                self._remove(key)
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: bytes, *, expires: datetime) -> None:
        if expires.tzinfo is None:
            raise ValueError("expiry must be an aware datetime")
        now = self._clock()
        with self._lock:
            self._remove(key)
            if expires <= now or len(value) > self._max_bytes:
                return
            self._entries[key] = (expires, value)
            self._size += len(value)
            if len(self._entries) > self._max_entries or self._size > self._max_bytes:
                self._evict(now)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._size -= len(entry[1])

    def _evict(self, now: datetime) -> None:
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            self._remove(key)
        while len(self._entries) > self._max_entries or self._size > self._max_bytes:
            self._remove(next(iter(self._entries)))
