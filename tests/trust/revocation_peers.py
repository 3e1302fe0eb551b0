"""Real revocation peers on loopback for the OCSP / CRL fetching tests.

- :class:`StaticHTTPServer`: an ``http.server`` thread on 127.0.0.1:0
  serving byte strings by path, counting requests per path;
- :class:`OpenSSLResponder`: ``openssl ocsp`` as a subprocess on a free
  port, answering from an ``index.txt`` written here;
- :func:`dead_port`: a port with nothing listening.

Imported by the test modules of this folder as ``revocation_peers``.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509 import ocsp
from trust_pki import Issued

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port free right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def dead_port() -> int:
    """A loopback port with nothing listening: connections are refused."""
    return free_port()


class StaticHTTPServer:
    """Answers GET and POST with ``routes[path]`` (200) or 404, counting
    requests per path and recording POST bodies."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        #: path → Location of a 302 answer to GET.
        self.redirects: dict[str, str] = {}
        #: (path, Content-Type, body) of every POST.
        self.posts: list[tuple[str, str, bytes]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.hits[self.path] += 1
                    body = server.routes.get(self.path)
                    location = server.redirects.get(self.path)
                if location is not None:
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with server._lock:
                    server.hits[self.path] += 1
                    server.posts.append((self.path, self.headers.get("Content-Type", ""), body))
                    answer = server.routes.get(self.path)
                if answer is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    @property
    def total_hits(self) -> int:
        with self._lock:
            return sum(self.hits.values())

    def __enter__(self) -> StaticHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class IndexEntry:
    """One line of openssl's CA database (``index.txt``)."""

    cert: x509.Certificate
    revoked_at: datetime | None = None

    def line(self) -> str:
        # Tab-separated: status, expiry, revocation date, serial (hex, even
        # length), file name, subject. Dates are YYMMDDHHMMSSZ.
        expiry = self.cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
        serial = f"{self.cert.serial_number:X}"
        serial = serial if len(serial) % 2 == 0 else "0" + serial
        subject = "".join(f"/{attr.rfc4514_string()}" for attr in self.cert.subject)
        if self.revoked_at is None:
            return f"V\t{expiry}\t\t{serial}\tunknown\t{subject}\n"
        revoked = self.revoked_at.strftime("%y%m%d%H%M%SZ")
        return f"R\t{expiry}\t{revoked},keyCompromise\t{serial}\tunknown\t{subject}\n"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)


def write_pem(path: Path, issued: Issued) -> tuple[Path, Path]:
    cert_path = path.with_suffix(".crt")
    key_path = path.with_suffix(".key")
    cert_path.write_bytes(_pem(issued.cert))
    key_path.write_bytes(
        issued.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
    )
    return cert_path, key_path


class OpenSSLResponder:
    """``openssl ocsp`` answering for ``ca`` from ``entries``, signing with
    ``signer`` (the CA itself or a delegated responder)."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int,
        ca: x509.Certificate,
        signer: Issued,
        entries: Sequence[IndexEntry],
        options: Sequence[str] = (),
    ) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("openssl not installed")
        workdir.mkdir(parents=True, exist_ok=True)
        index = workdir / "index.txt"
        index.write_text("".join(entry.line() for entry in entries))
        (workdir / "index.txt.attr").write_text("unique_subject = no\n")
        ca_path = workdir / "ca.crt"
        ca_path.write_bytes(_pem(ca))
        signer_cert, signer_key = write_pem(workdir / "responder", signer)
        self.port = port
        self.url = f"http://{LOOPBACK}:{port}"
        self._log_path = workdir / "openssl.log"
        self._log = self._log_path.open("wb")
        self._process = subprocess.Popen(
            [
                openssl,
                "ocsp",
                "-index",
                str(index),
                "-port",
                str(port),
                "-CA",
                str(ca_path),
                "-rsigner",
                str(signer_cert),
                "-rkey",
                str(signer_key),
                "-nmin",
                "5",
                "-ignore_err",
                # A stray connection must not block the single-threaded
                # responder for long.
                "-timeout",
                "2",
                *options,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        probe = ocsp.OCSPRequestBuilder().add_certificate(ca, ca, hashes.SHA256()).build()
        self._wait_listening(probe.public_bytes(Encoding.DER))

    def _wait_listening(self, probe: bytes) -> None:
        # openssl ocsp serves one connection at a time and waits for its
        # request, so the probe must be a whole request, not a bare connect.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"openssl ocsp exited with {self._process.returncode}")
            conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=2)
            try:
                conn.request("POST", "/", probe, {"Content-Type": "application/ocsp-request"})
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.02)
            finally:
                conn.close()
        self.stop()
        raise RuntimeError("openssl ocsp did not start answering")

    def requests_received(self) -> int:
        """OCSP requests openssl logged, the start-up probe excepted."""
        self._log.flush()
        text = self._log_path.read_text(errors="replace")
        return text.count("Received request") - 1

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def responders(*started: OpenSSLResponder) -> Iterator[tuple[OpenSSLResponder, ...]]:
    try:
        yield started
    finally:
        for responder in started:
            responder.stop()
