"""One upstream attempt: build the vendor request, send it, read far enough to know it is good,
and map a failure to what the client may see. Shared by the relay, shadow traffic and Test
connection, so all three speak to providers the same way."""
from __future__ import annotations

import math
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Iterator

from flask import Flask

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.providers import sse, transport
from gateway.providers.base import Reply, StreamError
from gateway.providers.registry import ADAPTERS, KINDS, NATIVE
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
    """Map an upstream error status to what the client should see. An adapter may define
    `error_status(status, headers)` when the vendor names the error kind in a header."""
    adapter = ADAPTERS[route.kind]
    status = getattr(adapter, "error_status", _same_status)(status, headers)
    failure = adapter.error_message(status, data)
    message = sanitize(failure.message, route.target.api_key)
    retry_after = _retry_after(headers.get("retry-after"))
    retry_ms = _retry_after(headers.get("retry-after-ms"))
    if retry_ms is not None:        # OpenAI's finer figure wins, as its SDKs do
        retry_after = retry_ms / 1000
    if status == 429:
        e = UpstreamError(f"The provider is rate limiting: {message}", status=429,
                          type="rate_limit_exceeded", code="rate_limit_exceeded",
                          upstream_status=429, retryable=True, retry_after=retry_after)
        if retry_after is not None:     # the client's own retry waits as the provider asked
            e.headers["retry-after"] = str(max(0, math.ceil(retry_after)))
            if retry_ms is not None:
                e.headers["retry-after-ms"] = str(max(0, round(retry_ms)))
        return e
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


def _same_status(status: int, headers) -> int:
    return status


def events_of(adapter):
    """How the adapter's streams split into (event, data) pairs: its own `events(chunks,
    max_event_bytes)` (Bedrock's binary event-stream), else Server-Sent Events."""
    return getattr(adapter, "events", sse.sse_events)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After value: a number, or an HTTP date (RFC 9110 allows both)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return None
        seconds = max(seconds, 0.0)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


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
    events: Iterator | None = None      # streaming: the rest of the upstream's events (see events_of)
    pending: list = field(default_factory=list)     # streaming: chunks parsed while peeking
    first_at: float | None = None       # streaming: when the first chunk arrived
    attempts: list = field(default_factory=list)    # every attempt of the request, this one last
    native: bool = False                # passed through: the answer is in the client's dialect


def speaks(route: Route, dialect: str) -> bool:
    """Whether `route`'s provider kind takes `dialect` as-is."""
    module = NATIVE.get(route.kind)
    return module is not None and dialect in module.DIALECTS


@dataclass(frozen=True, slots=True)
class Operation:
    """What one attempt of an operation calls on the kind's adapter."""
    media: bool                 # the kind's media adapter (ProviderKind.media), not its chat one
    request: str                # builds the upstream request: f(target, body)
    response: str | None        # reads a whole answer: f(data, target, body); None: relayed as it arrives


OPERATIONS = {      # ApiRequest.operation -> what an attempt does
    "chat": Operation(False, "chat_request", "chat_response"),
    "embedding": Operation(False, "embeddings_request", "embeddings_response"),
    "image": Operation(True, "image_request", "image_response"),
    "transcription": Operation(True, "transcription_request", "audio_text_response"),
    "translation": Operation(True, "translation_request", "audio_text_response"),
    "speech": Operation(True, "speech_request", None),
    "moderation": Operation(True, "moderation_request", "moderation_response"),
    "rerank": Operation(True, "rerank_request", "rerank_response"),
}


def _adapter(route: Route, op: Operation):
    spec = KINDS[route.kind]
    module = spec.media if op.media else spec.adapter
    if module is None:      # refused at save time; a deployment from before that lands here
        raise UpstreamError(f"{route.kind} providers have no API for this request.", status=400,
                            type="invalid_request_error", code="unsupported_by_provider")
    return module


def attempt(app: Flask, route: Route, body: dict, operation: str, stream: bool,
            timeouts: transport.Timeouts | None = None, cancel: Cancel | None = None,
            native: Native | None = None) -> Answer:
    """Send `body` to `route` once and read far enough to know it is good; raises UpstreamError.
    `operation` is ApiRequest.operation (its mode, or what it does where a mode does several).
    `cancel` may interrupt the wait on the provider (ClientGone), and only that. With `native`,
    a route that speaks its dialect gets the client's own body instead (passed through)."""
    op = OPERATIONS[operation]
    adapter = _adapter(route, op)
    if native is not None and not speaks(route, native.dialect):
        native = None           # this route gets the translated chat body
    if native is not None:
        req = NATIVE[route.kind].native_request(route.target, native.body, native.dialect, native.headers)
    elif operation == "chat":     # the one operation that streams
        req = adapter.chat_request(route.target, body, stream)
    else:
        req = getattr(adapter, op.request)(route.target, body)
    price = route.price()       # may read the database: before the wait a cancel can cut short
    with cancel.armed() if cancel is not None else nullcontext():
        return _call(app, route, req, body, op, stream, price, timeouts, native)


def _call(app: Flask, route: Route, req, body: dict, op: Operation, stream: bool, price,
          timeouts: transport.Timeouts | None, native: Native | None = None) -> Answer:
    adapter = _adapter(route, op)
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
            _peek(answer, parser, events_of(adapter), int(app.config["UPSTREAM_MAX_EVENT_BYTES"]))
        elif native is not None:
            answer.reply = NATIVE[route.kind].native_response(resp.read(), route.target, model)
        elif op.response is None:       # raw bytes (speech): its first chunk, so a dead one fails over
            answer.events = iter(resp.chunks())
            answer.pending = [next(answer.events, b"")]
            answer.first_at = time.perf_counter()
            return answer
        else:
            answer.reply = getattr(adapter, op.response)(resp.read(), route.target, body)
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


def _peek(answer: Answer, parser, split, max_event_bytes: int) -> None:
    """Read the stream until its first chunk for the client (or its end), so that a stream
    failing before that can still go to another deployment. `split` frames the bytes into
    events; stream.py relays the rest of `answer.events` from where this stopped."""
    answer.parser = parser
    answer.events = split(answer.response.chunks(), max_event_bytes)
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
