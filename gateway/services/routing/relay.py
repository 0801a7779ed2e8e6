"""The call flow shared by the proxy and the console playground: pick a deployment, call it,
translate the answer, and leave exactly one usage record whatever happens."""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import orjson
from flask import Flask, current_app

from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.providers import transport as transport_mod
from gateway.providers.base import Reply, StreamError, Usage
from gateway.providers.registry import ADAPTERS
from gateway.services.accounting import pricing, prompt_log, quota, tokens
from gateway.services.routing import catalog, plan as planning, shadow
from gateway.services.routing.health import health
from gateway.services.accounting.keys import KeyInfo
from gateway.services.accounting.usage import UsageEntry, recorder


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
    fallbacks: list = field(default_factory=list)      # models to try after `model` (client's list)
    served_by: catalog.Route | None = None             # set once an attempt answered
    attempt_count: int = 0
    variant: str | None = None                         # A/B arm chosen by the policy
    capture: int = 0        # characters of prompt and completion to log; 0: storage is off

    @property
    def gateway_headers(self) -> dict:
        """x-gateway-* response headers: who served, after how many attempts."""
        out = {"x-gateway-attempts": str(self.attempt_count)} if self.attempt_count else {}
        if self.served_by is not None:
            out["x-gateway-deployment"] = _header_safe(self.served_by.label)
            out["x-gateway-deployment-id"] = str(self.served_by.deployment_id)
        if self.variant:
            out["x-gateway-variant"] = self.variant
        return out

    @property
    def model(self) -> str | None:
        m = self.body.get("model")
        return m if isinstance(m, str) else None

    @property
    def stream(self) -> bool:
        return self.endpoint == "chat" and self.body.get("stream") is True


def _header_safe(value: str) -> str:
    return value.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")[:200]


def entry_for(call: Call, status: int, **fields) -> UsageEntry:
    key = call.key
    return UsageEntry(request_id=call.request_id, endpoint=call.endpoint, status=status,
                      key_id=key.id if key else None, key_prefix=key.prefix if key else None,
                      user_id=key.user_id if key else None, requested_model=call.model,
                      stream=call.stream, tags=call.tags, variant=call.variant,
                      latency_ms=(time.perf_counter() - call.started) * 1000, **fields)


def record(app: Flask, call: Call, entry: UsageEntry) -> None:
    """The one way a request's record is made: settles its quota reservation, then queues it."""
    try:
        if call.capture and entry.request_body is None:
            entry.request_body = prompt_log.request_text(call.body, call.capture)
        if call.reservation is not None:
            quota.settle(app, call, entry)
    finally:
        recorder(app).record(entry)


def record_failure(app: Flask, call: Call, error: GatewayError, **fields) -> None:
    record(app, call, entry_for(call, error.status, error_type=error.type,
                                error_message=error.message[:500], **fields))


def _transport(app: Flask) -> transport_mod.Transport:
    return app.extensions["transport"]


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
    """An upstream answer that is known to be good: a whole reply, or a stream whose first
    event arrived (so failing over is no longer possible without the client noticing)."""
    call: Call
    route: catalog.Route
    response: transport_mod.Response
    price: tuple | None
    attempts: list
    t0: float = 0.0                     # when the serving attempt started
    reply: Reply | None = None          # non-streaming: the translated answer
    parser: object | None = None        # streaming: the adapter's ChatStream, already fed
    events: Iterator | None = None      # streaming: the rest of the upstream's SSE events
    pending: list = field(default_factory=list)     # streaming: chunks parsed while peeking
    first_at: float | None = None       # streaming: when the first chunk arrived


def _fault(e: UpstreamError) -> str:
    """retry: the deployment may answer next time; next: try another deployment only;
    stop: the request itself is at fault, no deployment will do better."""
    status = e.upstream_status
    if isinstance(e, UpstreamTimeout):
        return "next"       # it just cost a whole timeout; spend what is left elsewhere
    if e.retryable:
        return "retry"
    if status in (401, 403, 404) or e.code in ("upstream_blocked", "stream_error", "malformed"):
        return "next"
    if status is None and e.status >= 500:
        return "next"
    return "stop"


