"""The /v1 API blueprint. Each API family lives in a module of its own (views.py: chat,
embeddings, models; media.py: images, audio, moderations, rerank); they share the request
path in views.py."""
from __future__ import annotations

import re
import time

from flask import Blueprint, Response, g, request

from gateway.proxy import compression, cors
from gateway.services.accounting import usage

bp = Blueprint("proxy", __name__, url_prefix="/v1")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


@bp.before_request
def assign_request_id():
    g.started = time.perf_counter()
    given = request.headers.get("x-request-id", "")
    g.request_id = given if _REQUEST_ID.match(given) else usage.new_request_id()


@bp.before_app_request
def answer_preflight():
    """Preflights reach no view: answered before routing (any /v1 path) and before auth."""
    return cors.preflight()


@bp.after_app_request
def finish_response(response: Response) -> Response:
    """Every /v1 answer: its request id and the gateway's overhead, then CORS, then gzip."""
    if not request.path.startswith("/v1/"):
        return response
    response.headers["x-request-id"] = g.get("request_id") or usage.new_request_id()
    if "x-gateway-overhead-ms" not in response.headers:
        # Answered without an upstream (errors, /models, replays): all of it was ours.
        started = g.get("started")
        ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        response.headers["x-gateway-overhead-ms"] = f"{ms:.2f}"
    return compression.compress_response(cors.add_headers(response))


# The API modules attach their routes to `bp`, so they load once it exists; create_app
# imports this package before registering the blueprint.
from gateway.proxy import completions, media, messages, responses, views  # noqa: E402,F401
from gateway.proxy import idempotency  # noqa: E402,F401  (its hooks run after assign_request_id)
