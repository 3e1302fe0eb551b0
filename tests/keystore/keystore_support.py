"""Helpers of the keystore tests (imported by conftest.py and the tests):
a SoftHSM2 token description and `secmail serve` subprocesses."""

from __future__ import annotations

import functools
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secmail.keystore.pkcs11 import PKCS11Config


@dataclass(frozen=True)
class SoftHSM:
    """A SoftHSM2 token in a private directory (SOFTHSM2_CONF points at it
    for this process and its children)."""

    module: str
    token: str
    pin: str
    conf: Path

    def config(self, key_label: str) -> PKCS11Config:
        return PKCS11Config(module=self.module, token_label=self.token, key_label=key_label, pin=self.pin)

    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf), "SECMAIL_PKCS11_PIN": self.pin}


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    address: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(server: ServerProcess, timeout: float = 30.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise AssertionError(
                    f"secmail serve exited with {server.proc.returncode}:\n{server.output()}"
                )
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"secmail serve did not start in {timeout} s:\n{server.output()}")


class Clock:
    """Stands in for time.monotonic in secmail.service.app (the ``clock``
    fixture of conftest.py installs it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CallCounter:
    """Counts calls to some methods of an object (a key store): each keyword
    names the counter attribute and the method it counts, e.g.
    ``CallCounter(store, monkeypatch, reads="private_keys")`` then
    ``counter.reads``. The methods still run; patched for the test only."""

    def __init__(self, target: object, monkeypatch: Any, **counted: str) -> None:
        for counter, method in counted.items():
            setattr(self, counter, 0)
            monkeypatch.setattr(target, method, self._counting(counter, getattr(target, method)))

    def _counting(self, counter: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def counted(*args: Any, **kwargs: Any) -> Any:
            setattr(self, counter, getattr(self, counter) + 1)
            return method(*args, **kwargs)

        return counted
