"""Idempotency-Key on every POST /v1 route, with Stripe's semantics, as blueprint hooks: the
same key (scoped to the API key) and the same body replay the stored response (status, the
headers that matter, body) without reaching the route, so it is served and billed once; the
same key with another body is a 409 `idempotency_key_reused`, and one whose first request is
still running (a stream included) a 409 `idempotency_key_in_flight`.

What is stored, for IDEMPOTENCY_TTL_SECONDS: 2xx answers, and 4xx ones that retrying cannot
change. Not stored: 5xx and 499 (retrying them is the point), 401/403 (a fixed key may be
retried), 408, 409 and 429 (they depend on the moment), and a stream that ended in an error
event. Their key is released, so the retry runs. A store that cannot answer (Redis down)
means no idempotency for the moment, never an error. A replay leaves no usage record: the
first request's record is the one.
"""
from __future__ import annotations

import hashlib

import orjson
from flask import Response, current_app, g, request

from gateway.errors import Conflict, GatewayError, InvalidRequest
from gateway.proxy import bp, requests
from gateway.services.response_store import store

HEADER = "Idempotency-Key"
NOT_KEPT = {401, 403, 408, 409, 429, 499}
KEPT_HEADERS = ("content-type", "cache-control", "x-accel-buffering")


def _kept_headers(response: Response) -> dict:
    return {k: v for k, v in response.headers.items()
            if k.lower() in KEPT_HEADERS or (k.lower().startswith(("x-gateway-", "x-ratelimit-"))
                                             and k.lower() != "x-gateway-overhead-ms")}


def _sha(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


@bp.before_request
def idempotency_check():
    """Replay, refuse, or hold the key for this request (None: go on to the route)."""
    given = request.headers.get(HEADER)
    if request.method != "POST" or given is None:
        return None
    given = given.strip()
    if not given or len(given) > 255:
        raise InvalidRequest("The Idempotency-Key header must be 1 to 255 characters.", param=HEADER)
    secret = requests.secret(request)
    if not secret:
        return None         # the route answers 401; there is no one to scope the key to
    app = current_app._get_current_object()
    try:
        limit = int(app.config["MAX_REQUEST_BYTES"])
        if request.mimetype == "multipart/form-data":     # an audio upload: read as its route reads it
            limit = requests.upload_limit(limit)
        raw = requests.body_bytes(request, limit)
    except GatewayError:
        return None         # the route refuses it and records that
    scope = "idem:" + _sha(secret.encode())[:24]
    name = _sha(b"idem", scope.encode(), given.encode())
    fingerprint = _sha(request.path.encode(), raw)
    s = store(app)
    pending = orjson.dumps({"state": "pending", "fp": fingerprint})
    for _ in range(2):      # the entry may expire between add and get
        got = s.add(name, scope, pending, float(app.config["IDEMPOTENCY_LOCK_SECONDS"]))
        if got is None:
            return None
        if got:
            g.idempotency = (name, scope, fingerprint)
            return None
        old = s.get(name)
        if old is not None:
            return _answer(orjson.loads(old), fingerprint)
    return None


def _answer(entry: dict, fingerprint: str) -> Response:
    if entry.get("fp") != fingerprint:
        raise Conflict("This Idempotency-Key was used with another request; use a new key for a new "
                       "request.", param=HEADER, code="idempotency_key_reused")
    if entry.get("state") != "done":
        raise Conflict("A request with this Idempotency-Key is still in progress; retry after it "
                       "finished.", param=HEADER, code="idempotency_key_in_flight")
    headers = {**entry["headers"], "idempotent-replayed": "true"}
    return Response(entry["body"].encode("latin-1"), status=entry["status"], headers=headers)


@bp.after_request
def idempotency_keep(response: Response) -> Response:
    """Store the response of a request that held a key (a stream once it has ended well)."""
    held = g.pop("idempotency", None)
    if held is None:
        return response
    app = current_app._get_current_object()
    status = response.status_code
    if status >= 500 or status in NOT_KEPT:
        store(app).delete(held[0])
        return response
    entry = {"state": "done", "fp": held[2], "status": status, "headers": _kept_headers(response)}
    if response.is_streamed:
        response.response = _kept_stream(app, held, entry, response.response)
    else:
        _put(app, held, entry, response.get_data())
    return response


@bp.teardown_request
def idempotency_release(_exc=None) -> None:
    held = g.pop("idempotency", None)       # the response never got to after_request
    if held is not None:
        store(current_app._get_current_object()).delete(held[0])


def _put(app, held: tuple, entry: dict, body: bytes) -> None:
    entry["body"] = body.decode("latin-1")      # any bytes, losslessly, in JSON
    store(app).put(held[0], held[1], orjson.dumps(entry), float(app.config["IDEMPOTENCY_TTL_SECONDS"]))


def _kept_stream(app, held: tuple, entry: dict, chunks):
    parts: list[bytes] = []
    ended = False
    try:
        for chunk in chunks:
            chunk = chunk.encode() if isinstance(chunk, str) else chunk
            parts.append(chunk)
            yield chunk
        ended = True
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
        body = b"".join(parts)
        last = body.rstrip().rsplit(b"\n\n", 1)[-1]
        if ended and b'"error"' not in last:
            _put(app, held, entry, body)
        else:       # cut or failed: the retry runs
            store(app).delete(held[0])
