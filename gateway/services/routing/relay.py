"""Serve a planned, admitted request: try its deployments in order with retries and failover,
translate the answer, and leave exactly one usage record whatever happens. Streams continue
in stream.py."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace

from flask import Flask, current_app

from gateway.errors import ClientGone, GatewayError, InvalidRequest, UpstreamError, UpstreamTimeout
from gateway.providers import anthropic_native
from gateway.providers.base import Usage
from gateway.services.accounting import pricing, prompt_log, redaction, usage
from gateway.services.api_request import ApiRequest, Native, NativeBytes
from gateway.services.routing import cache, shadow
from gateway.services.routing.cancel import Cancel
from gateway.services.routing.catalog import Route
from gateway.services.routing.health import health
from gateway.services.routing.plan import Plan
from gateway.services.routing.upstream import Answer, attempt, speaks


class Waited:
    """Seconds a request spent waiting (on providers, backoff, a slow client), not working:
    its latency less this is the gateway's overhead. The one part of an Exchange that changes."""
    __slots__ = ("seconds",)

    def __init__(self):
        self.seconds = 0.0

    def add(self, since: float) -> None:
        self.seconds += time.perf_counter() - since

    def overhead_ms(self, started: float) -> float:
        """The gateway's own milliseconds since `started` (a perf_counter reading)."""
        return max(0.0, (time.perf_counter() - started - self.seconds) * 1000)


def overhead_header(ex: "Exchange") -> dict:
    """x-gateway-overhead-ms as of now."""
    return {"x-gateway-overhead-ms": f"{ex.waited.overhead_ms(ex.req.started):.2f}"}


@dataclass(frozen=True)
class Exchange:
    """An admitted request on its way upstream: the stages before, how much to log, and the
    redactor of what is stored (None: redaction is off)."""
    req: ApiRequest
    plan: Plan
    admission: object           # quota.Admission
    capture: int = 0            # characters of prompt and completion to log; 0: storage is off
    redactor: redaction.Redactor | None = None
    cancel: Cancel = field(default_factory=Cancel)      # the client left: stop waiting upstream
    waited: Waited = field(default_factory=Waited)

    @property
    def body(self) -> dict:
        """What goes upstream: the request's body, or the one admission capped."""
        return self.admission.body if self.admission.body is not None else self.req.body

    def record(self, app: Flask, status: int, **fields) -> None:
        entry = usage.entry_for(self.req, self.admission.key, status, variant=self.plan.variant,
                                waited_ms=self.waited.seconds * 1000, **fields)
        usage.record(app, self.req, self.admission, entry, self.capture, self.redactor)


def gateway_headers(plan: Plan, answer: Answer | None = None, attempts: int = 0) -> dict:
    """x-gateway-* response headers: the A/B arm, who served, after how many attempts."""
    out = {"x-gateway-variant": plan.variant} if plan.variant else {}
    attempts = len(answer.attempts) if answer is not None else attempts
    if attempts:
        out["x-gateway-attempts"] = str(attempts)
    if answer is not None:
        out["x-gateway-deployment"] = _header_safe(answer.route.label)
        out["x-gateway-deployment-id"] = str(answer.route.deployment_id)
    return out


def _header_safe(value: str) -> str:
    return value.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")[:200]


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


def backoff(app: Flask, tries: int, retry_after: float | None) -> float:
    """Seconds to wait before retrying a deployment already tried `tries` times:
    exponential with full jitter, or the upstream's retry-after when it gave one."""
    if retry_after is not None:
        return max(0.0, retry_after)
    base, cap = float(app.config["RETRY_BASE_SECONDS"]), float(app.config["RETRY_MAX_SECONDS"])
    return random.uniform(0, min(cap, base * 2 ** max(tries - 1, 0)))


