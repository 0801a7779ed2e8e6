"""Test connection: one real, minimal chat call to a provider, timed, errors sanitized."""
from __future__ import annotations

import time
from dataclasses import dataclass

from flask import current_app

from gateway.errors import GatewayError
from gateway.providers import transport
from gateway.providers.base import StreamError, Target
from gateway.providers.registry import ADAPTERS
from gateway.services.routing import catalog
from gateway.services.routing.relay import sanitize, upstream_failure

PROBE_BODY = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1, "temperature": 0}


@dataclass
class ProbeResult:
    ok: bool
    latency_ms: float
    model: str
    message: str        # the reply's first words, or the sanitized error


def probe_provider(kind: str, base_url: str, api_key: str, model: str, options: dict | None = None) -> ProbeResult:
    """Call `model` once with a one-token prompt; never raises for upstream trouble."""
    kind = kind.strip().lower()
    if kind not in ADAPTERS:
        return ProbeResult(False, 0.0, model, f"unknown provider kind '{kind}'")
    base_url = (base_url or catalog.DEFAULT_BASE_URLS.get(kind, "")).strip()
    if kind == "mock":
        base_url = catalog.DEFAULT_BASE_URLS["mock"]
    try:
        transport.check_url(base_url, current_app.config["ALLOW_PRIVATE_UPSTREAMS"])
    except ValueError as e:
        return ProbeResult(False, 0.0, model, f"base URL refused: {e}")
    if kind == "azure" and not (options or {}).get("api_version"):
        options = dict(options or {}, api_version="2024-10-21")
    target = Target(kind=kind, base_url=base_url, api_key=api_key, model=model, options=dict(options or {}))
    route = catalog.Route(0, model, "chat", 0, "probe", kind, "", 1, target)
    adapter = ADAPTERS[kind]
    t0 = time.perf_counter()
    resp = None
    try:
        resp = current_app.extensions["transport"].send(
            adapter.chat_request(target, dict(PROBE_BODY, model=model), False))
        data = resp.read()
        ms = (time.perf_counter() - t0) * 1000
        if resp.status >= 400:
            err = upstream_failure(route, resp.status, data, resp.headers)
            return ProbeResult(False, ms, model, f"HTTP {resp.status}: {err.message}")
        reply = adapter.chat_response(data, target)
        return ProbeResult(True, ms, model, _first_words(reply.body))
    except (GatewayError, StreamError) as e:
        message = e.message if isinstance(e, GatewayError) else str(e)
        return ProbeResult(False, (time.perf_counter() - t0) * 1000, model, sanitize(message, api_key))
    finally:
        if resp is not None:
            resp.close()


def _first_words(body: bytes) -> str:
    import orjson
    try:
        choice = orjson.loads(body)["choices"][0]["message"]
        return str(choice.get("content") or "")[:80] or "(empty reply)"
    except (KeyError, IndexError, TypeError, orjson.JSONDecodeError):
        return "(reply received)"
