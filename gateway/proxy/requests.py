"""Reading a /v1 request: the API key, the JSON body within its size cap, tags and fallbacks,
and the checks a body must pass before anything else looks at it."""
from __future__ import annotations

from dataclasses import replace

import orjson
from flask import Request, current_app
from werkzeug.exceptions import RequestEntityTooLarge

from gateway.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from gateway.proxy import compression, media_params, params
from gateway.services.api_request import ApiRequest

GATEWAY_FIELDS = ("metadata", "models")      # ours; never forwarded upstream


def secret(request: Request) -> str | None:
    """The API key, from `Authorization: Bearer` or `x-api-key`."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key") or None


def read(request: Request, request_id: str, endpoint: str, started: float, limit: int) -> ApiRequest:
    """The body as JSON and the request's tags; nothing validated yet."""
    kind = request.mimetype        # lower case, parameters such as charset dropped
    if kind and kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        raise UnsupportedMediaType(f"The request body must be JSON (Content-Type: application/json), "
                                   f"not {kind[:100]}.")
    encoding = compression.request_encoding(request)
    raw = body_bytes(request, limit)
    if encoding:
        raw = compression.decompress(raw, encoding, limit)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return ApiRequest(request_id, endpoint, body, _tags(request, body), started=started)


def upload_limit(limit: int) -> int:
    """The body cap of an audio upload: AUDIO_MAX_REQUEST_BYTES, or the JSON cap if larger."""
    return max(limit, int(current_app.config["AUDIO_MAX_REQUEST_BYTES"]))


def body_bytes(request: Request, limit: int) -> bytes:
    """The raw body, read once (Idempotency-Key fingerprints it before the route parses it)."""
    env = request.environ
    if "gateway.body" not in env:
        try:
            env["gateway.body"] = _body(request, limit)
        except PayloadTooLarge as e:      # raised again to whoever asks next (the route records it)
            env["gateway.body"] = e
    if isinstance(env["gateway.body"], PayloadTooLarge):
        raise env["gateway.body"]
    return env["gateway.body"]


def _body(request: Request, limit: int) -> bytes:
    """At most `limit` bytes of body, else 413. A chunked body has no Content-Length, and one
    read of it may return a single chunk, so read until the end or past the limit."""
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"The request body is over the {limit} byte limit.")
    parts, size = [], 0
    try:
        while size <= limit:
            part = request.stream.read(min(65536, limit + 1 - size))
            if not part:
                break
            parts.append(part)
            size += len(part)
    except RequestEntityTooLarge:       # werkzeug's own cap (MAX_CONTENT_LENGTH) on a chunked body
        size = limit + 1
    if size > limit:
        raise PayloadTooLarge(f"The request body is over the {limit} byte limit.")
    return b"".join(parts)


def validated(request: Request, req: ApiRequest) -> ApiRequest:
    """`req` checked for its endpoint, with the client's fallbacks and the gateway's own
    fields taken out of the body that goes upstream."""
    params.refuse_steering(req.body)
    VALIDATORS[req.endpoint](req.body)
    fallbacks = _fallbacks(request, req.body)
    body = {k: v for k, v in req.body.items() if k not in GATEWAY_FIELDS}
    mode, ttl = cache_asked(request)
    return replace(req, body=body, fallbacks=tuple(fallbacks), cache=mode, cache_ttl=ttl)


CACHE_MODES = ("on", "off", "refresh")


def cache_asked(request: Request) -> tuple[str | None, int | None]:
    """The request's x-gateway-cache mode and x-gateway-cache-ttl seconds (None: not given)."""
    mode = request.headers.get("x-gateway-cache", "").strip().lower() or None
    if mode is not None and mode not in CACHE_MODES:
        raise InvalidRequest("x-gateway-cache must be on, off or refresh.", param="x-gateway-cache")
    ttl = request.headers.get("x-gateway-cache-ttl", "").strip() or None
    if ttl is not None:
        if not ttl.isdigit() or int(ttl) < 1:
            raise InvalidRequest("x-gateway-cache-ttl must be a whole number of seconds, at least 1.",
                                 param="x-gateway-cache-ttl")
        ttl = int(ttl)
    return mode, ttl


def _tags(request: Request, body: dict) -> dict:
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
    params.check_chat(body)


def _validate_embeddings(body: dict) -> None:
    _validate_model(body)
    inp = body.get("input")
    if not (isinstance(inp, str) and inp or isinstance(inp, list) and inp and len(inp) <= 2048 and (
            all(isinstance(x, str) and x for x in inp) or all(_token_ids(x) for x in inp) or _token_ids(inp))):
        raise InvalidRequest("'input' must be a non-empty string, an array of up to 2048 strings, or token "
                             "ids (an array of integers, or an array of such arrays).", param="input")
    params.check(params.EMBEDDINGS, body)


def _token_ids(x) -> bool:
    return isinstance(x, list) and bool(x) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                   for t in x)


# Dialects are validated as the chat body they were translated to (gateway/proxy/dialects/).
VALIDATORS = {"chat": _validate_chat, "embeddings": _validate_embeddings,
              "messages": _validate_chat, "responses": _validate_chat, "completions": _validate_chat,
              **media_params.VALIDATORS}


def _fallbacks(request: Request, body: dict) -> list[str]:
    """The client's own fallback models: `models: [...]` in the body or `x-gateway-fallbacks`."""
    given = body.get("models")
    if given is None:
        given = [m.strip() for m in request.headers.get("x-gateway-fallbacks", "").split(",") if m.strip()]
    if not isinstance(given, list) or len(given) > 10 or not all(isinstance(m, str) and m for m in given):
        raise InvalidRequest("'models' must be an array of up to 10 model names.", param="models")
    return given
