"""Streamed chat answers: relay the upstream's events (SSE, or the adapter's own framing) as
OpenAI chunks, with keepalive comments while the first chunk is slow, and one usage record
however the stream ends."""
from __future__ import annotations

import threading
import time
from typing import Iterator

import orjson
from flask import Flask, current_app

from gateway.errors import ClientGone, GatewayError, UpstreamError, anthropic_error
from gateway.providers.base import StreamError, Usage
from gateway.services.accounting import prompt_log, tokens
from gateway.services.api_request import ApiRequest, NativeBytes
from gateway.services.routing import cache
from gateway.services.routing.health import health
from gateway.services.routing.plan import Plan
from gateway.services.routing.relay import (Exchange, exchange, gateway_headers, overhead_header, served_fields,
                                            start_recorded)
from gateway.services.routing.upstream import Answer, sanitize


def open_stream(req: ApiRequest, plan: Plan, admission) -> tuple[Iterator[bytes], dict]:
    """Start a chat stream: the SSE bytes to send and the x-gateway-* headers known so far.
    A deployment taking the request's dialect as-is streams its own events (NativeBytes frames).
    Failures before the first chunk fall back or raise (a proper HTTP error); the iterator
    records usage when it ends, however it ends.

    When the first chunk takes longer than STREAM_KEEPALIVE_SECONDS, the response starts
    anyway with SSE comments: the client knows we are alive, and a client that left is noticed
    at the next comment instead of after the whole answer was paid for. Such a response cannot
    name the deployment in its headers: they went out before it was known."""
    app = current_app._get_current_object()
    ex = exchange(app, req, plan, admission)
    look = cache.lookup(app, ex)
    if look.hit is not None:
        return _paced(ex, cache.replay(app, ex, look)), {**gateway_headers(plan), **look.headers,
                                                         **overhead_header(ex)}
    wait = app.config["STREAM_KEEPALIVE_SECONDS"]
    if not wait:
        answer = start_recorded(app, ex)
        return _paced(ex, _relay(app, ex, answer, look)), _headers(ex, look, answer)
    starter = _Starter(app, ex)
    ours = overhead_header(ex)      # before the wait on the starter, which counts its own
    if starter.done.wait(wait):
        if starter.error is not None:
            raise starter.error
        answer = starter.take()
        return _paced(ex, _relay(app, ex, answer, look)), _headers(ex, look, answer)
    return _keepalive(app, ex, starter, wait, look), {**gateway_headers(plan), **look.headers, **ours}


def _headers(ex: Exchange, look: cache.Lookup, answer: Answer) -> dict:
    return {**gateway_headers(ex.plan, answer), **look.headers, **overhead_header(ex)}


