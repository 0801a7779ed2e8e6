"""Serving media and utility requests (images, audio, moderations, rerank): the same attempts,
failover and one usage record as chat, billed per unit (accounting/units.py) instead of per
token. Speech is relayed as the upstream sends it, recorded when the body ends however it ends."""
from __future__ import annotations

import time
from typing import Iterator

from flask import Flask, current_app

from gateway.errors import ClientGone, GatewayError, UpstreamError
from gateway.providers.base import Usage
from gateway.services.accounting import pricing, units
from gateway.services.api_request import ApiRequest
from gateway.services.routing.cancel import Cancel
from gateway.services.routing.health import health
from gateway.services.routing.plan import Plan
from gateway.services.routing.relay import Exchange, exchange, gateway_headers, served_fields, start_recorded
from gateway.services.routing.upstream import Answer

OCTET = "application/octet-stream"


def billed_fields(ex: Exchange, answer: Answer, data: bytes, price: tuple | None) -> dict:
    """Usage record fields of a served media request: who served it, its units and their cost
    at `price` (Route.unit_price_of, read while in app context)."""
    used = units.measured(ex.req.operation, ex.body, data) or ex.plan.need.units
    cost = pricing.unit_cost(price, used.count, used.unit)
    return dict(served_fields(answer, Usage()), units=used.count, unit=used.unit,
                estimated=used.estimated, cost_usd=cost)


def _content_type(answer: Answer, default: str) -> str:
    return answer.response.headers.get("content-type") or default


def complete(req: ApiRequest, plan: Plan, admission, cancel: Cancel | None = None) -> tuple[bytes, str, dict]:
    """A whole answer as the upstream sent it, its Content-Type and x-gateway-* headers."""
    app = current_app._get_current_object()
    ex = exchange(app, req, plan, admission, cancel)
    answer = start_recorded(app, ex)
    data = answer.reply.body
    health(app).success(answer.route, (time.perf_counter() - answer.t0) * 1000, None, 0, 0)
    ex.record(app, 200, **billed_fields(ex, answer, data, answer.route.unit_price_of()))
    return data, _content_type(answer, "application/json"), gateway_headers(plan, answer)


def open_bytes(req: ApiRequest, plan: Plan, admission) -> tuple[Iterator[bytes], str, dict]:
    """Start a binary answer (speech): the bytes to send as they arrive, their Content-Type and
    x-gateway-* headers. Failures before the first chunk fail over or raise."""
    app = current_app._get_current_object()
    ex = exchange(app, req, plan, admission)
    answer = start_recorded(app, ex)
    body = _relay(app, ex, answer, answer.route.unit_price_of())
    return body, _content_type(answer, OCTET), gateway_headers(plan, answer)


def _relay(app: Flask, ex: Exchange, answer: Answer, price: tuple | None) -> Iterator[bytes]:
    status, error, done = 499, None, False
    try:
        for chunk in answer.pending:
            if chunk:
                yield chunk
        for chunk in answer.events:
            yield chunk
        status, done = 200, True
    except UpstreamError as e:
        # Mid-body there is no way to send an error: the raise cuts the connection, so the
        # client sees a broken transfer rather than audio that merely ends early.
        status, error = e.status, e
        raise
    finally:
        _finish(app, ex, answer, price, status, error or (None if done else ClientGone()), done)


def _finish(app: Flask, ex: Exchange, answer: Answer, price: tuple | None, status: int,
            error: GatewayError | None, done: bool) -> None:
    """Close the upstream and leave the one record. The provider bills the whole input once it
    started answering, so a cut or abandoned answer is charged in full."""
    answer.response.close(finished=done)
    ms = (time.perf_counter() - answer.t0) * 1000
    h = health(app)
    if status == 200:
        h.success(answer.route, ms, (answer.first_at - answer.t0) * 1000, 0, 0)
    elif isinstance(error, UpstreamError):
        h.failure(answer.route, ms, status=error.upstream_status)
    else:
        h.release(answer.route)
    fields = dict(billed_fields(ex, answer, b"", price),
                  ttft_ms=(answer.first_at - ex.req.started) * 1000)
    if error is not None:
        fields.update(error_type=error.type, error_message=error.message[:500])
    ex.record(app, status, **fields)
