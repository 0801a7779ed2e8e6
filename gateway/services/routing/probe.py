"""Test connection: one real, minimal chat call to a provider, timed, errors sanitized."""
from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from flask import current_app

from gateway.errors import GatewayError, UpstreamError
from gateway.providers import registry, ssrf
from gateway.providers.base import Target
from gateway.services.routing import catalog
from gateway.services.routing.upstream import attempt, sanitize

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
    if kind not in registry.KINDS:
        return ProbeResult(False, 0.0, model, f"unknown provider kind '{kind}'")
    try:
        base_url, options = registry.resolve_endpoint(kind, base_url, options)
        ssrf.check_url(base_url, current_app.config["ALLOW_PRIVATE_UPSTREAMS"])
    except ValueError as e:
        return ProbeResult(False, 0.0, model, f"base URL refused: {e}")
    target = Target(kind=kind, base_url=base_url, api_key=api_key, model=model, options=dict(options or {}))
    route = catalog.Route(0, model, "chat", 0, "probe", kind, "", 1, target)
    t0 = time.perf_counter()
    try:
        answer = attempt(current_app._get_current_object(), route, dict(PROBE_BODY, model=model), "chat",
                         stream=False)
    except GatewayError as e:
        ms = (time.perf_counter() - t0) * 1000
        if isinstance(e, UpstreamError) and e.upstream_status:   # an error status: its message, sanitized
            return ProbeResult(False, ms, model, f"HTTP {e.upstream_status}: {e.message}")
        return ProbeResult(False, ms, model, sanitize(e.message, api_key))
    return ProbeResult(True, (time.perf_counter() - t0) * 1000, model, _first_words(answer.reply.body))


def _first_words(body: bytes) -> str:
    try:
        choice = orjson.loads(body)["choices"][0]["message"]
        return str(choice.get("content") or "")[:80] or "(empty reply)"
    except (KeyError, IndexError, TypeError, orjson.JSONDecodeError):
        return "(reply received)"
