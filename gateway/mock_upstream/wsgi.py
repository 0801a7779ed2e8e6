"""The WSGI app: answers model calls through routes.py and keeps the /_mock control state
(queued faults, the request log, counters)."""
from __future__ import annotations

import http
import threading
from collections import Counter, deque
from urllib.parse import parse_qsl

import orjson

from werkzeug.formparser import parse_form_data

from gateway.mock_upstream.base import Call, Result, error_result, json_result
from gateway.mock_upstream.faults import (NO_FAULTS, Faults, apply_directives, paced,
                                          request_faults, run_faulty)
from gateway.mock_upstream.openai_media import describe_upload
from gateway.mock_upstream.routes import ROUTES, route, vendor_for

_REQUEST_LOG_SIZE = 200
_SECRET_HEADERS = ("authorization", "api-key", "x-api-key", "x-goog-api-key", "x-amz-security-token")


class MockUpstream:
    """The WSGI app: answers model calls and keeps the control state."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests: deque[dict] = deque(maxlen=_REQUEST_LOG_SIZE)
        self._queued: deque[tuple[str | None, str]] = deque()   # (path filter, directives)
        self._paths: Counter[str] = Counter()
        self._models: Counter[str] = Counter()

    def __call__(self, environ: dict, start_response):
        path = environ.get("PATH_INFO") or "/"
        if path.startswith("/_mock/"):
            result = self._control(environ, path)
        else:
            result = self._serve(environ, path)
            if not isinstance(result, Result):
                return result   # an iterator that aborts the connection
        return self._respond(result, start_response)

    def _serve(self, environ: dict, path: str):
        method = environ.get("REQUEST_METHOD", "GET")
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        found = route(method, path)
        try:
            body = _read_json(environ)
        except ValueError:
            body = None
        model = (found and found.model) or (body or {}).get("model") or ""
        self._record(environ, method, path, query, body, model)
        if found is None:
            vendor = vendor_for(path)
            status = 405 if ROUTES.keys() & {("GET", path), ("POST", path)} else 404
            return error_result(vendor, status, f"no route for {method} {path}")
        vendor = found.vendor
        if body is None:
            return error_result(vendor, 400, "request body is not a JSON object")
        if not vendor.authorized(environ, query):
            if vendor.auth_failure is not None:
                return vendor.auth_failure(environ)
            return error_result(vendor, vendor.auth_status, vendor.auth_message)
        if method == "POST" and not model:
            return error_result(vendor, 400, "model is required")
        queued = self._take_queued(path) if self._queued else None
        try:
            faults = request_faults(environ, model, queued)
        except ValueError as exc:
            return error_result(vendor, 400, str(exc))
        call = Call(environ, body, model, found.action, query)
        try:
            result = (run_faulty(found.handler, vendor, faults, call) if faults
                      else found.handler(call))
        except (AttributeError, KeyError, TypeError, IndexError) as exc:
            # A request shape the mock can't read: say so rather than a bare 500.
            return error_result(vendor, 400, f"mock could not read the request: {exc!r}")
        if isinstance(result, Result) and result.frames is not None:
            result.chunks = paced(result.frames, faults or NO_FAULTS, vendor, environ)
        return result

    def _take_queued(self, path: str) -> str | None:
        with self._lock:
            for i, (where, spec) in enumerate(self._queued):
                if where is None or where in path:
                    del self._queued[i]
                    return spec
        return None

    def _record(self, environ, method, path, query, body, model) -> None:
        if "key" in query:
            query = {**query, "key": _mask(query["key"])}
        entry = {"method": method, "path": path, "query": query,
                 "headers": _headers(environ), "body": body}
        with self._lock:
            self._requests.append(entry)
            self._paths[path] += 1
            if model:
                self._models[model] += 1

    def _control(self, environ: dict, path: str) -> Result:
        method = environ.get("REQUEST_METHOD", "GET")
        action = _CONTROL.get((method, path))
        if action is None:
            return json_result({"error": f"no control route {method} {path}"}, 404)
        try:
            body = _read_json(environ)
        except ValueError:
            return json_result({"error": "body is not a JSON object"}, 400)
        return action(self, body)

    def queue_faults(self, body: dict) -> Result:
        """Queue faults, each taken by one later request whose path contains `path`."""
        faults = body.get("faults")
        if isinstance(faults, str):
            faults = [faults]
        if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
            return json_result({"error": "faults must be a list of directive strings"}, 400)
        try:
            for spec in faults:
                apply_directives(Faults(), spec)
        except ValueError as exc:
            return json_result({"error": str(exc)}, 400)
        where = body.get("path") or None
        with self._lock:
            self._queued.extend((where, spec) for spec in faults)
            return json_result({"queued": len(self._queued)})

    def list_faults(self, body: dict) -> Result:
        """GET /_mock/faults: the queue, oldest first."""
        with self._lock:
            return json_result({"faults": [{"path": w, "fault": s} for w, s in self._queued]})

    def clear_faults(self, body: dict) -> Result:
        """DELETE /_mock/faults: empty the queue."""
        with self._lock:
            cleared = len(self._queued)
            self._queued.clear()
        return json_result({"cleared": cleared})

    def requests(self, body: dict) -> Result:
        """GET /_mock/requests: the latest requests, secrets masked."""
        with self._lock:
            return json_result({"requests": list(self._requests)})

    def stats(self, body: dict) -> Result:
        """GET /_mock/stats: request counts by path and model."""
        with self._lock:
            return json_result({"total": sum(self._paths.values()),
                                 "paths": dict(self._paths), "models": dict(self._models)})

    def reset(self, body: dict | None = None) -> Result:
        """POST /_mock/reset: forget requests, queued faults and counts."""
        with self._lock:
            self._requests.clear()
            self._queued.clear()
            self._paths.clear()
            self._models.clear()
        return json_result({"reset": True})

    @staticmethod
    def _respond(result: Result, start_response):
        headers = [("Content-Type", result.content_type), *result.headers]
        if result.chunks is None:
            headers.append(("Content-Length", str(len(result.body))))
            start_response(_status_line(result.status), headers)
            return [result.body]
        if result.frames is not None:
            headers.append(("Cache-Control", "no-cache"))
        start_response(_status_line(result.status), headers)
        return result.chunks


_CONTROL = {
    ("POST", "/_mock/faults"): MockUpstream.queue_faults,
    ("GET", "/_mock/faults"): MockUpstream.list_faults,
    ("DELETE", "/_mock/faults"): MockUpstream.clear_faults,
    ("GET", "/_mock/requests"): MockUpstream.requests,
    ("GET", "/_mock/stats"): MockUpstream.stats,
    ("POST", "/_mock/reset"): MockUpstream.reset,
}

app = MockUpstream()    # for in-process use by the gateway's `mock` provider


_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in http.HTTPStatus}


def _status_line(status: int) -> str:
    return _STATUS_LINES.get(status) or f"{status} Error"


def _read_form(environ: dict) -> dict:
    """A multipart/form-data body (audio uploads) as a dict: its fields, the file described."""
    _, form, files = parse_form_data(environ)
    body: dict = {k: (v[0] if len(v) == 1 else v) for k, v in form.lists()}
    for name, f in files.items():
        body[name] = describe_upload(f.filename or "", f.mimetype, f.read())
    if "temperature" in body:
        body["temperature"] = _number(body["temperature"])
    return body


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _read_json(environ: dict):
    """The request body parsed as JSON ({} when empty), or a multipart form's fields; raises
    ValueError if invalid."""
    if (environ.get("CONTENT_TYPE") or "").startswith("multipart/form-data"):
        return _read_form(environ)
    length = environ.get("CONTENT_LENGTH")
    stream = environ.get("wsgi.input")
    if stream is None:
        return {}
    raw = stream.read(int(length)) if length else stream.read()
    environ["mock.raw_body"] = raw      # Bedrock's SigV4 check hashes the exact bytes
    if not raw:
        return {}
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _headers(environ: dict) -> dict[str, str]:
    """Request headers with lower-case names and secrets masked to their last 4 chars."""
    out = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out[key[5:].replace("_", "-").lower()] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            out[key.replace("_", "-").lower()] = value
    for name in _SECRET_HEADERS:
        if name in out:
            out[name] = _mask(out[name])
    return out


def _mask(value: str) -> str:
    scheme, sep, secret = value.partition(" ")
    if not sep:
        scheme, secret = "", value
    return f"{scheme}{sep}...{secret[-4:]}"