def start(app: Flask, ex: Exchange) -> Answer:
    """Try the planned deployments in order until one answers; retry with backoff and fall
    back on errors another attempt may not have (connection, 429, 5xx, timeout, a stream that
    breaks before its first chunk), within MAX_ATTEMPTS and the request's deadline."""
    req, plan = ex.req, ex.plan
    routes = _servable(plan.routes, req.native)
    h = health(app)
    max_attempts = int(app.config["MAX_ATTEMPTS"])
    deadline = req.started + float(app.config["ROUTING_DEADLINE_SECONDS"])
    wait_cap = float(app.config["RETRY_AFTER_MAX_SECONDS"])
    attempts: list[dict] = []
    tries: dict[int, int] = {}
    retry_after: dict[int, float | None] = {}
    done: set[int] = set()      # not to be tried again in this request
    last: UpstreamError | None = None
    last_route: Route | None = None
    while len(attempts) < max_attempts:
        fresh = [r for r in routes if r.deployment_id not in done and not tries.get(r.deployment_id)]
        again = [r for r in routes if r.deployment_id not in done and tries.get(r.deployment_id)]
        route = (fresh or again or [None])[0]
        if route is None:
            break
        rid = route.deployment_id
        if not fresh:           # every deployment was tried: back off, then retry this one
            wait = backoff(app, tries[rid], retry_after.get(rid))
            if wait > wait_cap or time.perf_counter() + wait >= deadline:
                done.add(rid)
                continue
            slept = time.perf_counter()
            try:
                with ex.cancel.armed():
                    time.sleep(wait)
            except ClientGone as e:
                e.attempts, e.route = attempts, last_route
                raise
            finally:
                ex.waited.add(slept)
        if time.perf_counter() >= deadline:
            break
        if not h.begin(route, plan.need.tokens):
            done.add(rid)       # its probe is taken or its cap is full
            continue
        t0 = time.perf_counter()
        try:
            try:
                answer = attempt(app, route, ex.body, req.operation, req.stream, cancel=ex.cancel,
                                 native=req.native)
            finally:
                ex.waited.add(t0)
        except ClientGone as e:     # the provider's connection is closed; the deployment did no wrong
            h.release(route)
            attempts.append(_attempt(route, t0, e.status, e.type, None))
            e.attempts, e.route = attempts, route
            raise
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
        attempts.append(_attempt(route, t0, answer.response.status, None, None))
        answer.attempts = attempts
        if plan.shadow is not None and plan.shadow.deployment_id != rid:
            shadow.mirror(app, req, ex.admission.key, plan.shadow)
        return answer
    if last is None:
        last = UpstreamError("No deployment could take the request within its deadline and limits.",
                             status=503, type="service_unavailable", code="no_healthy_deployment",
                             retryable=True)
    last.attempts = attempts
    last.route = last_route     # the failure's record names the deployment tried last
    last.headers.update(gateway_headers(plan, attempts=len(attempts)))
    last.headers.update(overhead_header(ex))
    raise last


def _servable(routes: tuple, native: Native | None) -> tuple:
    """The routes that may serve: all of them, unless the chat translation lost content only
    deployments taking the client's dialect as-is can carry (then those, or InvalidRequest)."""
    if native is None or not native.only:
        return routes
    kept = tuple(r for r in routes if speaks(r, native.dialect))
    if not kept:
        raise InvalidRequest(f"{native.only}: this content is passed through to Anthropic deployments "
                             "only, and none serves this model", param=native.only)
    return kept


def _attempt(route: Route, t0: float, status: int, error: str | None, code: str | None) -> dict:
    out = {"deployment_id": route.deployment_id, "provider": route.provider,
           "model": route.target.model, "region": route.region, "status": status, "error": error,
           "ms": round((time.perf_counter() - t0) * 1000, 1)}
    if code and code != error:
        out["code"] = code
    return out


