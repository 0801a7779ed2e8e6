"""One upstream attempt: build the vendor request, send it, read far enough to know it is good,
and map a failure to what the client may see. Shared by the relay, shadow traffic and Test
connection, so all three speak to providers the same way."""
from __future__ import annotations

import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Iterator

from flask import Flask

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.providers import sse, transport
from gateway.providers.base import Reply, StreamError
from gateway.providers.registry import ADAPTERS, NATIVE
from gateway.services.api_request import Native
from gateway.services.routing.cancel import Cancel
from gateway.services.routing.catalog import Route

_SECRETISH = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|key=[^&\s\"']+|Bearer\s+\S+|https?://[^\s\"']+)")


def sanitize(message: str, secret: str) -> str:
    """Strip anything key- or URL-like from an upstream message before a client sees it."""
    if secret:
        message = message.replace(secret, "[redacted]")
    return _SECRETISH.sub("[redacted]", message)[:1000]


def upstream_failure(route: Route, status: int, data: bytes, headers) -> UpstreamError:
    """Map an upstream error status to what the client should see."""
    failure = ADAPTERS[route.kind].error_message(status, data)
    message = sanitize(failure.message, route.target.api_key)
    retry_after = _retry_after(headers.get("retry-after"))
    if status == 429:
        return UpstreamError(f"The provider is rate limiting: {message}", status=429,
                             type="rate_limit_exceeded", code="rate_limit_exceeded",
                             upstream_status=429, retryable=True, retry_after=retry_after)
    if status in (400, 413, 422):
        return UpstreamError(message, status=400, type="invalid_request_error",
                             code=failure.code if failure.code else "upstream_rejected",
                             upstream_status=status)
    if status in (401, 403):
        return UpstreamError("The provider rejected the gateway's credentials for this model.",
                             code="upstream_auth_failed", upstream_status=status)
    if status in (408, 504):
        return UpstreamTimeout(f"The provider timed out: {message}", upstream_status=status, retryable=True)
    return UpstreamError(f"The provider failed ({status}): {message}", upstream_status=status,
                         retryable=status >= 500)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


@dataclass
class Answer:
    """An upstream answer that is known to be good: a whole reply, or a stream whose first
    event arrived (so failing over is no longer possible without the client noticing)."""
    route: Route
    response: transport.Response
    price: tuple | None                 # what the request is billed at, fixed when it started
    t0: float                           # when this attempt started
    reply: Reply | None = None          # non-streaming: the translated answer
    parser: object | None = None        # streaming: the adapter's ChatStream, already fed
    events: Iterator | None = None      # streaming: the rest of the upstream's SSE events
    pending: list = field(default_factory=list)     # streaming: chunks parsed while peeking
    first_at: float | None = None       # streaming: when the first chunk arrived
    attempts: list = field(default_factory=list)    # every attempt of the request, this one last
    native: bool = False                # passed through: the answer is in the client's dialect


def speaks(route: Route, dialect: str) -> bool:
    """Whether `route`'s provider kind takes `dialect` as-is."""
    module = NATIVE.get(route.kind)
    return module is not None and dialect in module.DIALECTS


def attempt(app: Flask, route: Route, body: dict, mode: str, stream: bool,
            timeouts: transport.Timeouts | None = None, cancel: Cancel | None = None,
            native: Native | None = None) -> Answer:
    """Send `body` to `route` once and read far enough to know it is good; raises UpstreamError.
    `cancel` may interrupt the wait on the provider (ClientGone), and only that. With `native`,
    a route that speaks its dialect gets the client's own body instead (passed through)."""
    adapter = ADAPTERS[route.kind]
    if native is not None and not speaks(route, native.dialect):
        native = None           # this route gets the translated chat body
    if native is not None:
        req = NATIVE[route.kind].native_request(route.target, native.body, native.dialect, native.headers)
    elif mode == "embedding":
        req = adapter.embeddings_request(route.target, body)
    else:
        req = adapter.chat_request(route.target, body, stream)
    price = route.price()       # may read the database: before the wait a cancel can cut short
    with cancel.armed() if cancel is not None else nullcontext():
        return _call(app, route, req, body, mode, stream, price, timeouts, native)


def _call(app: Flask, route: Route, req, body: dict, mode: str, stream: bool, price,
          timeouts: transport.Timeouts | None, native: Native | None = None) -> Answer:
    adapter = ADAPTERS[route.kind]
    t0 = time.perf_counter()
    resp = app.extensions["transport"].send(req, timeouts)
    if resp.status >= 400:
        raise upstream_failure(route, resp.status, _read_capped(resp), resp.headers)
    answer = Answer(route, resp, price, t0, native=native is not None)
    model = native.body.get("model") if native is not None else None
    try:
        if stream:
            parser = (NATIVE[route.kind].NativeStream(route.target, model) if native is not None
                      else adapter.ChatStream(route.target, body))
            _peek(answer, parser, int(app.config["UPSTREAM_MAX_EVENT_BYTES"]))
        elif native is not None:
            answer.reply = NATIVE[route.kind].native_response(resp.read(), route.target, model)
        else:
            parse = adapter.embeddings_response if mode == "embedding" else adapter.chat_response
            answer.reply = parse(resp.read(), route.target)
    except StreamError as e:
        resp.close()
        raise UpstreamError(f"The provider sent a malformed answer: {sanitize(str(e), route.target.api_key)}",
                            code="malformed") from None
    except BaseException:
        resp.close()
        raise
    if not stream:
        resp.close()
    return answer


def _peek(answer: Answer, parser, max_event_bytes: int) -> None:
    """Read the stream until its first chunk for the client (or its end), so that a stream
    failing before that can still go to another deployment."""
    answer.parser = parser
    answer.events = sse.sse_events(answer.response.chunks(), max_event_bytes)
    for event, data in answer.events:
        out = parser.feed(event, data)
        if out or parser.done:
            answer.pending = out
            answer.first_at = time.perf_counter()
            return
    raise UpstreamError("The provider ended the stream before its first chunk.",
                        code="stream_incomplete", retryable=True)


def _read_capped(resp: transport.Response, limit: int = 64 * 1024) -> bytes:
    data = b""
    try:
        for chunk in resp.chunks():
            data += chunk
            if len(data) > limit:
                break
    except UpstreamError:
        pass
    finally:
        resp.close()
    return data
