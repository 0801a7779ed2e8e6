"""Test connection: one real, minimal chat call to a provider, answered with one of a few
outcomes. Nothing the remote end sent is shown, and every way of not reaching it (closed port,
a listener that is no HTTP server, silence) reads the same and takes the same time, so the
button tells an admin whether a provider works without mapping the network behind the gateway."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import current_app

from gateway.errors import GatewayError, UpstreamError
from gateway.providers import registry, ssrf
from gateway.providers.base import Target
from gateway.providers.transport import Timeouts
from gateway.services.routing import catalog
from gateway.services.routing.upstream import attempt, sanitize

log = logging.getLogger("gateway.probe")
PROBE_BODY = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1, "temperature": 0}
OUTCOMES = {
    "connected": "Connected.",
    "key_rejected": "The provider rejected the API key.",
    "provider_error": "The provider answered with an error: check the base URL and the model name "
                      "(the gateway log has the details).",
    "unreachable": "Could not reach the provider.",
    "refused": "The base URL is refused by the gateway's network policy.",
    "rate_limited": "Too many connection tests: wait a minute and try again.",
}


@dataclass
class ProbeResult:
    outcome: str        # a key of OUTCOMES
    model: str
    latency_ms: float = 0.0     # of a connected call only
    detail: str = ""            # why a URL was refused (the gateway's own check, not the remote's)

    @property
    def ok(self) -> bool:
        return self.outcome == "connected"

    @property
    def message(self) -> str:
        return OUTCOMES[self.outcome] + (f" {self.detail}" if self.detail else "")


def probe_provider(kind: str, base_url: str, api_key: str, model: str, options: dict | None = None,
                   region: str = "") -> ProbeResult:
    """Call `model` once with a one-token prompt; never raises for upstream trouble.
    Unreachable outcomes answer when PROBE_TIMEOUT_SECONDS is up, however fast they failed."""
    kind = kind.strip().lower()
    if kind not in registry.KINDS:
        return ProbeResult("refused", model, detail=f"Unknown provider kind '{kind}'.")
    app = current_app._get_current_object()
    try:
        base_url, options = registry.resolve_endpoint(kind, base_url, options, region=region)
        ssrf.check_url(base_url, app.config["ALLOW_PRIVATE_UPSTREAMS"])
    except ValueError as e:
        return ProbeResult("refused", model, detail=f"{str(e)[:1].upper()}{str(e)[1:]}.")
    target = Target(kind=kind, base_url=base_url, api_key=api_key, model=model, options=dict(options or {}),
                    region=region)
    route = catalog.Route(0, model, "chat", 0, "probe", kind, region, 1, target)
    limit = float(app.config["PROBE_TIMEOUT_SECONDS"])
    connect = min(float(app.config["UPSTREAM_CONNECT_TIMEOUT"]), limit / 2)
    t0 = time.perf_counter()
    try:
        attempt(app, route, dict(PROBE_BODY, model=model), "chat", stream=False,
                timeouts=Timeouts(connect, limit - connect, limit - connect))
    except GatewayError as e:
        outcome = _outcome(e)
        log.info("provider test of %s with %s: %s (%s)", ssrf.display_url(base_url), model, outcome,
                 sanitize(e.message, api_key))
        if outcome == "unreachable":
            time.sleep(max(0.0, t0 + limit - time.perf_counter()))
        return ProbeResult(outcome, model)
    return ProbeResult("connected", model, (time.perf_counter() - t0) * 1000)


def _outcome(e: GatewayError) -> str:
    if not isinstance(e, UpstreamError):
        return "provider_error"
    if e.code == "upstream_blocked":
        return "refused"
    if e.upstream_status in (401, 403):
        return "key_rejected"
    if e.upstream_status or e.code == "malformed":      # an HTTP answer, but not a good one
        return "provider_error"
    return "unreachable"
