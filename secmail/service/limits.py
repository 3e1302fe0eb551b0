"""Per-caller rate and size limits.

Rates are token buckets held in memory, one per caller **per server
process**: with ``--workers N`` and R replicas a caller may get up to
N × R times its configured rate in total. Size each caller's limit for one
process, or put a shared limiter (a proxy) in front when an exact global
limit matters. The point here is to keep one runaway webmail from starving
the others on a process, not accounting.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from secmail.errors import RateLimitedError, RequestTooLargeError
from secmail.service.config import Limits

__all__ = ["RateLimiter", "TokenBucket", "check_request_size"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one per call."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate and burst must be positive")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is due."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self._rate


class RateLimiter:
    """One bucket per caller name, made on first use from its limits."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, caller: str, limits: Limits) -> None:
        """Raise :class:`RateLimitedError` when ``caller`` is over its rate."""
        if limits.rate_per_second is None:
            return
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None:
                burst = limits.burst or max(1, math.ceil(limits.rate_per_second))
                bucket = TokenBucket(limits.rate_per_second, burst, clock=self._clock)
                self._buckets[caller] = bucket
        wait = bucket.take()
        if wait > 0:
            raise RateLimitedError(
                f"too many requests from {caller}: retry later",
                retry_after=wait,
                metadata={"caller": caller, "rate_per_second": f"{limits.rate_per_second:g}"},
            )


def check_request_size(caller: str, size: int, limits: Limits) -> None:
    """Raise :class:`RequestTooLargeError` when ``size`` is over the limit."""
    if limits.max_request_bytes is not None and size > limits.max_request_bytes:
        raise RequestTooLargeError(
            f"request of {size} bytes exceeds the limit of {limits.max_request_bytes} for {caller}",
            metadata={"caller": caller, "limit": str(limits.max_request_bytes), "size": str(size)},
        )
