"""The call flow shared by the proxy and the console playground: pick a deployment, call it,
translate the answer, and leave exactly one usage record whatever happens."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Iterator

import orjson
from flask import Flask, current_app

from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, UpstreamError, UpstreamTimeout
from gateway.providers import transport as transport_mod
from gateway.providers.base import StreamError, Usage
from gateway.providers.registry import ADAPTERS
from gateway.services import catalog, pricing, quota, tokens
from gateway.services.keys import KeyInfo
from gateway.services.usage import UsageEntry, recorder


@dataclass
class Call:
    """One client request as the relay sees it."""
    request_id: str
    endpoint: str                # chat or embeddings
    body: dict
    key: KeyInfo | None
    tags: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    reservation: object | None = None     # set by quota.admit
    rate_headers: dict = field(default_factory=dict)   # x-ratelimit-* for the response

    @property
    def model(self) -> str | None:
        m = self.body.get("model")
        return m if isinstance(m, str) else None

    @property
    def stream(self) -> bool:
        return self.endpoint == "chat" and self.body.get("stream") is True


def entry_for(call: Call, status: int, **fields) -> UsageEntry:
    key = call.key
    return UsageEntry(request_id=call.request_id, endpoint=call.endpoint, status=status,
                      key_id=key.id if key else None, key_prefix=key.prefix if key else None,
                      user_id=key.user_id if key else None, requested_model=call.model,
                      stream=call.stream, tags=call.tags,
                      latency_ms=(time.perf_counter() - call.started) * 1000, **fields)


def record(app: Flask, call: Call, entry: UsageEntry) -> None:
    """The one way a request's record is made: settles its quota reservation, then queues it."""
    try:
        if call.reservation is not None:
            quota.settle(app, call, entry)
    finally:
        recorder(app).record(entry)


def record_failure(app: Flask, call: Call, error: GatewayError, **fields) -> None:
    record(app, call, entry_for(call, error.status, error_type=error.type,
                                error_message=error.message[:500], **fields))


def _transport(app: Flask) -> transport_mod.Transport:
    return app.extensions["transport"]


def _routes(call: Call, mode: str) -> list[catalog.Route]:
    model = call.model
    routes = [r for r in catalog.routes_for(model) if r.mode == mode]
    if not routes:
        if catalog.routes_for(model):
            raise InvalidRequest(f"The model '{model}' does not support {call.endpoint}.", param="model")
        raise ModelNotFound(f"The model '{model}' does not exist or is not served by this gateway.",
                            param="model")
    call.key.check_model(model)
    return catalog.order_routes(routes)


_SECRETISH = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|key=[^&\s\"']+|Bearer\s+\S+|https?://[^\s\"']+)")


def sanitize(message: str, secret: str) -> str:
    """Strip anything key- or URL-like from an upstream message before a client sees it."""
    if secret:
        message = message.replace(secret, "[redacted]")
    return _SECRETISH.sub("[redacted]", message)[:1000]


def upstream_failure(route: catalog.Route, status: int, data: bytes, headers) -> UpstreamError:
    """Map an upstream error status to what the client should see."""
    adapter = ADAPTERS[route.kind]
    failure = adapter.error_message(status, data)
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
class Prepared:
    """An upstream answer whose status and headers arrived; the body is still to read."""
    call: Call
    route: catalog.Route
    response: transport_mod.Response
    price: tuple | None
    attempts: list


def start(call: Call, mode: str) -> Prepared:
    """Send to the first deployment that answers; fall back to the next one on errors that
    another deployment may not have (connection, 429, 5xx, timeout) before any byte is sent."""
    app = current_app._get_current_object()
    routes = _routes(call, mode)
    attempts: list[dict] = []
    last: UpstreamError | None = None
    for route in routes[: app.config.get("MAX_ATTEMPTS", 3)]:
        adapter = ADAPTERS[route.kind]
        t0 = time.perf_counter()
        try:
            if mode == "embedding":
                req = adapter.embeddings_request(route.target, call.body)
            else:
                req = adapter.chat_request(route.target, call.body, call.stream)
            resp = _transport(app).send(req)
            if resp.status >= 400:
                data = _read_capped(resp)
                raise upstream_failure(route, resp.status, data, resp.headers)
        except UpstreamError as e:
            attempts.append(_attempt(route, t0, e.upstream_status or e.status, e.type))
            last = e
            if not e.retryable:
                break
            continue
        attempts.append(_attempt(route, t0, resp.status, None))
        return Prepared(call, route, resp, pricing.price_book().lookup(route.target.model), attempts)
    last.attempts = attempts
    last.route = route      # the failure's record names the deployment tried last
    raise last