def start(call: Call, mode: str) -> Prepared:
    """Try the planned deployments in order until one answers; retry with backoff and fall
    back on errors another attempt may not have (connection, 429, 5xx, timeout, a stream that
    breaks before its first chunk), within MAX_ATTEMPTS and the request's deadline."""
    app = current_app._get_current_object()
    plan = planning.plan(call, mode)
    call.variant = plan.variant
    h = health(app)
    need_tokens = plan.need.tokens
    max_attempts = int(planning.config("MAX_ATTEMPTS"))
    deadline = call.started + float(planning.config("ROUTING_DEADLINE_SECONDS"))
    wait_cap = float(planning.config("RETRY_AFTER_MAX_SECONDS"))
    attempts: list[dict] = []
    tries: dict[int, int] = {}
    retry_after: dict[int, float | None] = {}
    done: set[int] = set()      # not to be tried again in this request
    last: UpstreamError | None = None
    last_route: catalog.Route | None = None
    while len(attempts) < max_attempts:
        fresh = [r for r in plan.routes if r.deployment_id not in done and not tries.get(r.deployment_id)]
        again = [r for r in plan.routes if r.deployment_id not in done and tries.get(r.deployment_id)]
        route = (fresh or again or [None])[0]
        if route is None:
            break
        rid = route.deployment_id
        if not fresh:           # every deployment was tried: back off, then retry this one
            wait = planning.backoff(tries[rid], retry_after.get(rid))
            if wait > wait_cap or time.perf_counter() + wait >= deadline:
                done.add(rid)
                continue
            time.sleep(wait)
        if time.perf_counter() >= deadline:
            break
        if not h.begin(route, need_tokens):
            done.add(rid)       # its probe is taken or its cap is full
            continue
        t0 = time.perf_counter()
        try:
            prepared = _attempt_once(app, call, route, mode, t0)
        except UpstreamError as e:
            ms = (time.perf_counter() - t0) * 1000
            fault = _fault(e)
            attempts.append(_attempt(route, t0, e.upstream_status or e.status, e.type, e.code))
            last, last_route = e, route
            tries[rid] = tries.get(rid, 0) + 1
            retry_after[rid] = e.retry_after
            if fault == "stop":
                h.release(route)
                break
            h.failure(route, ms, status=e.upstream_status, retry_after=e.retry_after)
            if fault == "next" or e.upstream_status == 429 and (e.retry_after or wait_cap + 1) > wait_cap:
                done.add(rid)
            continue
        except BaseException:
            h.release(route)
            raise
        attempts.append(_attempt(route, t0, prepared.response.status, None, None))
        prepared.attempts = attempts
        call.served_by, call.attempt_count = route, len(attempts)
        if plan.shadow is not None and plan.shadow.deployment_id != rid:
            shadow.mirror(app, call, plan.shadow, mode)
        return prepared
    call.attempt_count = len(attempts)
    if last is None:
        last = UpstreamError("No deployment could take the request within its deadline and limits.",
                             status=503, type="service_unavailable", code="no_healthy_deployment",
                             retryable=True)
    last.attempts = attempts
    last.route = last_route     # the failure's record names the deployment tried last
    raise last


def _attempt_once(app: Flask, call: Call, route: catalog.Route, mode: str, t0: float) -> Prepared:
    """One upstream attempt, read far enough to know it is good; raises UpstreamError."""
    adapter = ADAPTERS[route.kind]
    if mode == "embedding":
        req = adapter.embeddings_request(route.target, call.body)
    else:
        req = adapter.chat_request(route.target, call.body, call.stream)
    resp = _transport(app).send(req)
    if resp.status >= 400:
        data = _read_capped(resp)
        raise upstream_failure(route, resp.status, data, resp.headers)
    p = Prepared(call, route, resp, route.price(), [], t0)
    try:
        if call.stream:
            _peek(p, adapter.ChatStream(route.target, call.body))
        else:
            data = resp.read()
            p.reply = (adapter.embeddings_response if mode == "embedding" else adapter.chat_response)(
                data, route.target)
    except StreamError as e:
        resp.close()
        raise UpstreamError(f"The provider sent a malformed answer: {sanitize(str(e), route.target.api_key)}",
                            code="malformed") from None
    except BaseException:
        resp.close()
        raise
    if not call.stream:
        resp.close()
    return p


def _peek(p: Prepared, parser) -> None:
    """Read the stream until its first chunk for the client (or its end), so that a stream
    failing before that can still go to another deployment."""
    p.parser = parser
    p.events = transport_mod.sse_events(p.response.chunks())
    for event, data in p.events:
        out = parser.feed(event, data)
        if out or parser.done:
            p.pending = out
            p.first_at = time.perf_counter()
            return
    raise UpstreamError("The provider ended the stream before its first chunk.",
                        code="stream_incomplete", retryable=True)


def _attempt(route: catalog.Route, t0: float, status: int, error: str | None, code: str | None) -> dict:
    out = {"deployment_id": route.deployment_id, "provider": route.provider,
           "model": route.target.model, "region": route.region, "status": status, "error": error,
           "ms": round((time.perf_counter() - t0) * 1000, 1)}
    if code and code != error:
        out["code"] = code
    return out


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
    call.capture = prompt_log.limit(app)
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
    reply = p.reply
    usage = reply.usage or Usage(prompt_tokens=tokens.estimate_prompt(call.body), estimated=True)
    ms = (time.perf_counter() - p.t0) * 1000
    health(app).success(p.route, ms, None, usage.completion_tokens, usage.total_tokens)
    entry = entry_for(call, 200, **_route_fields(p), **_usage_fields(p, usage))
    if call.capture and mode == "chat":
        entry.response_text = prompt_log.reply_text(reply.body, call.capture)
    record(app, call, entry)
    return reply.body