def _paced(ex: Exchange, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """`chunks`, with the time the client takes to read each one counted as waiting."""
    try:
        for chunk in chunks:
            t = time.perf_counter()
            yield chunk
            ex.waited.add(t)
    finally:
        chunks.close()      # a client that left: the inner generator records it now


def _timed(ex: Exchange, events: Iterator) -> Iterator:
    """The upstream's events, with the time spent waiting for each counted as waiting."""
    it = iter(events)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            ex.waited.add(t)
            return
        ex.waited.add(t)
        yield item


class _Starter:
    """Runs start() in its own thread (a greenlet under gevent) while the response waits."""

    def __init__(self, app: Flask, ex: Exchange):
        self.app, self.ex = app, ex
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.answer: Answer | None = None
        self.error: BaseException | None = None
        self.abandoned = False
        threading.Thread(target=self._run, name="stream-start", daemon=True).start()

    def _run(self) -> None:
        try:
            with self.app.app_context():
                self.answer = start_recorded(self.app, self.ex)
        except BaseException as e:      # handed to the request, which raises or reports it
            self.error = e
        finally:
            with self.lock:
                self.done.set()
                orphan = self.abandoned
            if orphan:
                self._drop()

    def take(self) -> Answer | None:
        """The started stream, now owned by the caller."""
        with self.lock:
            answer, self.answer = self.answer, None
        return answer

    def abandon(self) -> None:
        """The client left: whatever start() returns is closed and recorded as cut."""
        with self.lock:
            self.abandoned = True
            finished = self.done.is_set()
        if finished:
            self._drop()

    def _drop(self) -> None:
        answer = self.take()
        if answer is not None:
            _finish(self.app, self.ex, answer, 499, None,
                    ClientGone())


def _keepalive(app: Flask, ex: Exchange, starter: _Starter, wait: float,
               look: cache.Lookup) -> Iterator[bytes]:
    """Comments every `wait` seconds until the stream starts; open_stream already waited once,
    so the first comment goes out at once (at `wait`, not twice that)."""
    try:
        yield b": keepalive\n\n"
        while not starter.done.wait(wait):
            yield b": keepalive\n\n"
        if isinstance(starter.error, GatewayError):     # already recorded by start_recorded
            yield b"data: " + orjson.dumps(starter.error.body()) + b"\n\n"
            return
        if starter.error is not None:
            raise starter.error
        yield from _paced(ex, _relay(app, ex, starter.take(), look))
    finally:
        starter.abandon()


def _relay(app: Flask, ex: Exchange, answer: Answer, look: cache.Lookup) -> Iterator[bytes]:
    started = ex.req.started
    parser = answer.parser
    ttft: float | None = (answer.first_at - started) * 1000 if answer.first_at else None
    recorded = False
    text = prompt_log.StreamText(ex.capture, ex.redactor) if ex.capture else None
    frame = _native_frame if answer.native else _chat_frame

    def keep(out: bytes) -> None:
        # A native parser keeps the event it just read as OpenAI chunks too, for the log.
        for chunk in parser.chat if answer.native else (out,):
            text.add(chunk)

    # What the cache keeps, when the stream ends well; never a passed-through (native) stream,
    # since a hit is replayed as chat chunks.
    kept = look if look.on and not answer.native else None

    def finish(status: int, error: GatewayError | None) -> dict:
        # Recorded before the last event goes out, so a client that saw the end can count on it.
        nonlocal recorded
        recorded = True
        return _finish(app, ex, answer, status, ttft, error, text)

    try:
        for out in answer.pending:
            if text is not None:
                keep(out)
            if kept is not None:
                kept.add(out)
            yield frame(out)
        for event, data in (_timed(ex, answer.events) if not parser.done else ()):
            for out in parser.feed(event, data):
                if ttft is None:
                    ttft = (time.perf_counter() - started) * 1000
                if text is not None:
                    keep(out)
                if kept is not None:
                    kept.add(out)
                yield frame(out)
            if parser.done:
                break
        if not parser.done:
            raise UpstreamError("The provider ended the stream before it was complete.",
                                code="stream_incomplete")
        fields = finish(200, None)
        if kept is not None:
            cache.keep(app, look, fields)
        if not answer.native:       # Anthropic's stream ends with its own message_stop
            yield b"data: [DONE]\n\n"
    except (UpstreamError, StreamError) as e:
        error = e if isinstance(e, UpstreamError) else UpstreamError(
            f"The provider's stream failed: {sanitize(str(e), answer.route.target.api_key)}",
            code="stream_error")
        finish(error.status, error)
        if answer.native:
            yield _native_frame(b"event: error\ndata: " + orjson.dumps(
                anthropic_error(error.status, error.type, error.message)) + b"\n\n")
        else:
            yield b"data: " + orjson.dumps(error.body()) + b"\n\n"
    finally:
        if not recorded:        # the client went away (GeneratorExit) or something unexpected
            finish(499, ClientGone())


def _chat_frame(chunk: bytes) -> bytes:
    return b"data: " + chunk + b"\n\n"


def _native_frame(frame: bytes) -> bytes:
    """A frame already in the client's dialect (passed through), marked so it is not translated."""
    return NativeBytes(frame)


def _finish(app: Flask, ex: Exchange, answer: Answer, status: int, ttft: float | None,
            error: GatewayError | None, text=None) -> dict:
    """Close the upstream and leave the stream's one record, with what it streamed; its fields."""
    parser = answer.parser
    answer.response.close(finished=parser.done)
    used = parser.usage
    if used is None:       # none reported (cut, abandoned, or a vendor that sends none)
        used = Usage(prompt_tokens=ex.plan.need.prompt_tokens,
                     completion_tokens=tokens.estimate_text(parser.text_chars), estimated=True)
    _health(app, answer, status, error, used)
    fields = dict(served_fields(answer, used), ttft_ms=ttft)
    if error is not None:
        fields.update(error_type=error.type, error_message=error.message[:500])
    if text is not None:        # the answer as streamed, when the admin stores them
        fields["response_text"] = text.value()
    ex.record(app, status, **fields)
    return fields


def _health(app: Flask, answer: Answer, status: int, error: GatewayError | None, used: Usage) -> None:
    ms = (time.perf_counter() - answer.t0) * 1000
    ttft = (answer.first_at - answer.t0) * 1000 if answer.first_at else None
    h = health(app)
    if status == 200:
        h.success(answer.route, ms, ttft, used.completion_tokens, used.total_tokens)
    elif isinstance(error, UpstreamError):
        h.failure(answer.route, ms, status=error.upstream_status)
    else:
        h.release(answer.route)