def _attempt(route: catalog.Route, t0: float, status: int, error: str | None) -> dict:
    return {"deployment_id": route.deployment_id, "provider": route.provider,
            "model": route.target.model, "status": status, "error": error,
            "ms": round((time.perf_counter() - t0) * 1000, 1)}


def _read_capped(resp: transport_mod.Response, limit: int = 64 * 1024) -> bytes:
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


def _route_fields(p: Prepared) -> dict:
    return {"provider_id": p.route.provider_id, "provider": p.route.provider,
            "upstream_model": p.route.target.model, "attempts": p.attempts}


def _usage_fields(p: Prepared, usage: Usage) -> dict:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens, "cached_tokens": usage.cached_tokens,
            "estimated": usage.estimated, "cost_usd": pricing.cost_of(p.price, usage)}


def _start_recorded(app: Flask, call: Call, mode: str) -> Prepared:
    try:
        return start(call, mode)
    except GatewayError as e:
        route = getattr(e, "route", None)
        fields = {"provider_id": route.provider_id, "provider": route.provider,
                  "upstream_model": route.target.model} if route else {}
        record_failure(app, call, e, attempts=getattr(e, "attempts", []), **fields)
        raise
    except Exception:
        record_failure(app, call, GatewayError("internal error", status=500, type="server_error"))
        raise


def complete(call: Call, mode: str) -> bytes:
    """A whole (non-streaming) answer in OpenAI's shape; records usage either way."""
    app = current_app._get_current_object()
    p = _start_recorded(app, call, mode)
    adapter = ADAPTERS[p.route.kind]
    try:
        data = p.response.read()
        reply = (adapter.embeddings_response if mode == "embedding" else adapter.chat_response)(
            data, p.route.target)
    except (UpstreamError, StreamError) as e:
        err = e if isinstance(e, UpstreamError) else UpstreamError(
            f"The provider sent a malformed answer: {sanitize(str(e), p.route.target.api_key)}")
        record_failure(app, call, err, **_route_fields(p))
        raise err from None
    finally:
        p.response.close()
    usage = reply.usage or Usage(prompt_tokens=tokens.estimate_prompt(call.body), estimated=True)
    record(app, call, entry_for(call, 200, **_route_fields(p), **_usage_fields(p, usage)))
    return reply.body


def stream(call: Call) -> Iterator[bytes]:
    """Start a chat stream. Failures before the first byte raise (a proper HTTP error);
    the returned iterator yields SSE bytes and records usage when it ends, however it ends."""
    app = current_app._get_current_object()
    p = _start_recorded(app, call, "chat")
    parser = ADAPTERS[p.route.kind].ChatStream(p.route.target, call.body)
    return _relay_stream(app, p, parser)


def _relay_stream(app: Flask, p: Prepared, parser) -> Iterator[bytes]:
    call = p.call
    ttft: float | None = None
    recorded = False

    def finish(status: int, error: GatewayError | None) -> None:
        # Recorded before the last event goes out, so a client that saw the end can count on it.
        nonlocal recorded
        recorded = True
        p.response.close()
        usage = parser.usage
        if usage is None:       # none reported (cut, abandoned, or a vendor that sends none)
            usage = Usage(prompt_tokens=tokens.estimate_prompt(call.body),
                          completion_tokens=tokens.estimate_text(parser.text_chars), estimated=True)
        fields = dict(_route_fields(p), **_usage_fields(p, usage), ttft_ms=ttft)
        if error is not None:
            fields.update(error_type=error.type, error_message=error.message[:500])
        record(app, call, entry_for(call, status, **fields))

    try:
        for event, data in transport_mod.sse_events(p.response.chunks()):
            for out in parser.feed(event, data):
                if ttft is None:
                    ttft = (time.perf_counter() - call.started) * 1000
                yield b"data: " + out + b"\n\n"
            if parser.done:
                break
        if not parser.done:
            raise UpstreamError("The provider ended the stream before it was complete.",
                                code="stream_incomplete")
        finish(200, None)
        yield b"data: [DONE]\n\n"
    except (UpstreamError, StreamError) as e:
        error = e if isinstance(e, UpstreamError) else UpstreamError(
            f"The provider's stream failed: {sanitize(str(e), p.route.target.api_key)}",
            code="stream_error")
        finish(error.status, error)
        yield b"data: " + orjson.dumps(error.body()) + b"\n\n"
    finally:
        if not recorded:        # the client went away (GeneratorExit) or something unexpected
            finish(499, GatewayError("The client closed the connection.", type="client_disconnected"))