def stream(call: Call) -> Iterator[bytes]:
    """Start a chat stream. Failures before the first chunk fall back or raise (a proper HTTP
    error); the returned iterator yields SSE bytes and records usage when it ends, however it ends.

    When the first chunk takes longer than STREAM_KEEPALIVE_SECONDS, the response starts
    anyway with SSE comments: the client knows we are alive, and a client that left is noticed
    at the next comment instead of after the whole answer was paid for."""
    app = current_app._get_current_object()
    wait = app.config["STREAM_KEEPALIVE_SECONDS"]
    if not wait:
        p = _start_recorded(app, call, "chat")
        return _relay_stream(app, p, p.parser)
    starter = _Starter(app, call)
    if starter.done.wait(wait):
        if starter.error is not None:
            raise starter.error
        return _relay_stream(app, starter.take(), starter.prepared_parser)
    return _keepalive_stream(app, starter, wait)


class _Starter:
    """Runs start() in its own thread (a greenlet under gevent) while the response waits."""

    def __init__(self, app: Flask, call: Call):
        self.app, self.call = app, call
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.prepared: Prepared | None = None
        self.prepared_parser = None
        self.error: BaseException | None = None
        self.abandoned = False
        threading.Thread(target=self._run, name="stream-start", daemon=True).start()

    def _run(self) -> None:
        try:
            with self.app.app_context():
                self.prepared = _start_recorded(self.app, self.call, "chat")
                self.prepared_parser = self.prepared.parser
        except BaseException as e:      # handed to the request, which raises or reports it
            self.error = e
        finally:
            with self.lock:
                self.done.set()
                orphan = self.abandoned
            if orphan:
                self._drop()

    def take(self) -> Prepared:
        """The prepared stream, now owned by the caller."""
        with self.lock:
            p, self.prepared = self.prepared, None
        return p

    def abandon(self) -> None:
        """The client left: whatever start() returns is closed and recorded as cut."""
        with self.lock:
            self.abandoned = True
            finished = self.done.is_set()
        if finished:
            self._drop()

    def _drop(self) -> None:
        p = self.take()
        if p is not None:
            _finish_stream(self.app, p, p.parser, 499, None,
                           GatewayError("The client closed the connection.", type="client_disconnected"))


def _keepalive_stream(app: Flask, starter: _Starter, wait: float) -> Iterator[bytes]:
    try:
        while not starter.done.wait(wait):
            yield b": keepalive\n\n"
        if isinstance(starter.error, GatewayError):     # already recorded by _start_recorded
            yield b"data: " + orjson.dumps(starter.error.body()) + b"\n\n"
            return
        if starter.error is not None:
            raise starter.error
        yield from _relay_stream(app, starter.take(), starter.prepared_parser)
    finally:
        starter.abandon()


def _relay_stream(app: Flask, p: Prepared, parser) -> Iterator[bytes]:
    call = p.call
    ttft: float | None = (p.first_at - call.started) * 1000 if p.first_at else None
    recorded = False
    text = prompt_log.StreamText(call.capture) if call.capture else None

    def finish(status: int, error: GatewayError | None) -> None:
        # Recorded before the last event goes out, so a client that saw the end can count on it.
        nonlocal recorded
        recorded = True
        _finish_stream(app, p, parser, status, ttft, error, text)

    try:
        for out in p.pending:
            if text is not None:
                text.add(out)
            yield b"data: " + out + b"\n\n"
        for event, data in (p.events if not parser.done else ()):
            for out in parser.feed(event, data):
                if ttft is None:
                    ttft = (time.perf_counter() - call.started) * 1000
                if text is not None:
                    text.add(out)
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


def _finish_stream(app: Flask, p: Prepared, parser, status: int, ttft: float | None,
                   error: GatewayError | None, text=None) -> None:
    """Close the upstream and leave the stream's one record, with what it streamed."""
    call = p.call
    p.response.close(finished=parser.done)
    usage = parser.usage
    if usage is None:       # none reported (cut, abandoned, or a vendor that sends none)
        usage = Usage(prompt_tokens=tokens.estimate_prompt(call.body),
                      completion_tokens=tokens.estimate_text(parser.text_chars), estimated=True)
    _stream_health(app, p, status, error, usage)
    fields = dict(_route_fields(p), **_usage_fields(p, usage), ttft_ms=ttft)
    if error is not None:
        fields.update(error_type=error.type, error_message=error.message[:500])
    if text is not None:        # the answer as streamed, when the admin stores them
        fields["response_text"] = text.value()
    record(app, call, entry_for(call, status, **fields))


def _stream_health(app: Flask, p: Prepared, status: int, error: GatewayError | None, usage: Usage) -> None:
    ms = (time.perf_counter() - p.t0) * 1000
    ttft = (p.first_at - p.t0) * 1000 if p.first_at else None
    h = health(app)
    if status == 200:
        h.success(p.route, ms, ttft, usage.completion_tokens, usage.total_tokens)
    elif isinstance(error, UpstreamError):
        h.failure(p.route, ms, status=error.upstream_status)
    else:
        h.release(p.route)
