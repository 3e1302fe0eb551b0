"""HTTPFetcher against real servers on loopback: bodies, errors, deadlines,
size cap, redirects and the pause after an unreachable origin."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from revocation_peers import LOOPBACK, StaticHTTPServer, dead_port

from secmail.errors import SecmailError
from secmail.trust.fetch import FetchError, HTTPFetcher


@pytest.fixture
def server() -> Iterator[StaticHTTPServer]:
    with StaticHTTPServer() as started:
        yield started


@pytest.fixture
def fetcher() -> Iterator[HTTPFetcher]:
    with HTTPFetcher(timeout=2.0) as made:
        yield made


class RawServer:
    """A TCP server on loopback running ``handle(conn)`` per connection
    (for misbehaving peers http.server cannot play)."""

    def __init__(self, handle: Callable[[socket.socket], None], *, accept: bool = True) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(8)
        self.port = int(self._sock.getsockname()[1])
        self._handle = handle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True) if accept else None
        self.connections = 0

    def _serve(self) -> None:
        self._sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def __enter__(self) -> RawServer:
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._sock.close()


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


# --- ordinary exchanges -----------------------------------------------------


def test_get_returns_the_body(server: StaticHTTPServer, fetcher: HTTPFetcher) -> None:
    server.routes["/ca.crl"] = b"\x30\x03\x02\x01\x01"
    assert fetcher.get(server.url("/ca.crl"), accept="application/pkix-crl") == b"\x30\x03\x02\x01\x01"
    assert server.hits["/ca.crl"] == 1


def test_post_sends_body_and_content_type(server: StaticHTTPServer, fetcher: HTTPFetcher) -> None:
    server.routes["/ocsp"] = b"answer"
    body = fetcher.post(
        server.url("/ocsp"),
        b"\x30\x00",
        content_type="application/ocsp-request",
        accept="application/ocsp-response",
    )
    assert body == b"answer"
    assert server.posts == [("/ocsp", "application/ocsp-request", b"\x30\x00")]


def test_http_error_is_a_fetch_error_not_unreachable(server: StaticHTTPServer, fetcher: HTTPFetcher) -> None:
    with pytest.raises(FetchError) as caught:
        fetcher.get(server.url("/missing"), accept="*/*")
    assert not caught.value.unreachable
    assert "404" in caught.value.message
    # It is a secmail error: nothing else escapes.
    assert isinstance(caught.value, SecmailError)


def test_get_follows_a_redirect(server: StaticHTTPServer, fetcher: HTTPFetcher) -> None:
    server.routes["/new.crl"] = b"crl"
    server.redirects["/old.crl"] = "/new.crl"
    assert fetcher.get(server.url("/old.crl"), accept="*/*") == b"crl"
    assert server.hits["/old.crl"] == 1 and server.hits["/new.crl"] == 1


def test_redirect_to_another_scheme_is_refused(server: StaticHTTPServer, fetcher: HTTPFetcher) -> None:
    server.redirects["/old.crl"] = "file:///etc/passwd"
    with pytest.raises(FetchError) as caught:
        fetcher.get(server.url("/old.crl"), accept="*/*")
    assert not caught.value.unreachable


def test_redirect_loop_ends(server: StaticHTTPServer, fetcher: HTTPFetcher) -> None:
    server.redirects["/a"] = "/b"
    server.redirects["/b"] = "/a"
    with pytest.raises(FetchError, match="too many redirects"):
        fetcher.get(server.url("/a"), accept="*/*")
    assert server.total_hits == 4  # the request and three redirects


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ldap://ldap.example/cn=CA?certificateRevocationList",
        "ftp://x/ca.crl",
        "nonsense",
        "http://[::1/ca.crl",
        "http://ex ample.invalid/",
        f"http://{LOOPBACK}:99999/",
    ],
)
def test_only_http_urls_are_fetched(fetcher: HTTPFetcher, url: str) -> None:
    with pytest.raises(FetchError) as caught:
        fetcher.get(url, accept="*/*")
    assert not caught.value.unreachable


# --- size cap ------------------------------------------------------------------


def test_declared_oversize_body_is_refused(server: StaticHTTPServer) -> None:
    server.routes["/big"] = b"x" * 2049
    with HTTPFetcher(max_bytes=2048) as small:
        with pytest.raises(FetchError, match="larger than 2048"):
            small.get(server.url("/big"), accept="*/*")
        server.routes["/fits"] = b"x" * 2048
        assert len(small.get(server.url("/fits"), accept="*/*")) == 2048


def test_undeclared_oversize_body_is_cut_off() -> None:
    # No Content-Length: the body runs until the server closes, which this
    # one never does on its own; the cap must stop the read.
    def endless(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/pkix-crl\r\n\r\n")
        for _ in range(1000):
            conn.sendall(b"x" * 4096)

    with RawServer(endless) as raw, HTTPFetcher(max_bytes=64 * 1024, timeout=5) as small:
        start = time.monotonic()
        with pytest.raises(FetchError, match="larger than"):
            small.get(raw.url(), accept="*/*")
        assert time.monotonic() - start < 2


# --- deadlines -------------------------------------------------------------------


def test_refused_connection_fails_fast_and_pauses_the_origin() -> None:
    url = f"http://{LOOPBACK}:{dead_port()}/ca.crl"
    with HTTPFetcher(timeout=2) as fetcher:
        start = time.monotonic()
        with pytest.raises(FetchError) as caught:
            fetcher.get(url, accept="*/*")
        assert caught.value.unreachable
        with pytest.raises(FetchError, match="recently unreachable"):
            fetcher.get(url.replace("/ca.crl", "/other.crl"), accept="*/*")
        assert time.monotonic() - start < 1


def test_silent_server_is_abandoned_at_the_deadline() -> None:
    # Accepts (the kernel completes the handshake) and never answers.
    with RawServer(lambda conn: None, accept=False) as silent, HTTPFetcher(timeout=0.5) as fetcher:
        start = time.monotonic()
        with pytest.raises(FetchError) as caught:
            fetcher.post(silent.url(), b"req", content_type="application/ocsp-request", accept="*/*")
        elapsed = time.monotonic() - start
        assert caught.value.unreachable
        assert 0.4 < elapsed < 1.5
        # The origin is paused: the next request does not wait again.
        start = time.monotonic()
        with pytest.raises(FetchError, match="recently unreachable"):
            fetcher.get(silent.url(), accept="*/*")
        assert time.monotonic() - start < 0.1


def test_trickling_server_cannot_stretch_the_deadline() -> None:
    # One byte every 100 ms keeps each read under any per-read timeout;
    # only a deadline for the whole exchange stops it.
    def trickle(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(100):
            conn.sendall(b"x")
            time.sleep(0.1)

    with RawServer(trickle) as raw, HTTPFetcher(timeout=0.6) as fetcher:
        start = time.monotonic()
        with pytest.raises(FetchError) as caught:
            fetcher.get(raw.url(), accept="*/*")
        assert caught.value.unreachable
        assert time.monotonic() - start < 1.5


def test_origin_pause_can_be_disabled() -> None:
    url = f"http://{LOOPBACK}:{dead_port()}/"
    with HTTPFetcher(retry_after=0) as fetcher:
        for _ in range(2):
            with pytest.raises(FetchError) as caught:
                fetcher.get(url, accept="*/*")
            assert "recently" not in caught.value.message


def test_closed_fetcher_refuses(server: StaticHTTPServer) -> None:
    fetcher = HTTPFetcher()
    fetcher.close()
    with pytest.raises(FetchError):
        fetcher.get(server.url("/x"), accept="*/*")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        HTTPFetcher(timeout=0)
    with pytest.raises(ValueError):
        HTTPFetcher(max_bytes=0)
