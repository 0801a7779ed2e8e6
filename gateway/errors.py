"""Domain errors and their OpenAI-shaped JSON form; app-level handlers for /v1."""
from __future__ import annotations

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound


class GatewayError(Exception):
    """An error the client should see, with the status and OpenAI error fields to send."""
    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None, type: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.code
        self.status = status or self.status
        self.type = type or self.type
        self.headers: dict = {}         # sent with the error response (retry-after, x-gateway-*)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


class InvalidRequest(GatewayError):
    pass


class AuthenticationFailed(GatewayError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class PermissionDenied(GatewayError):
    status, type, code = 403, "permission_error", "model_not_allowed"


class ModelNotFound(GatewayError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


class PayloadTooLarge(GatewayError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class UnsupportedMediaType(GatewayError):
    status, type, code = 415, "invalid_request_error", "unsupported_media_type"


class QuotaExceeded(GatewayError):
    status, type, code = 429, "insufficient_quota", "insufficient_quota"


class RateLimited(GatewayError):
    status, type, code = 429, "rate_limit_exceeded", "rate_limit_exceeded"


class Conflict(GatewayError):
    status = 409
    type = "idempotency_error"


class ServiceUnavailable(GatewayError):
    """The gateway cannot check the request's key or limits now (its database or Redis is down);
    retrying after `retry_after` seconds may succeed."""
    status, type, code = 503, "service_unavailable", "service_unavailable"

    def __init__(self, message: str, *, retry_after: float, **kw):
        super().__init__(message, **kw)
        self.headers["retry-after"] = str(max(1, int(retry_after + 0.999)))


class UpstreamError(GatewayError):
    """The provider failed: bad status, broken connection or malformed answer."""
    status, type, code = 502, "upstream_error", "upstream_error"

    def __init__(self, message: str, *, upstream_status: int | None = None,
                 retryable: bool = False, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.upstream_status = upstream_status
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts: list = []        # every attempt of the request, set by the relay
        self.route = None               # the deployment tried last


class UpstreamTimeout(UpstreamError):
    status, type, code = 504, "timeout", "upstream_timeout"


class ClientGone(GatewayError):
    """The client closed the connection before its answer was ready (recorded as 499)."""
    status, type, code = 499, "client_disconnected", "client_disconnected"

    def __init__(self, message: str = "The client closed the connection.", **kw):
        super().__init__(message, **kw)
        self.attempts: list = []        # as on UpstreamError: the attempts until the client left
        self.route = None


def api_error(status: int, message: str, type_: str = "invalid_request_error",
              code: str | None = None, param: str | None = None):
    body = {"message": message, "type": type_, "param": param, "code": code}
    return jsonify(error=body), status


# Anthropic's error types (/v1/messages): by status first, then by our OpenAI-side type (a
# mid-stream error event has no status of its own).
ANTHROPIC_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                          403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                          413: "request_too_large", 415: "invalid_request_error",
                          429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}
ANTHROPIC_TYPES = {"rate_limit_exceeded": "rate_limit_error", "insufficient_quota": "rate_limit_error",
                   "service_unavailable": "overloaded_error", "invalid_request_error": "invalid_request_error",
                   "permission_error": "permission_error"}


def anthropic_error(status: int | None, type_: str | None, message: str) -> dict:
    """Anthropic's error body: {"type": "error", "error": {"type", "message"}}."""
    kind = ANTHROPIC_STATUS_TYPES.get(status) or ANTHROPIC_TYPES.get(type_ or "")
    if kind is None:
        kind = "invalid_request_error" if status and status < 500 else "api_error"
    return {"type": "error", "error": {"type": kind, "message": message}}


def _anthropic_path() -> bool:
    return request.path == "/v1/messages" or request.path.startswith("/v1/messages/")


HTTP_TYPES = {401: "invalid_request_error", 403: "permission_error", 404: "invalid_request_error",
              405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
              429: "rate_limit_exceeded"}


def served_endpoints() -> list[str]:
    """`METHOD /v1/path` of every /v1 route, read from the url_map so new endpoints appear."""
    out = set()
    for rule in current_app.url_map.iter_rules():
        if rule.rule.startswith("/v1/"):
            out.update(f"{m} {rule.rule}" for m in rule.methods or () if m not in ("HEAD", "OPTIONS"))
    return sorted(out, key=lambda s: (s.split(" ")[1], s))


def unknown_url():
    """OpenAI's 404 for a path it does not serve, plus what this gateway does serve."""
    message = (f"Invalid URL ({request.method} {request.path[:200]}). This gateway serves: "
               + ", ".join(served_endpoints()) + ".")
    return api_error(404, message, "invalid_request_error", "unknown_url")


def wrong_method(e: MethodNotAllowed):
    """405 with the Allow header werkzeug computed and the methods the path takes."""
    allowed = sorted(m for m in e.valid_methods or () if m not in ("HEAD", "OPTIONS"))
    body, status = api_error(405, f"Method {request.method} is not allowed on {request.path[:200]}; "
                                  f"use {' or '.join(allowed)}.", "invalid_request_error",
                             "method_not_allowed")
    return body, status, {"Allow": ", ".join(e.valid_methods or ())}


def with_retry_ms(headers: dict) -> dict:
    """OpenAI's SDKs read retry-after-ms before retry-after: send both whenever one is set."""
    seconds = headers.get("retry-after") or headers.get("Retry-After")
    if seconds and "retry-after-ms" not in headers and str(seconds).isdigit():
        return {**headers, "retry-after-ms": str(int(seconds) * 1000)}
    return headers


def init_app(app: Flask) -> None:
    """Routing 404/405 never reach blueprint handlers, so /v1 gets JSON from here."""

    @app.errorhandler(GatewayError)
    def gateway_error(e: GatewayError):
        if _anthropic_path():
            return jsonify(anthropic_error(e.status, e.type, e.message)), e.status, with_retry_ms(e.headers)
        return jsonify(e.body()), e.status, with_retry_ms(e.headers)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        if not request.path.startswith("/v1/"):
            return e
        if _anthropic_path():
            return jsonify(anthropic_error(e.code, None, e.description or e.name)), e.code or 500
        if isinstance(e, NotFound) and request.url_rule is None:
            return unknown_url()
        if isinstance(e, MethodNotAllowed):
            return wrong_method(e)
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
                415: "unsupported_media_type"}.get(e.code)
        return api_error(e.code or 500, e.description or e.name,
                         HTTP_TYPES.get(e.code, "invalid_request_error"), code)

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        app.logger.exception("unhandled error on %s", request.path)
        if _anthropic_path():
            return jsonify(anthropic_error(500, None, "The gateway hit an internal error.")), 500
        if request.path.startswith("/v1/"):
            return api_error(500, "The gateway hit an internal error.", "server_error", "internal_error")
        return "Internal server error", 500
