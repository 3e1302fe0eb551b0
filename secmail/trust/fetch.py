"""Fetching revocation data (OCSP responses, CRLs) over HTTP.

The revocation checkers never open a socket themselves: they ask a
:class:`Fetcher`, so tests and air-gapped sites can swap the network out
(``fetcher=None`` in the checkers means "never fetch").

:class:`HTTPFetcher` is the production implementation, on the standard
library's ``http.client``. It is built so that a verification can never
hang on a revocation server:

- every exchange has one deadline covering name resolution, connection,
  sending and reading (not a per-read timeout, which a server trickling
  one byte at a time would defeat); the caller waits at most that long
  even when the resolver blocks, because the exchange runs on a small
  worker pool and is abandoned (its socket shut down) at the deadline;
- responses are capped in size;
- an origin that did not answer is not asked again for a while, so an
  outage costs one timeout per origin and period, not one per message.

Only ``http`` and ``https`` URLs are fetched (RFC 5280 §4.2.1.13 and RFC
6960 Appendix A name HTTP; LDAP and FTP are ignored), and redirects are
followed for GET only, never to another scheme.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Protocol
from urllib.parse import urljoin, urlsplit

from secmail.errors import ErrorReason, SecmailError

__all__ = ["FetchError", "Fetcher", "HTTPFetcher"]

#: 1 MiB: a large CA's CRL fits, a hostile server cannot fill memory.
DEFAULT_MAX_BYTES = 1 << 20
#: Seconds for a whole exchange (resolution, connection, request, response).
DEFAULT_TIMEOUT = 3.0
#: Seconds an origin that did not answer is left alone.
DEFAULT_RETRY_AFTER = 60.0

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


class FetchError(SecmailError):
    """Revocation data could not be fetched.

    ``unreachable`` is true when the server did not answer at all
    (resolution, connection or timeout), false when it answered something
    unusable (an HTTP error, a response too large). The message names the
    URL, which comes from a certificate, and never any content.
    """

    reason = ErrorReason.INTERNAL

    def __init__(self, url: str, problem: str, *, unreachable: bool) -> None:
        super().__init__(f"fetching {url}: {problem}", metadata={"url": url})
        self.url = url
        self.unreachable = unreachable


class Fetcher(Protocol):
    """Where revocation data comes from. Implementations must be
    thread-safe, bounded in time, and raise only :class:`FetchError`."""

    def get(self, url: str, *, accept: str) -> bytes:
        """The body of a successful (200) GET of ``url``."""
        ...

    def post(self, url: str, body: bytes, *, content_type: str, accept: str) -> bytes:
        """The body of a successful (200) POST of ``body`` to ``url``."""
        ...


class _Exchange:
    """One HTTP exchange, abortable from the waiting thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.aborted = False

    def attach(self, sock: socket.socket | None) -> socket.socket:
        with self._lock:
            if self.aborted or sock is None:
                raise TimeoutError("exchange aborted")
            self._sock = sock
            return sock

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            sock = self._sock
        if sock is not None:
            # shutdown (unlike close) wakes a thread blocked in recv.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HTTPFetcher:
    """Fetch over HTTP(S) with a hard deadline and a size cap.

    Create one per process and share it: it owns a small worker pool (at
    most ``workers`` exchanges at once; more wait their turn, within their
    own deadline) and remembers which origins are down.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_redirects: int = 3,
        retry_after: float = DEFAULT_RETRY_AFTER,
        workers: int = 8,
        user_agent: str = "secmail-revocation/1",
    ) -> None:
        if timeout <= 0 or max_bytes <= 0 or workers <= 0 or max_redirects < 0 or retry_after < 0:
            raise ValueError("timeouts, sizes and counts must be positive")
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._retry_after = retry_after
        self._user_agent = user_agent
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="secmail-fetch")
        self._down: dict[str, float] = {}
        self._down_lock = threading.Lock()
        # Built on first HTTPS use: loading the system trust store takes
        # tens of milliseconds, and revocation URLs are nearly always HTTP.
        self._tls: ssl.SSLContext | None = None
        self._tls_lock = threading.Lock()

    def get(self, url: str, *, accept: str) -> bytes:
        return self._fetch("GET", url, None, {"Accept": accept})

    def post(self, url: str, body: bytes, *, content_type: str, accept: str) -> bytes:
        return self._fetch("POST", url, body, {"Content-Type": content_type, "Accept": accept})

    def close(self) -> None:
        """Stop the worker pool; exchanges under way are abandoned."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> HTTPFetcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _fetch(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]) -> bytes:
        origin = _origin(url)
        if self._is_down(origin):
            raise FetchError(url, "server recently unreachable", unreachable=True)
        deadline = time.monotonic() + self._timeout
        exchange = _Exchange()
        try:
            future = self._pool.submit(self._exchange, exchange, method, url, body, headers, deadline)
        except RuntimeError as error:
            raise FetchError(url, "fetcher closed", unreachable=True) from error
        try:
            return future.result(timeout=max(deadline - time.monotonic(), 0.0))
        except FutureTimeoutError:
            future.cancel()
            exchange.abort()
            self._mark_down(origin)
            raise FetchError(url, f"no answer within {self._timeout:g} s", unreachable=True) from None
        except FetchError as error:
            if error.unreachable:
                self._mark_down(origin)
            raise
        except Exception as error:
            # Whatever else a hostile URL or server trips (the contract is
            # FetchError only).
            raise FetchError(url, f"unusable ({type(error).__name__})", unreachable=False) from None

    def _exchange(
        self,
        exchange: _Exchange,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        deadline: float,
    ) -> bytes:
        current = url
        for _ in range(self._max_redirects + 1):
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FetchError(url, f"not an HTTP URL: {current!r}", unreachable=False)
            try:
                port = parts.port
            except ValueError:
                raise FetchError(url, "bad port", unreachable=False) from None
            conn = self._connection(parts.scheme, parts.hostname, port, _remaining(url, deadline))
            try:
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                conn.request(method, target, body=body, headers={**headers, "User-Agent": self._user_agent})
                # getresponse() may hand the socket over to the response and
                # forget it (Connection: close), so keep our own reference.
                sock = exchange.attach(conn.sock)
                sock.settimeout(_remaining(url, deadline))
                response = conn.getresponse()
                if response.status in _REDIRECTS and method == "GET":
                    location = response.getheader("Location")
                    if not location:
                        raise FetchError(url, f"HTTP {response.status} without Location", unreachable=False)
                    current = urljoin(current, location)
                    continue
                if response.status != 200:
                    raise FetchError(url, f"HTTP {response.status}", unreachable=False)
                return self._read_body(url, sock, response, deadline)
            except FetchError:
                raise
            except TimeoutError:
                raise FetchError(url, "timed out", unreachable=True) from None
            except (OSError, ssl.SSLError) as error:
                raise FetchError(url, f"network error ({type(error).__name__})", unreachable=True) from None
            except (http.client.HTTPException, ValueError) as error:
                problem = f"bad HTTP response ({type(error).__name__})"
                raise FetchError(url, problem, unreachable=False) from None
            finally:
                conn.close()
        raise FetchError(url, "too many redirects", unreachable=False)

    def _connection(
        self, scheme: str, host: str, port: int | None, timeout: float
    ) -> http.client.HTTPConnection:
        if scheme == "https":
            with self._tls_lock:
                if self._tls is None:
                    self._tls = ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _read_body(
        self,
        url: str,
        sock: socket.socket,
        response: http.client.HTTPResponse,
        deadline: float,
    ) -> bytes:
        declared = response.getheader("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self._max_bytes:
            raise FetchError(url, f"response larger than {self._max_bytes} bytes", unreachable=False)
        chunks: list[bytes] = []
        size = 0
        # The response closes the socket itself once the body is complete.
        while not response.isclosed():
            sock.settimeout(_remaining(url, deadline))
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > self._max_bytes:
                raise FetchError(url, f"response larger than {self._max_bytes} bytes", unreachable=False)
            chunks.append(chunk)
        return b"".join(chunks)

    def _is_down(self, origin: str) -> bool:
        with self._down_lock:
            until = self._down.get(origin)
            if until is None:
                return False
            if until > time.monotonic():
                return True
            del self._down[origin]
            return False

    def _mark_down(self, origin: str) -> None:
        if self._retry_after <= 0:
            return
        now = time.monotonic()
        with self._down_lock:
            if len(self._down) >= 1024:
                # Bounded: forget origins whose pause is over, then the oldest.
                for key in [k for k, until in self._down.items() if until <= now]:
                    del self._down[key]
                while len(self._down) >= 1024:
                    del self._down[next(iter(self._down))]
            self._down[origin] = now + self._retry_after


def _remaining(url: str, deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(url, "timed out", unreachable=True)
    return left


def _origin(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port}"
    except ValueError:
        return url
