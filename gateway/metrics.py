"""Prometheus metrics: counted once per usage record, gauges read from this process's state.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (set by gunicorn_conf) puts every worker's values in
files there and /metrics adds them up; each worker refreshes its gauges every few seconds,
since the worker answering a scrape cannot see the others' queues. Without it (flask run,
tests) the app has a registry of its own. Labels stay bounded: a model label is a name the
catalog knows (else "other"), deployments come from the catalog, statuses from the gateway.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics,
                               generate_latest)
from prometheus_client import multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.threads import PerProcessThread

log = logging.getLogger("gateway.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}
OTHER = "other"
REFRESH_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class _Series:
    """The children one request's record updates, by (endpoint, model, status)."""
    requests: object
    latency: object
    ttft: object
    prompt: object
    completion: object
    cached: object
    cost: object


@dataclass(frozen=True, slots=True)
class Gauges:
    """What the gauges show, read from one process."""
    queue_depth: int
    spool_files: int
    spool_bytes: int
    circuits: list      # (deployment id, "provider/model", closed | half_open | open)


def multiprocess_dir() -> str | None:
    """The folder gunicorn's workers share their values in, when there is one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """One per app (app.extensions["metrics"]). `known_model(name)`: may the name label a
    series; `read_gauges()`: this process's Gauges."""

    def __init__(self, known_model: Callable[[str], bool], read_gauges: Callable[[], Gauges]):
        self.known_model, self.read_gauges = known_model, read_gauges
        self.shared = multiprocess_dir()
        disable_created_metrics()       # no *_created series: multiprocess mode has none either
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gateway_requests", "Requests by endpoint, requested model and status.",
                                ["endpoint", "model", "status"], registry=r)
        self.latency = Histogram("gateway_request_duration_seconds", "Whole request, as the client saw it.",
                                 ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("gateway_time_to_first_token_seconds", "Streams: request start to first chunk.",
                              ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.tokens = Counter("gateway_tokens", "Tokens billed, by requested model and kind.",
                              ["model", "kind"], registry=r)
        self.cost = Counter("gateway_cost_usd", "Cost billed in USD, by requested model.", ["model"], registry=r)
        self.cache = Counter("gateway_cache_lookups", "Response cache lookups by result (hit, miss).",
                             ["result"], registry=r)
        self.cache_saved = Counter("gateway_cache_saved_usd", "USD the cached answers would have cost.",
                                   registry=r)
        self._cache_hit, self._cache_miss = self.cache.labels("hit"), self.cache.labels("miss")
        self.attempts = Counter("gateway_upstream_attempts", "Upstream attempts by deployment and outcome.",
                                ["deployment_id", "deployment", "outcome"], registry=r)
        # livesum/livemax: a dead worker's value goes with it (gunicorn_conf.child_exit)
        self.queue_depth = Gauge("gateway_usage_queue_depth", "Usage records waiting for the writer.",
                                 registry=r, multiprocess_mode="livesum")
        self.spool_files = Gauge("gateway_usage_spool_files", "Spooled usage batches awaiting replay.",
                                 registry=r, multiprocess_mode="livemax")
        self.spool_bytes = Gauge("gateway_usage_spool_bytes", "Size of the usage spool.",
                                 registry=r, multiprocess_mode="livemax")
        self.circuit = Gauge("gateway_deployment_circuit_state",
                             "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
                             ["deployment_id", "deployment"], registry=r, multiprocess_mode="livemax")
        self.refresher = PerProcessThread("metrics-gauges", self._refresh_forever)
        # labels() validates and locks on every call: look each series up once, then reuse it
        self._series: dict[tuple, _Series] = {}
        self._attempt_series: dict[tuple, object] = {}

    def _for(self, endpoint: str, model: str, status: int) -> _Series:
        key = (endpoint, model, status)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = _Series(
                self.requests.labels(endpoint, model, str(status)), self.latency.labels(endpoint, model),
                self.ttft.labels(model), self.tokens.labels(model, "prompt"),
                self.tokens.labels(model, "completion"), self.tokens.labels(model, "cached"),
                self.cost.labels(model))
        return found

    def _attempt(self, a: dict):
        key = (a["deployment_id"], a["provider"], a["model"], a["error"])
        found = self._attempt_series.get(key)
        if found is None:
            found = self._attempt_series[key] = self.attempts.labels(
                str(a["deployment_id"]), f"{a['provider']}/{a['model']}", a["error"] or "ok")
        return found

    def observe(self, entry) -> None:
        """Count one usage record (accounting/usage.py:record calls this once per request)."""
        if self.shared:
            self.refresher.ensure()
        model = entry.requested_model if entry.requested_model and self.known_model(entry.requested_model) \
            else OTHER
        series = self._for(entry.endpoint, model, entry.status)
        if entry.variant != "shadow":       # a mirrored copy is no client request, but it cost money
            series.requests.inc()
            series.latency.observe(entry.latency_ms / 1000)
            if entry.ttft_ms is not None:
                series.ttft.observe(entry.ttft_ms / 1000)
        if entry.prompt_tokens:
            series.prompt.inc(entry.prompt_tokens)
        if entry.completion_tokens:
            series.completion.inc(entry.completion_tokens)
        if entry.cached_tokens:
            series.cached.inc(entry.cached_tokens)
        if entry.cost_usd:
            series.cost.inc(entry.cost_usd)
        for a in entry.attempts:
            self._attempt(a).inc()
        if entry.cached and entry.status == 200:
            self._cache_hit.inc()
            if entry.saved_usd:
                self.cache_saved.inc(entry.saved_usd)

    def cache_miss(self) -> None:
        """A cache lookup that found nothing (hits are counted from their usage record)."""
        self._cache_miss.inc()

    def refresh(self) -> None:
        """Set the gauges from this process's state now."""
        g = self.read_gauges()
        self.queue_depth.set(g.queue_depth)
        self.spool_files.set(g.spool_files)
        self.spool_bytes.set(g.spool_bytes)
        if not self.shared:
            self.circuit.clear()        # a deleted deployment leaves the list
        for dep_id, label, state in g.circuits:
            self.circuit.labels(str(dep_id), label).set(CIRCUIT_VALUES[state])

    def _refresh_forever(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:       # noqa: BLE001 - stale gauges beat a dead thread
                log.warning("metrics gauge refresh failed", exc_info=True)
            time.sleep(REFRESH_SECONDS)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every worker (or this process), and its type."""
        self.refresh()
        if not self.shared:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.shared)
        return generate_latest(registry), CONTENT_TYPE_LATEST


def metrics(app) -> Metrics:
    """This app's metrics (built by services.init_app)."""
    return app.extensions["metrics"]
