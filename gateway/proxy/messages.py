"""The Anthropic-compatible API: POST /v1/messages and /v1/messages/count_tokens. A Messages
request is translated to chat (proxy/dialects/messages.py) and takes the chat request path, so
prices, quotas, fallbacks, aliases and policies apply unchanged; the answer is translated back."""
from __future__ import annotations

import time

import orjson
from flask import Response, current_app, g, request

from gateway.auth.security import client_ip
from gateway.errors import ModelNotFound
from gateway.proxy import bp, disconnect, requests
from gateway.proxy.dialects import messages as dialect
from gateway.proxy.dialects.messages_answer import from_chat, to_events
from gateway.proxy.views import SSE_HEADERS, _admitted, _json
from gateway.services.accounting import keys
from gateway.services.routing import catalog, relay
from gateway.services.routing.stream import open_stream


@bp.post("/messages")
def messages():
    req, plan, admission = _admitted("messages", lambda body, key: dialect.to_chat(body))
    if req.stream:
        frames, headers = open_stream(req, plan, admission)
        events = to_events(frames, req.model, plan.need.prompt_tokens)
        return Response(events, mimetype="text/event-stream",
                        headers={**SSE_HEADERS, **admission.rate_headers, **headers})
    with disconnect.watch(request.environ) as cancel:
        data, headers = relay.complete(req, plan, admission, cancel)
    answer = from_chat(orjson.loads(data), req.model)
    return _json(orjson.dumps(answer), headers={**admission.rate_headers, **headers})


@bp.post("/messages/count_tokens")
def count_tokens():
    """The gateway's estimate of a Messages request's input tokens; nothing goes upstream."""
    key = keys.authenticate(requests.secret(request), client_ip())
    body = requests.read(request, g.request_id, "messages", time.perf_counter(),
                         current_app.config["MAX_REQUEST_BYTES"]).body
    n = dialect.count_tokens(body)
    model = body["model"]
    if not catalog.routes_for(model) or not key.allows(model):
        raise ModelNotFound(f"model: {model}", param="model")
    return _json(orjson.dumps({"input_tokens": n}))
