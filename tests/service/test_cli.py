"""The `secmail` command: a real server process, the admin and user subcommands."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_support import People
from testpki import message

SECMAIL = [sys.executable, "-m", "secmail.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(address: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(address)
            time.sleep(0.2)


class Server:
    def __init__(self, data_dir: Path, workers: int = 1, *extra: str) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.data_dir = data_dir
        self.workers = workers
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *SECMAIL,
                "serve",
                "--address",
                self.address,
                "--data-dir",
                str(self.data_dir),
                "--workers",
                str(self.workers),
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_healthy(self.address)

    def stop(self) -> bytes:
        assert self.proc is not None
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return out

    def cli(self, *args: str, input_file: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SECMAIL, *args, "--server", self.address], capture_output=True, text=True, timeout=60
        )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data", workers=2)
    s.start()
    yield s
    s.stop()


def test_serve_creates_master_key_with_0600(server: Server) -> None:
    key = server.data_dir / "master.key"
    assert key.exists()
    assert (key.stat().st_mode & 0o777) == 0o600


def test_admin_and_user_commands(server: Server, people: People, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(people.pki.bundle_pem)
    r = server.cli("ca", "import", str(bundle), "--name", "ac-besancon")
    assert r.returncode == 0, r.stderr
    assert "anchor" in r.stdout and "intermediate" in r.stdout
    r = server.cli("ca", "list")
    assert "CN=Test Root CA" in r.stdout

    p12 = tmp_path / "alice.p12"
    p12.write_bytes(people.alice.p12(b"pass phrase"))
    pw = tmp_path / "pw"
    pw.write_text("pass phrase\n")
    r = server.cli("keys", "import", "--user", "alice@ac-besancon.fr", str(p12), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.stderr
    assert "private" in r.stdout and "alice@ac-besancon.fr" in r.stdout
    r = server.cli("keys", "list", "--user", "alice@ac-besancon.fr")
    assert "alice@ac-besancon.fr" in r.stdout

    msg = tmp_path / "msg.eml"
    msg.write_bytes(message())
    r = server.cli("sign", "--user", "alice@ac-besancon.fr", str(msg))
    assert r.returncode == 0, r.stderr
    signed = tmp_path / "signed.eml"
    signed.write_text(r.stdout)
    r = server.cli("verify", str(signed), "--lang", "fr")
    assert r.returncode == 0, r.stderr
    assert "banner:    GREEN" in r.stdout

    r = server.cli(
        "encrypt", "--user", "alice@ac-besancon.fr", "--recipient", "alice@ac-besancon.fr", str(msg)
    )
    assert r.returncode == 0, r.stderr
    enc = tmp_path / "enc.eml"
    enc.write_text(r.stdout)
    r = server.cli("decrypt", "--user", "alice@ac-besancon.fr", str(enc))
    assert r.returncode == 0, r.stderr
    assert "lock:      yes" in r.stdout

    # A wrong passphrase is a clear one-line error, not a traceback, and no secret.
    pw.write_text("nope-secret\n")
    r = server.cli("keys", "import", "--user", "alice@ac-besancon.fr", str(p12), "--passphrase-file", str(pw))
    assert r.returncode == 1
    assert "WRONG_PASSPHRASE" in r.stderr and "Traceback" not in r.stderr and "nope-secret" not in r.stderr


def test_restart_loses_nothing(tmp_path: Path, people: People) -> None:
    s = Server(tmp_path / "data")
    s.start()
    p12 = tmp_path / "bob.p12"
    p12.write_bytes(people.bob.p12(None))
    assert s.cli("keys", "import", "--user", "bob@ac-besancon.fr", str(p12)).returncode == 0
    logs = s.stop()
    assert b"master key" in logs.lower()  # the first-start warning
    s.start()
    try:
        r = s.cli("keys", "list", "--user", "bob@ac-besancon.fr")
        assert "bob@ac-besancon.fr" in r.stdout and "private" in r.stdout
    finally:
        s.stop()


def test_refuses_plaintext_on_public_address(tmp_path: Path) -> None:
    r = subprocess.run(
        [*SECMAIL, "serve", "--address", "0.0.0.0:0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert r.returncode == 2
    assert "TLS" in r.stderr


def _workers(pid: int) -> list[int]:
    """The worker processes of ``secmail serve`` (not multiprocessing's resource tracker)."""
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [p for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def _allowed_cpus(pid: int) -> set[int]:
    return {cpu for tid in Path(f"/proc/{pid}/task").iterdir() for cpu in os.sched_getaffinity(int(tid.name))}


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs"
)
def test_worker_affinity_gives_each_worker_a_cpu_of_its_own(tmp_path: Path, people: People) -> None:
    server = Server(tmp_path / "data", 2, "--worker-affinity")
    server.start()
    try:
        assert server.proc is not None
        workers = _workers(server.proc.pid)
        assert len(workers) == 2
        # Every thread of a worker (gRPC's included) on the same single CPU,
        # and the two workers on different ones.
        pinned = [_allowed_cpus(pid) for pid in workers]
        assert all(len(cpus) == 1 for cpus in pinned), pinned
        assert pinned[0] != pinned[1]
        assert pinned[0] | pinned[1] <= os.sched_getaffinity(0)
        r = server.cli("ca", "list")  # and it serves
        assert r.returncode == 0, r.stderr
    finally:
        server.stop()
    unpinned = Server(tmp_path / "data", 2)
    unpinned.start()
    try:
        assert unpinned.proc is not None
        for pid in _workers(unpinned.proc.pid):
            assert _allowed_cpus(pid) == os.sched_getaffinity(0)
    finally:
        unpinned.stop()