def served_fields(answer: Answer, used: Usage) -> dict:
    """Usage record fields of a served request: who served it, its tokens and cost."""
    return {"provider_id": answer.route.provider_id, "provider": answer.route.provider,
            "upstream_model": answer.route.target.model, "attempts": answer.attempts,
            "prompt_tokens": used.prompt_tokens, "completion_tokens": used.completion_tokens,
            "total_tokens": used.total_tokens, "cached_tokens": used.cached_tokens,
            "estimated": used.estimated, "cost_usd": pricing.cost_of(answer.price, used)}


def start_recorded(app: Flask, ex: Exchange) -> Answer:
    """start(), recording the request when no deployment answered."""
    try:
        return start(app, ex)
    except (UpstreamError, ClientGone) as e:
        fields = {"provider_id": e.route.provider_id, "provider": e.route.provider,
                  "upstream_model": e.route.target.model} if e.route else {}
        ex.record(app, e.status, error_type=e.type, error_message=e.message[:500],
                  attempts=e.attempts, **fields)
        raise
    except GatewayError as e:
        ex.record(app, e.status, error_type=e.type, error_message=e.message[:500])
        raise
    except Exception:
        e = GatewayError("internal error", status=500, type="server_error")
        ex.record(app, e.status, error_type=e.type, error_message=e.message)
        raise


def exchange(app: Flask, req: ApiRequest, plan: Plan, admission, cancel: Cancel | None = None) -> Exchange:
    """Bundle the stages for the relay, with the prompt-log and redaction settings read once.
    In upstream mode the request carries its redacted body from here on: every attempt,
    fallback and shadow sends it, and the prompt log keeps it."""
    key = admission.key
    mode, redactor = prompt_log.redactor_for(app, key.redact if key is not None else None, plan.redact)
    if mode == redaction.UPSTREAM:
        req = replace(req, body=redactor.body(req.body))
        if admission.body is not None:      # the capped body goes upstream: redact it too
            admission = replace(admission, body=redactor.body(admission.body))
    if req.native is not None:
        req = replace(req, native=_native(req.native, admission.body, redactor if mode == redaction.UPSTREAM else None))
    return Exchange(req, plan, admission, prompt_log.limit(app), redactor, cancel or Cancel())


def _native(native: Native, capped: dict | None, redactor: redaction.Redactor | None) -> Native:
    """The client's own body as it may go upstream: with the answer cap admission put in the
    chat body, and redacted in upstream mode."""
    body = native.body
    cap = (capped or {}).get("max_tokens")
    if isinstance(cap, int):
        body = anthropic_native.capped(body, cap)
    if redactor is not None:
        body = redactor.messages_body(body)
    return replace(native, body=body)


def complete(req: ApiRequest, plan: Plan, admission, cancel: Cancel | None = None) -> tuple[bytes, dict]:
    """A whole (non-streaming) answer in OpenAI's shape (passed through: NativeBytes, in the
    client's dialect) and its x-gateway-* headers; records usage either way. `cancel` stops the upstream call when the client leaves (recorded 499)."""
    app = current_app._get_current_object()
    ex = exchange(app, req, plan, admission, cancel)
    look = cache.lookup(app, ex)
    if look.hit is not None:
        body = cache.answer(app, ex, look)
        return body, {**gateway_headers(plan), **look.headers, **overhead_header(ex)}
    answer = start_recorded(app, ex)
    reply = answer.reply
    used = reply.usage or Usage(prompt_tokens=plan.need.prompt_tokens, estimated=True)
    ms = (time.perf_counter() - answer.t0) * 1000
    health(app).success(answer.route, ms, None, used.completion_tokens, used.total_tokens)
    fields = served_fields(answer, used)
    if ex.capture and req.mode == "chat":
        fields["response_text"] = prompt_log.reply_text(reply.chat or reply.body, ex.capture, ex.redactor)
    ex.record(app, 200, **fields)
    if not answer.native:       # a hit is replayed as chat: a passed-through answer is not kept
        cache.keep(app, look, fields, reply.body)
    body = NativeBytes(reply.body) if answer.native else reply.body
    return body, {**gateway_headers(plan, answer), **look.headers, **overhead_header(ex)}
