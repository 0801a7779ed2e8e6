"""The Anthropic-compatible API: POST /v1/messages and /v1/messages/count_tokens. A Messages
request is translated to chat (proxy/dialects/messages.py) and takes the chat request path, so
prices, quotas, fallbacks, aliases and policies apply unchanged; the answer is translated back.
An Anthropic deployment gets the client's own body instead (dialects/messages_native.py), and
its answer (NativeBytes) goes back as it came."""
from __future__ import annotations

import time

import orjson
from flask import Response, current_app, g, request

from gateway.auth.security import client_ip
from gateway.errors import ModelNotFound
from gateway.proxy import bp, requests
from gateway.proxy.dialects import messages as dialect
from gateway.proxy.dialects.messages_native import chat_view, native
from gateway.proxy.dialects.messages_answer import from_chat, to_events
from gateway.proxy.views import SSE_HEADERS, _admitted, _json, relayed
from gateway.services.api_request import NativeBytes
from gateway.services.accounting import keys
from gateway.services.routing import catalog
from gateway.services.routing.stream import open_stream


@bp.post("/messages")
def messages():
    req, plan, admission = _admitted("messages", lambda body, key: _to_chat(body),
                                     native=lambda body: native(body, request.headers))
    if req.stream:
        frames, headers = open_stream(req, plan, admission)
        events = to_events(frames, req.model, plan.need.prompt_tokens)
        return Response(events, mimetype="text/event-stream",
                        headers={**SSE_HEADERS, **admission.rate_headers, **headers})
    data, headers = relayed(req, plan, admission)
    if not isinstance(data, NativeBytes):
        data = orjson.dumps(from_chat(orjson.loads(data), req.model))
    return _json(data, headers=headers)


def _to_chat(body: dict) -> dict:
    """The chat body, leaving out what only a deployment taking Messages as-is can carry."""
    return dialect.to_chat(chat_view(body)[0])


@bp.post("/messages/count_tokens")
def count_tokens():
    """The gateway's estimate of a Messages request's input tokens; nothing goes upstream."""
    key = keys.authenticate(requests.secret(request), client_ip())
    body = requests.read(request, g.request_id, "messages", time.perf_counter(),
                         current_app.config["MAX_REQUEST_BYTES"]).body
    n = dialect.count_tokens(chat_view(body)[0])
    model = body["model"]
    if not catalog.routes_for(model) or not key.allows(model):
        raise ModelNotFound(f"model: {model}", param="model")
    return _json(orjson.dumps({"input_tokens": n}))
