"""The OpenAI-compatible /v1 API."""
from __future__ import annotations

import re
import time

import orjson
from flask import Blueprint, Response, current_app, g, request

from gateway.errors import GatewayError, InvalidRequest, PayloadTooLarge
from gateway.services.accounting import keys, quota
from gateway.services.routing import catalog, relay
from gateway.services.accounting.usage import new_request_id

bp = Blueprint("proxy", __name__, url_prefix="/v1")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
GATEWAY_FIELDS = ("metadata", "models")      # ours; never forwarded upstream


@bp.before_request
def assign_request_id():
    given = request.headers.get("x-request-id", "")
    g.request_id = given if _REQUEST_ID.match(given) else new_request_id()


@bp.after_app_request
def add_request_id(response: Response) -> Response:
    if request.path.startswith("/v1/"):
        response.headers["x-request-id"] = g.get("request_id") or new_request_id()
        call = g.get("call")
        if call is not None:
            response.headers.update(call.gateway_headers)
    return response


def _secret() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key") or None


def _json_body() -> dict:
    limit = current_app.config["MAX_REQUEST_BYTES"]
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"The request body is over the {limit} byte limit.")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is over the {limit} byte limit.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _tags(body: dict) -> dict:
    tags: dict[str, str] = {}
    meta = body.get("metadata")
    if isinstance(meta, dict):
        tags.update({str(k)[:64]: str(v)[:200] for k, v in meta.items()})
    header = request.headers.get("x-gateway-tags", "")
    for part in header.split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            tags[name.strip()[:64]] = value.strip()[:200]
    return dict(list(tags.items())[:32])


def _validate_model(body: dict) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("You must provide a model parameter.", param="model")


def _validate_chat(body: dict) -> None:
    _validate_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a 'role'.", param=f"messages[{i}]")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        raise InvalidRequest("'n' must be an integer from 1 to 128.", param="n")


def _validate_embeddings(body: dict) -> None:
    _validate_model(body)
    inp = body.get("input")
    ok = isinstance(inp, str) and inp != "" or (
        isinstance(inp, list) and inp and all(isinstance(x, (str, int, list)) for x in inp))
    if not ok:
        raise InvalidRequest("'input' must be a non-empty string or array.", param="input")


def _fallbacks(body: dict) -> list[str]:
    """The client's own fallback models: `models: [...]` in the body or `x-gateway-fallbacks`."""
    given = body.get("models")
    if given is None:
        given = [m.strip() for m in request.headers.get("x-gateway-fallbacks", "").split(",") if m.strip()]
    if not isinstance(given, list) or len(given) > 10 or not all(isinstance(m, str) and m for m in given):
        raise InvalidRequest("'models' must be an array of up to 10 model names.", param="models")
    return given


def _call(endpoint: str, validate) -> relay.Call:
    """Authenticate and parse; a failure here is recorded too, then raised."""
    call = g.call = relay.Call(request_id=g.request_id, endpoint=endpoint, body={}, key=None)
    try:
        call.key = keys.authenticate(_secret())
        body = _json_body()
        call.body, call.tags = body, _tags(body)
        validate(body)
        call.fallbacks = _fallbacks(body)
        for name in GATEWAY_FIELDS:
            body.pop(name, None)
        quota.admit(call)
    except GatewayError as e:
        relay.record_failure(current_app._get_current_object(), call, e)
        raise
    return call


def _json(data: bytes, status: int = 200, headers: dict | None = None) -> Response:
    return Response(data, status=status, mimetype="application/json", headers=headers)


@bp.post("/chat/completions")
def chat_completions():
    call = _call("chat", _validate_chat)
    if call.stream:
        body = relay.stream(call)
        return Response(body, mimetype="text/event-stream", headers={
            "Cache-Control": "no-cache", "X-Accel-Buffering": "no", **call.rate_headers})
    return _json(relay.complete(call, "chat"), headers=call.rate_headers)


@bp.post("/embeddings")
def embeddings():
    call = _call("embeddings", _validate_embeddings)
    return _json(relay.complete(call, "embedding"), headers=call.rate_headers)


def _model_obj(name: str) -> dict:
    routes = catalog.routes_for(name)
    owner = routes[0].provider if routes else "gateway"
    return {"id": name, "object": "model", "created": int(time.time()) // 86400 * 86400, "owned_by": owner}


@bp.get("/models")
def list_models():
    key = keys.authenticate(_secret())
    data = [_model_obj(m) for m in catalog.model_names() if key.allows(m)]
    return _json(orjson.dumps({"object": "list", "data": data}))


@bp.get("/models/<path:model>")
def get_model(model: str):
    key = keys.authenticate(_secret())
    if not catalog.routes_for(model) or not key.allows(model):
        raise GatewayError(f"The model '{model}' does not exist or you do not have access to it.",
                           status=404, code="model_not_found", param="model")
    return _json(orjson.dumps(_model_obj(model)))
