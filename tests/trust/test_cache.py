"""MemoryCache: expiry by its clock, and its two bounds."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from secmail.trust.cache import MemoryCache, RevocationCache

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_entry_lives_until_its_expiry() -> None:
    clock = Clock()
    cache = MemoryCache(clock=clock)
    cache.put("k", b"v", expires=T0 + timedelta(hours=1))
    assert cache.get("k") == b"v"
    clock.now = T0 + timedelta(minutes=59)
    assert cache.get("k") == b"v"
    clock.now = T0 + timedelta(hours=1)
    assert cache.get("k") is None
    assert len(cache) == 0


def test_past_expiry_stores_nothing_and_removes() -> None:
    cache = MemoryCache(clock=Clock())
    cache.put("k", b"v", expires=T0 + timedelta(hours=1))
    cache.put("k", b"new", expires=T0 - timedelta(seconds=1))
    assert cache.get("k") is None


def test_empty_values_are_values() -> None:
    cache = MemoryCache(clock=Clock())
    cache.put("marker", b"", expires=T0 + timedelta(minutes=1))
    assert cache.get("marker") == b""


def test_least_recently_used_goes_first() -> None:
    cache = MemoryCache(max_entries=2, clock=Clock())
    later = T0 + timedelta(days=1)
    cache.put("a", b"1", expires=later)
    cache.put("b", b"2", expires=later)
    assert cache.get("a") == b"1"  # "b" is now the least recently used
    cache.put("c", b"3", expires=later)
    assert cache.get("b") is None
    assert cache.get("a") == b"1" and cache.get("c") == b"3"


def test_expired_entries_go_before_live_ones() -> None:
    clock = Clock()
    cache = MemoryCache(max_entries=2, clock=clock)
    cache.put("short", b"1", expires=T0 + timedelta(minutes=1))
    cache.put("long", b"2", expires=T0 + timedelta(days=1))
    clock.now = T0 + timedelta(minutes=2)
    cache.get("short")  # not touched: it expired
    cache.put("new", b"3", expires=T0 + timedelta(days=1))
    assert cache.get("long") == b"2" and cache.get("new") == b"3"


def test_byte_bound() -> None:
    cache = MemoryCache(max_bytes=10, clock=Clock())
    later = T0 + timedelta(days=1)
    cache.put("a", b"x" * 6, expires=later)
    cache.put("b", b"y" * 6, expires=later)
    assert cache.get("a") is None and cache.get("b") == b"y" * 6
    cache.put("huge", b"z" * 11, expires=later)
    assert cache.get("huge") is None and cache.get("b") == b"y" * 6


def test_naive_expiry_is_refused() -> None:
    with pytest.raises(ValueError):
        MemoryCache().put("k", b"v", expires=datetime(2030, 1, 1))


def test_concurrent_use_keeps_the_bounds() -> None:
    cache = MemoryCache(max_entries=50, max_bytes=500, clock=Clock())
    later = T0 + timedelta(days=1)

    def work(worker: int) -> None:
        for i in range(500):
            cache.put(f"{worker}-{i}", b"x" * (i % 20), expires=later)
            cache.get(f"{worker}-{i - 1}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) <= 50
    assert cache._size <= 500
    assert cache._size == sum(len(v) for _, v in cache._entries.values())


def test_memory_cache_is_a_revocation_cache() -> None:
    cache: RevocationCache = MemoryCache()
    assert cache.get("absent") is None
