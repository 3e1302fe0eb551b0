"""Helpers for the OpenPGP tests: third-party tools in throwaway homes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from secmail.context import PGPCandidate, VerifyContext
from secmail.policy import DEFAULT_POLICY


@dataclass(frozen=True)
class KeyPair:
    """An unprotected TSK, its public certificate, fingerprint, address."""

    tsk: bytes
    cert: bytes
    fingerprint: str
    address: str


PROJECT_ROOT = Path(__file__).resolve().parents[2]
CORPORA = PROJECT_ROOT.parent / "shared" / "corpora"


def ctx_with(
    certs: Sequence[bytes] = (),
    *,
    authenticated: bool = True,
    at: datetime | None = None,
) -> VerifyContext:
    """A context whose lookup offers ``certs`` for any key handle."""
    candidates = [PGPCandidate(c, authenticated) for c in certs]

    def lookup(_handle: str) -> Sequence[PGPCandidate]:
        return candidates

    return VerifyContext(at=at or datetime.now(UTC), policy=DEFAULT_POLICY, pgp_lookup=lookup)


class GnuPG:
    """``gpg`` in its own temporary GNUPGHOME (never the user's)."""

    def __init__(self) -> None:
        self.home = tempfile.mkdtemp(prefix="smt-")
        os.chmod(self.home, 0o700)

    def run(self, *args: str, input: bytes | None = None, check: bool = True, passphrase: str = "") -> bytes:
        env = dict(os.environ, GNUPGHOME=self.home)
        proc = subprocess.run(
            [
                "gpg",
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                passphrase,
                "--trust-model",
                "always",
                *args,
            ],
            input=input,
            capture_output=True,
            env=env,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"gpg {args} failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def fingerprints(self) -> list[str]:
        out = self.run("--with-colons", "--list-keys").decode()
        return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr")]

    def gen_key(self, uid: str, algo: str, enc_algo: str, *, faked_time: str | None = None) -> str:
        before = set(self.fingerprints())
        extra = ["--faked-system-time", faked_time] if faked_time else []
        self.run(*extra, "--quick-gen-key", uid, algo, "sign,cert", "never")
        fpr = next(f for f in self.fingerprints() if f not in before)
        self.run(*extra, "--quick-add-key", fpr, enc_algo, "encr", "never")
        return fpr

    def export_secret(self, fpr: str) -> bytes:
        return self.run("--export-secret-keys", fpr)

    def export(self, fpr: str) -> bytes:
        return self.run("--export", fpr)

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", self.home, "--kill", "gpg-agent"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.home, ignore_errors=True)


@dataclass(frozen=True)
class Sop:
    """A Stateless OpenPGP CLI (sqop, gosop, pgpainless-cli)."""

    name: str
    command: tuple[str, ...]
    verify_out_flag: str = "--verify-out"

    def available(self) -> bool:
        return shutil.which(self.command[0]) is not None

    def __call__(self, *args: str, input: bytes = b"", files: dict[str, bytes] | None = None) -> bytes:
        with tempfile.TemporaryDirectory(prefix="sop-") as d:
            real: list[str] = []
            for a in args:
                if files and a in files:
                    path = os.path.join(d, a)
                    with open(path, "wb") as f:
                        f.write(files[a])
                    real.append(path)
                else:
                    real.append(a)
            proc = subprocess.run([*self.command, *real], input=input, capture_output=True, timeout=120)
        if proc.returncode != 0:
            raise AssertionError(
                f"{self.name} {args[:1]} exited {proc.returncode}: "
                f"{proc.stderr.decode(errors='replace')[:500]}"
            )
        return proc.stdout

    def decrypt_verified(self, key: bytes, cert: bytes, message: bytes) -> tuple[bytes, bytes]:
        """(plaintext, VERIFICATIONS) of ``sop decrypt --verify-with``."""
        with tempfile.TemporaryDirectory(prefix="sopv-") as d:
            out = os.path.join(d, "verifications")
            plain = self(
                "decrypt",
                f"{self.verify_out_flag}={out}",
                "--verify-with",
                "cert",
                "key",
                input=message,
                files={"key": key, "cert": cert},
            )
            with open(out, "rb") as f:
                return plain, f.read()


SQOP = Sop("sqop", ("sqop",), "--verifications-out")
GOSOP = Sop("gosop", ("gosop",))
PGPAINLESS = Sop("pgpainless-cli", ("pgpainless-cli",))


def flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def corpus(name: str) -> Path:
    import pytest

    path = CORPORA / name
    if not path.is_dir():
        pytest.skip(f"../shared/corpora/{name} not present: corpus tests need the shared corpora")
    return path


Lookup = Callable[[str], Sequence[PGPCandidate]]
