"""Sending requests upstream: pooled urllib3 connections, the SSRF guard at connect time (the
policy is ssrf.py), timeouts. SSE framing is sse.py.

urllib3 directly rather than requests: no per-call environment merging or request
preparation on the hot path (PERF-NOTES). It is cooperative under gevent's patching.
URL schemes given to Transport(in_process=...) are answered by a WSGI app in this process
(create_app maps `mock://` to gateway.mock_upstream), without a socket.
"""
from __future__ import annotations

import io
import logging
import select
import socket
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError,
                                ReadTimeoutError)

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.providers.base import UpstreamRequest
from gateway.providers.ssrf import BlockedAddress, check_address

log = logging.getLogger("gateway.transport")
try:        # the unpatched poll: a zero timeout never blocks, so gevent's hub need not see it
    from gevent.monkey import get_original
    _poll = get_original("select", "poll")
except ImportError:     # pragma: no cover - gevent is a dependency
    _poll = select.poll
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def _guarded(base: type[HTTPConnection], allow_private: bool) -> type[HTTPConnection]:
    """A connection class that checks the resolved address it actually connects to,
    so DNS rebinding cannot slip past a check made earlier."""

    class Guarded(base):
        _hold = False
        _held = b""

        # urllib3 sends the headers, then the body: two writes, two packets with TCP_NODELAY.
        # Keep the headers until the body (or getresponse, when there is none): one write.
        def putrequest(self, *args, **kwargs):
            self._held = b""        # nothing left from a request that failed half-way
            return super().putrequest(*args, **kwargs)

        def endheaders(self, message_body=None, *, encode_chunked=False):
            self._hold = True
            try:
                super().endheaders(message_body, encode_chunked=encode_chunked)
            finally:
                self._hold = False

        def send(self, data):
            if self._hold and isinstance(data, bytes):
                self._held += data
                return
            if self._held:
                held, self._held = self._held, b""
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    super().send(held)
                else:
                    data = held + bytes(data)
            super().send(data)

        def getresponse(self):
            if self._held:
                data, self._held = self._held, b""
                super().send(data)
            return super().getresponse()

        @property
        def is_connected(self) -> bool:
            # urllib3 asks this of every pooled connection before reuse; its check builds a
            # (gevent-patched) poll each time, ~7% of a worker. One real poll(0) says the same.
            if self.sock is None:
                return False
            poller = _poll()
            poller.register(self.sock, select.POLLIN)
            try:
                return not poller.poll(0)   # readable while idle: closed, or stray bytes
            except OSError:
                return False

        def _new_conn(self) -> socket.socket:
            err: Exception | None = None
            try:
                infos = socket.getaddrinfo(self._dns_host, self.port, type=socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise NewConnectionError(self, f"cannot resolve {self.host}: {e}") from e
            for family, type_, proto, _, addr in infos:
                check_address(addr[0], allow_private)
                sock = socket.socket(family, type_, proto)
                try:
                    sock.settimeout(self.timeout)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.connect(addr)
                    return sock
                except socket.timeout as e:
                    sock.close()
                    raise ConnectTimeoutError(self, f"connect to {self.host} timed out") from e
                except OSError as e:
                    sock.close()
                    err = e
            raise NewConnectionError(self, f"cannot connect to {self.host}: {err}")

    return Guarded


@dataclass(slots=True)
class Timeouts:
    connect: float
    first_byte: float
    idle: float


class Response:
    """What send() returns, whichever transport answered."""

    def __init__(self, status: int, headers, chunks: Iterator[bytes], close):
        self.status = status
        self.headers = headers
        self._chunks = chunks
        self._close = close

    def chunks(self) -> Iterator[bytes]:
        return self._chunks

    def read(self) -> bytes:
        return b"".join(self._chunks)

    def close(self, finished: bool = False) -> None:
        """Give the connection back; `finished`: the body's own end was seen (a stream's last
        event), so only the transfer terminator is left and the connection can be reused."""
        self._close(finished)


class Transport:
    """One per worker process: a connection pool per upstream host, and the in-process apps
    that answer their own URL schemes."""

    def __init__(self, timeouts: Timeouts, pool_size: int, allow_private: bool,
                 in_process: dict[str, WSGIApp] | None = None):
        self.timeouts = timeouts
        self.allow_private = allow_private
        self.in_process = dict(in_process or {})    # scheme -> WSGI app, e.g. {"mock": ...}
        self.pools = urllib3.PoolManager(num_pools=64, maxsize=pool_size, block=False, retries=False)
        http_conn = _guarded(HTTPConnection, allow_private)
        https_conn = _guarded(HTTPSConnection, allow_private)
        self.pools.pool_classes_by_scheme = {
            "http": type("GuardedPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("GuardedSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }

    def send(self, req: UpstreamRequest, timeouts: Timeouts | None = None) -> Response:
        """Send a request and return once the status line and headers arrived; `timeouts`
        replace the worker's for this call (Test connection waits less)."""
        if self.in_process and (app := self.in_process.get(req.url.partition(":")[0])):
            return _send_in_process(app, req)
        t = timeouts or self.timeouts
        try:
            resp = self.pools.urlopen(req.method, req.url, body=req.body, headers=req.headers,
                                      preload_content=False, redirect=False, retries=False,
                                      timeout=urllib3.Timeout(connect=t.connect, read=t.first_byte))
        except BlockedAddress as e:
            raise _blocked(e) from None
        except (ConnectTimeoutError, ReadTimeoutError) as e:
            raise UpstreamTimeout(_describe(e, "upstream timed out"), retryable=True) from None
        except (HTTPError, OSError) as e:
            # urllib3 wraps what _new_conn raised: ProtocolError(msg, cause) or .reason
            cause = getattr(e, "reason", None) or (e.args[-1] if e.args else None)
            if isinstance(cause, BlockedAddress):
                raise _blocked(cause) from None
            raise UpstreamError(_describe(e, "cannot reach the upstream"), retryable=True) from None
        sock = getattr(resp.connection, "sock", None)
        if sock is not None:
            sock.settimeout(t.idle)     # from here on, the limit is silence between chunks
        return Response(resp.status, resp.headers, _read_chunks(resp),
                        lambda finished=False: _release(resp, finished))


def _blocked(e: BlockedAddress) -> UpstreamError:
    # The address stays in the log: clients should not learn the internal network's layout.
    log.warning("upstream connect refused by the SSRF policy: %s", e)
    return UpstreamError("The provider's address is refused by the gateway's network policy "
                         "(a private, loopback or link-local address); see the gateway log.",
                         code="upstream_blocked")


def _describe(e: Exception, what: str) -> str:
    """A short cause without URLs: pool and host reprs can carry internal addresses."""
    name = type(e).__name__
    if isinstance(e, (ConnectTimeoutError, ReadTimeoutError)):
        return f"{what} ({name})"
    reason = getattr(e, "reason", None)
    if isinstance(reason, Exception):
        name = type(reason).__name__
    return f"{what} ({name})"


def _read_chunks(resp) -> Iterator[bytes]:
    """Yield bytes as they arrive (read1 does not wait to fill a buffer)."""
    try:
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                return
            yield chunk
    except ReadTimeoutError:
        raise UpstreamTimeout("upstream went silent (idle timeout)", retryable=True) from None
    except (ProtocolError, HTTPError, OSError) as e:
        raise UpstreamError(_describe(e, "upstream connection broke"), retryable=True) from None


def _release(resp, finished: bool = False) -> None:
    # A response read to the end goes back to the pool; a half-read one must not, unless all
    # that is left is the chunked terminator (reading it costs nothing, a new TCP+TLS handshake does).
    if not (resp.closed or resp.isclosed()) and finished:
        try:
            resp.read1(65536)
        except (HTTPError, OSError):
            pass
    if resp.closed or resp.isclosed():
        resp.release_conn()
    else:
        resp.close()
        resp.release_conn()


def _send_in_process(app: WSGIApp, req: UpstreamRequest) -> Response:
    parts = urlsplit(req.url)
    environ = {"REQUEST_METHOD": req.method, "PATH_INFO": parts.path, "QUERY_STRING": parts.query,
               "SERVER_NAME": "mock", "SERVER_PORT": "0", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(req.body),
               "CONTENT_LENGTH": str(len(req.body)),
               "CONTENT_TYPE": req.headers.get("content-type", "application/json")}
    for name, value in req.headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    started: dict = {}

    def start_response(status, headers, exc_info=None):
        started["status"] = int(status.split()[0])
        started["headers"] = {k.lower(): v for k, v in headers}

    body = app(environ, start_response)
    it = iter(body)
    try:
        first = next(it, b"")       # the app calls start_response before its first chunk
    except ConnectionResetError:
        raise UpstreamError("upstream connection broke (reset)", retryable=True) from None

    def chunks() -> Iterator[bytes]:
        try:
            if first:
                yield first
            yield from it
        except ConnectionResetError:
            raise UpstreamError("upstream connection broke (reset)", retryable=True) from None

    return Response(started["status"], started["headers"], chunks(),
                    lambda finished=False: getattr(body, "close", lambda: None)())
