"""Per-caller rate and request-size limits (RESOURCE_EXHAUSTED with a reason)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import grpc
import pytest
from access_support import error_info, retry_info, running
from testpki import message

from secmail.errors import RateLimitedError, RequestTooLargeError
from secmail.service.config import Limits, parse_callers
from secmail.service.limits import RateLimiter, TokenBucket, check_request_size
from secmail.v1 import keys_pb2, message_security_pb2


def _token_entry(name: str, token: str, extra: str = "") -> str:
    digest = hashlib.sha256(token.encode()).hexdigest()
    return (
        f'[[callers]]\nname = "{name}"\nroles = ["webmail"]\ndomains = ["ac-besancon.fr"]\n'
        f'token_sha256 = "{digest}"\n{extra}\n'
    )


CALLERS = (
    "[limits]\nmax_request_bytes = 4000\n\n"
    + _token_entry("slow", "slow-token-0123456789", "rate_per_second = 2\nburst = 2")
    + _token_entry("fast", "fast-token-0123456789", "max_request_bytes = 100000")
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.25
    assert bucket.take() == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.take() == 0.0
    # A long pause saves up no more than the burst.
    clock.now += 3600
    assert [bucket.take() for _ in range(4)][-1] > 0


def test_rate_limiter_keeps_one_bucket_per_caller() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limits = Limits(rate_per_second=1.0)
    limiter.check("a", limits)
    with pytest.raises(RateLimitedError) as err:
        limiter.check("a", limits)
    assert err.value.metadata["retry_after_seconds"] == "1"
    assert err.value.retry_after == pytest.approx(1.0)
    limiter.check("b", limits)  # another caller has its own bucket
    for _ in range(100):
        limiter.check("c", Limits())  # no rate: unlimited


def test_request_size_limit() -> None:
    check_request_size("a", 100, Limits(max_request_bytes=100))
    with pytest.raises(RequestTooLargeError) as err:
        check_request_size("a", 101, Limits(max_request_bytes=100))
    assert err.value.metadata["limit"] == "100"
    check_request_size("a", 10**9, Limits())


def test_defaults_apply_unless_the_caller_overrides() -> None:
    config = {c.name: c for c in parse_callers(CALLERS).callers}
    assert config["slow"].limits == Limits(rate_per_second=2.0, burst=2, max_request_bytes=4000)
    assert config["fast"].limits == Limits(max_request_bytes=100000)


def _list_keys(stubs, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    stubs.keys.ListKeys(keys_pb2.ListKeysRequest(user="bob@ac-besancon.fr"), timeout=timeout)


def test_rate_limit_exceeded_then_recovers(tmp_path: Path) -> None:
    with running(tmp_path / "data", callers_toml=CALLERS) as run:
        slow = run.channel(token="Bearer slow-token-0123456789")
        fast = run.channel(token="Bearer fast-token-0123456789")
        _list_keys(slow)
        _list_keys(slow)
        with pytest.raises(grpc.RpcError) as err:
            _list_keys(slow)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(err.value)
        assert info.reason == "RATE_LIMITED"
        assert info.metadata["caller"] == "slow"
        assert info.metadata["retry_after_seconds"] == "1"
        retry = retry_info(err.value)
        assert retry is not None
        delay = retry.retry_delay.ToTimedelta().total_seconds()
        assert 0 < delay <= 0.5 + 0.01
        # Another caller is not slowed down by this one.
        for _ in range(5):
            _list_keys(fast)
        time.sleep(delay + 0.05)
        _list_keys(slow)


def test_oversize_request_is_refused_with_its_limit(tmp_path: Path) -> None:
    with running(tmp_path / "data", callers_toml=CALLERS) as run:
        slow = run.channel(token="Bearer slow-token-0123456789")
        big = message(body=b"x" * 5000)
        with pytest.raises(grpc.RpcError) as err:
            slow.messages.Verify(message_security_pb2.VerifyRequest(user="bob@ac-besancon.fr", message=big))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(err.value)
        assert info.reason == "REQUEST_TOO_LARGE"
        assert info.metadata["limit"] == "4000"
        assert int(info.metadata["size"]) > 5000
        # Within the limit it is served; and the larger limit of another caller holds.
        slow.messages.Verify(message_security_pb2.VerifyRequest(user="bob@ac-besancon.fr", message=message()))
        fast = run.channel(token="Bearer fast-token-0123456789")
        fast.messages.Verify(message_security_pb2.VerifyRequest(user="bob@ac-besancon.fr", message=big))
