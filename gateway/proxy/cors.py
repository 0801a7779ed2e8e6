"""CORS for /v1, so browser apps can call the API: off unless GATEWAY_CORS_ORIGINS lists
origins (or `*`). Console routes never get these headers: the console is same-origin only."""
from __future__ import annotations

from flask import Flask, Response, current_app, request

METHODS = "GET, POST, DELETE, OPTIONS"
MAX_AGE = "7200"        # Chrome caps preflight caching at two hours
# Request headers the SDKs send: fixed names, and families matched by prefix (a preflight
# header list may not hold wildcards, so we answer with the names the browser asked for).
ALLOW = ("authorization", "content-type", "content-encoding", "accept", "accept-encoding",
         "x-api-key", "idempotency-key", "x-request-id", "anthropic-version", "anthropic-beta",
         "anthropic-dangerous-direct-browser-access")
ALLOW_PREFIXES = ("openai-", "x-stainless-", "x-gateway-", "anthropic-")
EXPOSE = ("x-request-id", "retry-after", "retry-after-ms", "x-gateway-variant", "x-gateway-attempts",
          "x-gateway-deployment", "x-gateway-deployment-id",
          "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
          "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")
EXPOSE_PREFIXES = ("x-gateway-", "x-ratelimit-")


def origins(app: Flask) -> set[str]:
    """The allowed origins from CORS_ORIGINS; empty: CORS is off."""
    value = app.config.get("CORS_ORIGINS") or ""
    if isinstance(value, (list, tuple, set)):
        value = ",".join(value)
    return {o.strip().rstrip("/") for o in str(value).split(",") if o.strip()}


def allowed_origin() -> str | None:
    """The request's Origin when it is an /v1 call from an allowed origin, else None."""
    origin = request.headers.get("Origin")
    if not origin or not request.path.startswith("/v1/"):
        return None
    allowed = origins(current_app)
    return origin if "*" in allowed or origin.rstrip("/") in allowed else None


def preflight() -> Response | None:
    """204 for a browser's preflight from an allowed origin, before routing or auth run."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    origin = allowed_origin()
    if origin is None:
        return None
    asked = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")]
    extra = [h for h in asked if h and h not in ALLOW and h.startswith(ALLOW_PREFIXES)]
    response = Response(status=204)
    del response.headers["Content-Type"]        # no body, so no type
    response.headers.update({"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": METHODS,
                             "Access-Control-Allow-Headers": ", ".join(ALLOW + tuple(extra)),
                             "Access-Control-Max-Age": MAX_AGE})
    return response


def add_headers(response: Response) -> Response:
    """Allow-Origin and Expose-Headers on every /v1 answer (errors and streams too)."""
    if not request.path.startswith("/v1/") or not origins(current_app):
        return response
    response.vary.add("Origin")
    origin = allowed_origin()
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        if "Access-Control-Allow-Methods" not in response.headers:      # not on a preflight
            own = [k.lower() for k in response.headers.keys() if k.lower().startswith(EXPOSE_PREFIXES)]
            response.headers["Access-Control-Expose-Headers"] = ", ".join(dict.fromkeys(EXPOSE + tuple(own)))
    return response
