"""secmail throughput against the tools gateways script today, in one run.

    .venv/bin/python benchmarks/run.py [--rounds 3] [--seconds 3] [--only smime|openpgp] [--no-affinity]

S/MIME: Sign and Verify of a 20 KB message over gRPC (RSA-2048), against
``openssl cms -sign`` / ``-verify`` run once per message as a subprocess.
OpenPGP: Sign, Verify, Encrypt and Decrypt of PGP/MIME over gRPC (Ed25519/
Cv25519, then RSA-3072), against ``gpg`` driven per message through
python-gnupg.

Both sides get the whole machine: secmail runs ``secmail serve`` with one
worker process per core, each pinned to its core (``--worker-affinity``, as on
a dedicated host; ``--no-affinity`` leaves them to the scheduler), loaded by one
asyncio gRPC client keeping sixteen calls per core in flight, each on its own
connection; the peers run as many concurrent subprocesses as there are
cores. Each figure is operations per
second over ``--seconds`` after a warm-up.

The two sides of a comparison are measured in turn, ``--rounds`` times
(which side goes first alternates), and each round gives a ratio
secmail / peer: on a shared machine whose other load comes and goes, two
figures taken seconds apart are comparable where two taken minutes apart
are not. The table gives the median of each side, the median of the
rounds' ratios (the target's figure) and their range.

Each side's CPU time per operation is printed too, every process of the
side counted (the benchmark's client and the secmail workers; the
benchmark's process, the peer's subprocesses and gpg's agent). Other load
on the machine lowers the throughput figures but hardly these.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from testpki import end_entity, make_pki, message  # noqa: E402

from secmail.v1 import (  # noqa: E402
    keys_pb2,
    keys_pb2_grpc,
    message_security_pb2,
    message_security_pb2_grpc,
    trust_pb2,
    trust_pb2_grpc,
    verdict_pb2,
)

CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Figure:
    """One side of a comparison: throughput, and the CPU it took per operation."""

    ops_per_second: float
    #: CPU time per operation (ms), every process of the side included: the
    #: benchmark's own client threads plus the secmail server processes, or
    #: plus the peer's subprocesses. Other load on the machine slows the
    #: throughput but hardly changes this.
    cpu_ms: float


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its direct children (the workers)."""
    total = 0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for p in (pid, *map(int, children)):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _agent_cpu(home: Path) -> float:
    """CPU of the gpg-agent serving ``home`` (a daemon, not a waited-for child)."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if not cmdline[0].endswith(b"gpg-agent") or str(home).encode() not in cmdline:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rate(
    op: Callable[[], object], seconds: float, concurrency: int, other_cpu: Callable[[], float] = _children_cpu
) -> Figure:
    """Operations per second with ``concurrency`` callers for ``seconds``.

    CPU is counted for this process plus ``other_cpu()``: the secmail
    server's processes, or the subprocesses this process waited for (the
    peer tools) and, for gpg, its agent.
    """
    for _ in range(2):
        op()  # warm-up
    done = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            op()
            with lock:
                done += 1

    cpu_before = time.process_time() + other_cpu()
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    elapsed = time.monotonic() - started
    cpu = time.process_time() + other_cpu() - cpu_before
    return Figure(done / elapsed, cpu / max(done, 1) * 1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, workdir: Path, threads: int | None = None, *, affinity: bool = True) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "secmail.cli",
                "serve",
                "--address",
                self.address,
                "--data-dir",
                str(workdir / "data"),
                "--workers",
                str(CORES),
                *(["--threads", str(threads)] if threads else []),
                *(["--worker-affinity"] if affinity else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.channel = grpc.insecure_channel(self.address)
        grpc.channel_ready_future(self.channel).result(timeout=60)
        self.messages = message_security_pb2_grpc.MessageSecurityStub(self.channel)
        self.keys = keys_pb2_grpc.KeyServiceStub(self.channel)
        self.trust = trust_pb2_grpc.TrustServiceStub(self.channel)
        time.sleep(1.0)  # let every worker process come up

    def rate(self, call: Callable[[Any], Awaitable[object]], seconds: float) -> Figure:
        """Throughput of ``call(stub)`` with ``16 x cores`` calls in flight.

        The load comes from one asyncio client (grpc.aio) with one
        connection per call in flight: SO_REUSEPORT spreads connections,
        not calls, over the worker processes, as it does for many webmail
        clients. It spreads them by a hash, unevenly: with 4 connections
        per core, splits such as 1 and 8 over two workers were seen (`ss`),
        the worker with one connection idling between its calls. With 16
        per core every worker has enough calls in flight to stay busy. An
        asyncio client costs this machine less CPU per call than as many
        client threads would, CPU the server then has.
        """
        return asyncio.run(self._rate(call, seconds, 16 * CORES))

    async def _rate(
        self, call: Callable[[Any], Awaitable[object]], seconds: float, concurrency: int
    ) -> Figure:
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]
        channels = [grpc.aio.insecure_channel(self.address, options=options) for _ in range(concurrency)]
        try:
            stubs = [message_security_pb2_grpc.MessageSecurityStub(c) for c in channels]
            for stub in stubs:
                await call(stub)  # warm-up, and every connection open
            done = 0
            deadline = time.monotonic() + seconds

            async def worker(stub: Any) -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    await call(stub)
                    done += 1

            cpu_before = time.process_time() + self.cpu()
            started = time.monotonic()
            await asyncio.gather(*(worker(stub) for stub in stubs))
            elapsed = time.monotonic() - started
            cpu = time.process_time() + self.cpu() - cpu_before
        finally:
            for channel in channels:
                await channel.close()
        return Figure(done / elapsed, cpu / max(done, 1) * 1000)

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def close(self) -> None:
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def body_of(size: int) -> bytes:
    line = b"Le conseil de classe du second trimestre se tiendra jeudi en salle 12.\r\n"
    return (line * (size // len(line) + 1))[:size]


@dataclass(frozen=True)
class Comparison:
    """One operation: how to measure secmail doing it, and the peer."""

    name: str
    ours: Callable[[], Figure]
    theirs: Callable[[], Figure]


def measure(comparisons: list[Comparison], rounds: int) -> None:
    """Measure each comparison ``rounds`` times, the sides in turn, and print its row."""
    print(
        f"{'operation':<36}{'secmail op/s':>13}{'peer op/s':>11}{'ratio':>8}{'rounds':>14}"
        f"{'secmail CPU ms':>16}{'peer CPU ms':>13}{'CPU ratio':>11}"
    )
    sys.stdout.flush()
    for comparison in comparisons:
        ours: list[Figure] = []
        theirs: list[Figure] = []
        for round_ in range(rounds):
            # Alternate which side goes first, so that a load that rises or
            # falls during the run does not favour one of them.
            if round_ % 2 == 0:
                ours.append(comparison.ours())
                theirs.append(comparison.theirs())
            else:
                theirs.append(comparison.theirs())
                ours.append(comparison.ours())
        ratios = [o.ops_per_second / t.ops_per_second for o, t in zip(ours, theirs, strict=True)]
        ours_cpu = statistics.median(f.cpu_ms for f in ours)
        theirs_cpu = statistics.median(f.cpu_ms for f in theirs)
        print(
            f"{comparison.name:<36}{statistics.median(f.ops_per_second for f in ours):>13.1f}"
            f"{statistics.median(f.ops_per_second for f in theirs):>11.1f}"
            f"{statistics.median(ratios):>7.1f}x{f'{min(ratios):.1f}-{max(ratios):.1f}x':>14}"
            f"{ours_cpu:>16.2f}{theirs_cpu:>13.2f}{theirs_cpu / ours_cpu:>10.1f}x"
        )
        sys.stdout.flush()


def bench_smime(server: Server, work: Path, seconds: float, size: int) -> list[Comparison]:
    from cryptography.hazmat.primitives import serialization

    pki = make_pki()
    alice = end_entity(pki.intermediate, "alice@ac-besancon.fr")
    server.trust.ImportTrustBundle(trust_pb2.ImportTrustBundleRequest(name="bench", data=pki.bundle_pem))
    server.keys.ImportKey(
        keys_pb2.ImportKeyRequest(user="alice@ac-besancon.fr", data=alice.p12(b"pw"), passphrase="pw")
    )
    msg = message(body=body_of(size))
    signed = server.messages.Sign(
        message_security_pb2.SignRequest(user="alice@ac-besancon.fr", message=msg)
    ).message
    verdict = server.messages.Verify(
        message_security_pb2.VerifyRequest(user="bob@ac-besancon.fr", message=signed)
    ).verdict
    assert verdict.banner == verdict_pb2.BANNER_GREEN, verdict

    (work / "msg.eml").write_bytes(msg)
    (work / "cert.pem").write_bytes(alice.cert_pem)
    (work / "key.pem").write_bytes(
        alice.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (work / "chain.pem").write_bytes(pki.intermediate.cert_pem)
    (work / "ca.pem").write_bytes(pki.root.cert_pem)
    (work / "signed.eml").write_bytes(signed)
    sign_cmd = [
        "openssl", "cms", "-sign", "-in", str(work / "msg.eml"), "-signer", str(work / "cert.pem"),
        "-inkey", str(work / "key.pem"), "-certfile", str(work / "chain.pem"), "-md", "sha256",
        "-out", "/dev/null",
    ]  # fmt: skip
    verify_cmd = [
        "openssl", "cms", "-verify", "-in", str(work / "signed.eml"), "-CAfile", str(work / "ca.pem"),
        "-purpose", "smimesign", "-out", "/dev/null",
    ]  # fmt: skip
    subprocess.run(verify_cmd, check=True, capture_output=True)

    def run(cmd: list[str]) -> Callable[[], object]:
        return lambda: subprocess.run(cmd, check=True, capture_output=True)

    sign_req = message_security_pb2.SignRequest(user="alice@ac-besancon.fr", message=msg)
    verify_req = message_security_pb2.VerifyRequest(user="bob@ac-besancon.fr", message=signed)
    return [
        Comparison(
            "S/MIME sign (RSA-2048, multipart)",
            lambda: server.rate(lambda s: s.Sign(sign_req), seconds),
            lambda: rate(run(sign_cmd), seconds, CORES),
        ),
        Comparison(
            "S/MIME verify (RSA-2048, chain)",
            lambda: server.rate(lambda s: s.Verify(verify_req), seconds),
            lambda: rate(run(verify_cmd), seconds, CORES),
        ),
    ]


def bench_openpgp(
    server: Server, work: Path, seconds: float, size: int, algo: str, label: str
) -> list[Comparison]:
    import gnupg

    home = work / f"gnupg-{algo}"
    home.mkdir(mode=0o700)
    gpg = gnupg.GPG(gnupghome=str(home))
    alice = f"alice-{algo}@ac-besancon.fr"
    bob = f"bob-{algo}@ac-besancon.fr"
    for uid in (alice, bob):
        subprocess.run(
            [
                "gpg",
                "--homedir",
                str(home),
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                uid,
                algo,
                "default",
                "never",
            ],
            check=True,
            capture_output=True,
        )
        # Add an encryption subkey for the RSA case ("default" gives one for
        # future-default; for rsa3072 quick-gen-key already makes it sign+cert).
        if algo.startswith("rsa"):
            fpr = gpg.list_keys(keys=[uid])[0]["fingerprint"]
            subprocess.run(
                [
                    "gpg",
                    "--homedir",
                    str(home),
                    "--batch",
                    "--passphrase",
                    "",
                    "--quick-add-key",
                    fpr,
                    algo,
                    "encr",
                    "never",
                ],
                check=True,
                capture_output=True,
            )
    for uid in (alice, bob):
        secret = gpg.export_keys(uid, secret=True, passphrase="", expect_passphrase=False)
        server.keys.ImportKey(keys_pb2.ImportKeyRequest(user=uid, data=secret.encode()))
    # Each reader knows the other's public key (authenticated correspondent).
    server.keys.ImportKey(keys_pb2.ImportKeyRequest(user=bob, data=gpg.export_keys(alice).encode()))
    server.keys.ImportKey(keys_pb2.ImportKeyRequest(user=alice, data=gpg.export_keys(bob).encode()))

    msg = message(sender=alice, to=bob, body=body_of(size))
    data = body_of(size)
    pgp = verdict_pb2.SCHEME_OPENPGP
    sign_req = message_security_pb2.SignRequest(user=alice, message=msg, scheme=pgp)
    signed = server.messages.Sign(sign_req).message
    verify_req = message_security_pb2.VerifyRequest(user=bob, message=signed)
    v = server.messages.Verify(verify_req).verdict
    assert v.banner == verdict_pb2.BANNER_GREEN, v
    enc_req = message_security_pb2.EncryptRequest(user=alice, message=msg, scheme=pgp)
    encrypted = server.messages.Encrypt(enc_req).message
    dec_req = message_security_pb2.DecryptRequest(user=bob, message=encrypted)
    assert server.messages.Decrypt(dec_req).verdict.lock

    sig = gpg.sign(data, keyid=alice, detach=True)
    sig_path = work / f"sig-{algo}.asc"
    sig_path.write_bytes(str(sig).encode())
    enc = str(gpg.encrypt(data, [bob, alice], always_trust=True, armor=True))
    assert gpg.decrypt(enc).ok
    assert gpg.verify_data(str(sig_path), data).valid

    def gpg_cpu() -> float:
        return _children_cpu() + _agent_cpu(home)

    return [
        Comparison(
            f"OpenPGP sign ({label})",
            lambda: server.rate(lambda s: s.Sign(sign_req), seconds),
            lambda: rate(lambda: gpg.sign(data, keyid=alice, detach=True), seconds, CORES, gpg_cpu),
        ),
        Comparison(
            f"OpenPGP verify ({label})",
            lambda: server.rate(lambda s: s.Verify(verify_req), seconds),
            lambda: rate(lambda: gpg.verify_data(str(sig_path), data), seconds, CORES, gpg_cpu),
        ),
        Comparison(
            f"OpenPGP encrypt ({label})",
            lambda: server.rate(lambda s: s.Encrypt(enc_req), seconds),
            lambda: rate(
                lambda: gpg.encrypt(data, [bob, alice], always_trust=True, armor=True),
                seconds,
                CORES,
                gpg_cpu,
            ),
        ),
        Comparison(
            f"OpenPGP decrypt ({label})",
            lambda: server.rate(lambda s: s.Decrypt(dec_req), seconds),
            lambda: rate(lambda: gpg.decrypt(enc), seconds, CORES, gpg_cpu),
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each side (default 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--only", choices=("smime", "openpgp"))
    parser.add_argument("--threads", type=int, help="secmail serve --threads (default: its own default)")
    parser.add_argument("--no-affinity", action="store_true", help="secmail serve without --worker-affinity")
    args = parser.parse_args()
    for tool in ("openssl", "gpg"):
        if shutil.which(tool) is None:
            print(f"{tool} not found", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="secmail-bench-") as tmp:
        work = Path(tmp)
        server = Server(work, args.threads, affinity=not args.no_affinity)
        try:
            print(
                f"secmail benchmark: {args.size}-byte messages, {CORES} cores, "
                f"{args.rounds} rounds of {args.seconds:g} s per side and operation"
            )
            if args.only in (None, "smime"):
                measure(bench_smime(server, work, args.seconds, args.size), args.rounds)
            if args.only in (None, "openpgp"):
                print()
                comparisons = bench_openpgp(
                    server, work, args.seconds, args.size, "future-default", "Ed25519/Cv25519"
                )
                comparisons += bench_openpgp(server, work, args.seconds, args.size, "rsa3072", "RSA-3072")
                measure(comparisons, args.rounds)
        finally:
            server.close()
            subprocess.run(
                ["gpgconf", "--homedir", str(work / "gnupg-future-default"), "--kill", "all"], check=False
            )
            subprocess.run(
                ["gpgconf", "--homedir", str(work / "gnupg-rsa3072"), "--kill", "all"], check=False
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
