"""The OpenAI-compatible /v1 API: parse → authenticate → plan → admit → relay, top to bottom."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import orjson
from flask import Response, current_app, g, request

from gateway.auth.security import client_ip
from gateway.errors import GatewayError, ModelNotFound
from gateway.proxy import bp, disconnect, requests
from gateway.services.accounting import keys, quota, usage
from gateway.services.api_request import ApiRequest, Native
from gateway.services.routing import catalog, relay
from gateway.services.routing.plan import plan as plan_for
from gateway.services.routing.stream import open_stream

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _admitted(endpoint: str, translate: Callable[[dict, object], dict] | None = None, read=None,
              native: Callable[[dict], Native] | None = None):
    """The request parsed, authenticated, planned and admitted; a failure on the way is
    recorded, then raised. `translate(body, key)`, when given, turns another API's body (a
    dialect) into the chat body that is validated and sent; `native` keeps the client's own
    body for deployments that speak its dialect. `read`: how the body is read (requests.read's
    signature), for endpoints whose body is not plain JSON."""
    app = current_app._get_current_object()
    req = ApiRequest(g.request_id, endpoint)       # what a failure's record can say so far
    key = None
    try:
        key = keys.authenticate(requests.secret(request), client_ip())
        req = (read or requests.read)(request, g.request_id, endpoint, req.started,
                                      app.config["MAX_REQUEST_BYTES"])
        if translate is not None:
            req = replace(req, body=translate(req.body, key), native=native(req.body) if native else None)
        req = requests.validated(request, req)
        plan = plan_for(req, key)
        return req, plan, quota.admit(req, key, plan)
    except GatewayError as e:
        usage.record_failure(app, req, None, e, key=key)
        raise


def _json(data: bytes, status: int = 200, headers: dict | None = None) -> Response:
    return Response(data, status=status, mimetype="application/json", headers=headers)


@bp.post("/chat/completions")
def chat_completions():
    req, plan, admission = _admitted("chat")
    if req.stream:
        body, headers = open_stream(req, plan, admission)
        return Response(body, mimetype="text/event-stream",
                        headers={**SSE_HEADERS, **admission.rate_headers, **headers})
    return _complete(req, plan, admission)


@bp.post("/embeddings")
def embeddings():
    return _complete(*_admitted("embeddings"))


def _complete(req, plan, admission) -> Response:
    data, headers = relayed(req, plan, admission)
    return _json(data, headers=headers)


def relayed(req, plan, admission) -> tuple[bytes, dict]:
    """A whole answer and its response headers; a client that leaves meanwhile stops the
    upstream call (recorded 499)."""
    with disconnect.watch(request.environ) as cancel:
        data, headers = relay.complete(req, plan, admission, cancel)
    return data, {**admission.rate_headers, **headers}


def _model_obj(name: str) -> dict:
    routes = catalog.routes_for(name)
    owner = routes[0].provider if routes else "gateway"
    return {"id": name, "object": "model", "created": int(time.time()) // 86400 * 86400, "owned_by": owner}


@bp.get("/models")
def list_models():
    key = keys.authenticate(requests.secret(request), client_ip())
    data = [_model_obj(m) for m in catalog.model_names() if key.allows(m)]
    return _json(orjson.dumps({"object": "list", "data": data}))


@bp.get("/models/<path:model>")
def get_model(model: str):
    key = keys.authenticate(requests.secret(request), client_ip())
    if not catalog.routes_for(model) or not key.allows(model):
        raise ModelNotFound(f"The model '{model}' does not exist or you do not have access to it.",
                            param="model")
    return _json(orjson.dumps(_model_obj(model)))
