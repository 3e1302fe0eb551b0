"""Helpers of the replica tests: the test database and the replica processes."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Database:
    name: str

    @property
    def url(self) -> str:
        # The plain postgresql:// form, as an operator would give it:
        # secmail maps it to psycopg 3.
        return f"postgresql://postgres@127.0.0.1:5432/{self.name}"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port=5432 user=postgres dbname={self.name} connect_timeout=3"

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return list(conn.execute(sql, params or None).fetchall())


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    address: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the replica's log:\n{self.output()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(replica: Replica, timeout: float = 60.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(replica.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if replica.proc.poll() is not None:
                raise AssertionError(f"secmail serve exited ({replica.proc.returncode}):\n{replica.output()}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:  # SERVING
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"secmail serve did not start:\n{replica.output()}")
