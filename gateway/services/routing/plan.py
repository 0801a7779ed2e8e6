"""Which deployments serve a request, in which order: the key's model allowlist, capability,
context and region checks, the policy's strategy, health, A/B split and shadow sampling.

Runs once per request, before admission: the quota reserves against this plan's dearest
deployment, and the relay tries exactly these deployments. Everything here reads the cached
catalog snapshot and in-memory health: no database or network call.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flask import current_app

from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, UpstreamError
from gateway.services.accounting import tokens, units as media_units
from gateway.services.accounting.units import Units
from gateway.services.api_request import ApiRequest
from gateway.services.routing.catalog import Route, Snapshot, catalog
from gateway.services.routing.health import health
from gateway.services.routing.policies import pool, policy_named, resolve


@dataclass(frozen=True, slots=True)
class Need:
    """What the request demands of a deployment; its size is estimated here, once."""
    mode: str
    capabilities: frozenset
    prompt_tokens: int
    max_output: int | None      # the request's max_tokens, when it set one
    n: int = 1                  # choices asked for
    units: Units | None = None  # media: the most units (images, seconds, ...) it may be billed for

    @property
    def tokens(self) -> int:
        """Prompt plus requested output: what must fit in a context window."""
        return self.prompt_tokens + (self.max_output or 0)

    @property
    def output_tokens(self) -> int:
        """Output assumed when comparing prices (a typical answer when none was set)."""
        return self.max_output or 256


@dataclass(frozen=True)
class Plan:
    """The ordered deployments for one request, and what the experiment decided."""
    routes: list[Route]
    need: Need
    policy: str | None = None
    variant: str | None = None
    shadow: Route | None = None
    skipped: dict = field(default_factory=dict)     # deployment label -> why it was left out
    redact: str | None = None                       # the policy's redaction mode, if it sets one
    output_field: str = "max_tokens"    # the body field that caps the answer's length upstream
    cache_ttl: int | None = None        # the policy's response cache TTL, if it sets one
    resolved: str | None = None         # the model after aliases: what cached answers are keyed by


def needs(body: dict, mode: str, operation: str | None = None) -> Need:
    """Capabilities and size of a request, read from its body."""
    worst = media_units.worst(operation or mode, body)
    if worst is not None:       # billed per unit: no tokens to estimate or fit in a context
        return Need(mode, frozenset(), 0, None, units=worst)
    caps = set()
    if mode == "embedding":
        caps.add("embeddings")
    if body.get("tools") or body.get("functions"):
        caps.add("tools")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        caps.add("json")
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in ("image_url", "input_image", "image"):
                    caps.add("vision")
                elif kind in ("input_audio", "audio"):
                    caps.add("audio")
    out = body.get("max_completion_tokens") or body.get("max_tokens")
    out = out if isinstance(out, int) and not isinstance(out, bool) and out > 0 else None
    n = body.get("n")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return Need(mode, frozenset(caps), tokens.estimate_prompt(body), out, n)


def in_regions(route: Route, regions) -> bool:
    """`eu` admits `eu`, `eu-west-1`, `eu_central`; an unknown region never passes a constraint."""
    if not regions:
        return True
    region = (route.region or "").lower()
    return any(region == r or region.startswith(r + "-") or region.startswith(r + "_")
               for r in (x.lower() for x in regions))


def plan(req: ApiRequest, key) -> Plan:
    """The deployments to try for `req` by `key` (None: the console), best first; raises when
    the key may not use the model or no deployment can serve it."""
    snap = catalog().snapshot()
    mode, model = req.mode, req.model
    names = [model] + [m for m in req.fallbacks if m != model]
    names = names[: 1 + int(current_app.config["MAX_FALLBACK_MODELS"])]
    primary_pool, policy = pool(model, snap, mode)
    if not primary_pool and policy is None:
        if snap.routes.get(resolve(model, snap)):
            raise InvalidRequest(f"The model '{model}' does not support {req.endpoint}.", param="model")
        raise ModelNotFound(f"The model '{model}' does not exist or is not served by this gateway.",
                            param="model")
    if key is not None:
        key.check_model(model)
        if policy is None and key.policy:      # bound to the key, or its plan's default
            policy = policy_named(key.policy, snap)
    policy = policy or {}
    need = needs(req.body, mode, req.operation)
    required = need.capabilities | frozenset(policy.get("capabilities") or ())
    regions = policy.get("regions")
    skipped: dict[str, str] = {}

    def fits(r: Route) -> bool:
        why = None
        if r.capabilities is not None and not required <= r.capabilities:
            why = "capability"
        elif r.context_window and need.tokens > r.context_window:
            why = "context"
        elif not in_regions(r, regions):
            why = "region"
        if why:
            skipped[r.label] = why
        return why is None

    primary = [r for r in primary_pool if fits(r)]
    sticky = _sticky_value(req, policy)
    variant, ordered = None, None
    ab = policy.get("ab")
    if ab and ab.get("model") and primary:
        # Arm B: the candidate first, the usual pool as its fallback. Arm A: the pool without it.
        b_pool = [r for r in pool(ab["model"], snap, mode)[0] if fits(r)]
        b_ids = {r.deployment_id for r in b_pool}
        a_pool = [r for r in primary if r.deployment_id not in b_ids]
        if b_pool and a_pool:
            arm_b = _pick_ab(sticky, policy, float(ab.get("percent") or 0))
            variant = "B" if arm_b else "A"
            ordered = _order(a_pool, policy, need, sticky)
            if arm_b:
                ordered = _order(b_pool, policy, need, sticky) + ordered
    if ordered is None:
        ordered = _order(primary, policy, need, sticky)
    seen = {r.deployment_id for r in ordered}
    for name in names[1:]:
        if key is not None and not key.allows(name):
            continue
        try:
            extra, _ = pool(name, snap, mode)
        except GatewayError:
            continue
        extra = [r for r in extra if r.deployment_id not in seen and fits(r)]
        seen.update(r.deployment_id for r in extra)
        ordered += _order(extra, policy, need, sticky)
    if not ordered:
        raise _nothing_fits(model, skipped, required)
    ordered = _by_health(ordered, need, skipped)
    shadow = _pick_shadow(policy, snap, mode) if need.units is None else None     # media: never mirrored
    return Plan(ordered, need, policy.get("name"), variant, shadow, skipped,
                policy.get("redact"), output_field(req.body, ordered), policy.get("cache_ttl"),
                resolve(model, snap))


PASS_THROUGH = ("openai", "azure")     # kinds whose adapter forwards the body's fields as they are


def output_field(body: dict, routes: list[Route]) -> str:
    """Where a cap on the answer's length goes: the field the request uses; else
    max_completion_tokens, the only one OpenAI's reasoning models take, when every
    OpenAI-format deployment tried is OpenAI's own API; else max_tokens, which every
    OpenAI-compatible vendor and Azure API version knows. (The other adapters read either.)"""
    for name in ("max_completion_tokens", "max_tokens"):
        if name in body:
            return name
    if all(r.kind not in PASS_THROUGH or urlsplit(r.target.base_url or "").hostname == "api.openai.com"
           for r in routes):
        return "max_completion_tokens"
    return "max_tokens"


def _nothing_fits(model: str, skipped: dict, required: frozenset) -> GatewayError:
    reasons = set(skipped.values())
    if not reasons:
        return ModelNotFound(f"The model '{model}' has no deployment able to serve this request.",
                             param="model")
    why = {"context": "the request is too long for it",
           "capability": f"it lacks {', '.join(sorted(required))}",
           "region": "it is outside the regions this request may use"}
    code = {"context": "context_length_exceeded", "capability": "unsupported_capability",
            "region": "region_unavailable"}
    detail = "; or ".join(why[r] for r in sorted(reasons) if r in why)
    return InvalidRequest(f"No deployment of '{model}' can serve this request: {detail}.",
                          code=code[next(iter(reasons))] if len(reasons) == 1 else "no_suitable_deployment",
                          param="messages" if reasons == {"context"} else "model")


def _by_health(routes: list[Route], need: Need, skipped: dict) -> list[Route]:
    """Healthy first (in the given order), then cooling-down ones as a last resort; open
    circuits and full caps are left out. Raises when nothing is left at all."""
    h = health()
    good, later = [], []
    soonest = None
    for r in routes:
        state = h.available(r)
        if state in ("ok", "probe") and not h.over_cap(r, need.tokens):
            good.append(r)
            continue
        if state == "cooling":
            later.append(r)
        skipped[r.label] = "capped" if state in ("ok", "probe") else state
        wait = h.cooling(r.deployment_id) if state == "cooling" else 1.0
        soonest = wait if soonest is None else min(soonest, wait)
    if good or later:
        return good + later
    wait = round(max(soonest or 1.0, 1.0))
    err = UpstreamError("Every deployment able to serve this request is unavailable right now "
                        "(circuit open or at its rate limit).", status=503, type="service_unavailable",
                        code="no_healthy_deployment", retryable=True, retry_after=wait)
    err.headers = {"Retry-After": str(wait)}
    raise err


def _sticky_value(req: ApiRequest, policy: dict) -> str | None:
    field_name = policy.get("sticky")
    if not field_name:
        return None
    value = req.body.get(field_name)
    if value is None:
        value = req.tags.get(field_name)
    return str(value) if value not in (None, "") else None


def _unit(*parts: str) -> float:
    """A stable number in [0, 1) from strings: same input, same choice, on every worker."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def _pick_ab(sticky: str | None, policy: dict, percent: float) -> bool:
    u = _unit("ab", policy.get("name") or "", sticky) if sticky else random.random()
    return u * 100 < percent


def _pick_shadow(policy: dict, snap: Snapshot, mode: str) -> Route | None:
    spec = policy.get("shadow")
    if not spec or not spec.get("model") or random.random() * 100 >= float(spec.get("percent") or 0):
        return None
    try:
        candidates, _ = pool(spec["model"], snap, mode)
    except GatewayError:
        return None
    h = health()
    candidates = [r for r in candidates if h.available(r) in ("ok", "probe")]
    return weighted_order(candidates)[0] if candidates else None


def weighted_order(routes: list[Route], sticky: str | None = None) -> list[Route]:
    """Weighted random order; with a sticky value, the same order every time (rendezvous hashing)."""
    if len(routes) < 2:
        return list(routes)
    live = [r for r in routes if r.weight > 0] or list(routes)
    rest = [r for r in routes if r not in live]
    if sticky is not None:
        def score(r: Route) -> float:
            u = _unit(sticky, str(r.deployment_id)) or 1e-12
            return -math.log(u) / max(r.weight, 1)
        return sorted(live, key=score) + rest
    # Efraimidis-Spirakis: one random key per route, sort once
    keyed = sorted(live, key=lambda r: random.random() ** (1.0 / max(r.weight, 1)), reverse=True)
    return keyed + rest


def first_shares(routes: list[Route]) -> list[tuple[Route, float]]:
    """How often each route comes first in weighted_order without a sticky value: its weight's
    share among the live ones (the policy simulator's expected split)."""
    if len(routes) < 2:
        return [(r, 1.0) for r in routes]
    live = [r for r in routes if r.weight > 0] or list(routes)
    total = sum(max(r.weight, 1) for r in live)
    return [(r, max(r.weight, 1) / total) for r in live]


def _score(r: Route, strategy: str, need: Need) -> float | None:
    """Lower is better; None when there is no data yet (tried first, to learn)."""
    if strategy == "cost":
        if r.input_per_1k is None and r.output_per_1k is None:
            return float("inf")
        return ((r.input_per_1k or 0) * need.prompt_tokens + (r.output_per_1k or 0) * need.output_tokens) / 1000
    st = health().stats(r.deployment_id)
    if strategy == "latency":
        return st.ttft_p95_ms if st.ttft_p95_ms is not None else st.p95_ms
    if strategy == "throughput":
        return -st.tokens_per_s if st.tokens_per_s else None
    if strategy == "reliability":
        return (st.error_rate + st.rate_429) if st.count else None
    return 0.0


def _order(routes: list[Route], policy: dict, need: Need, sticky: str | None) -> list[Route]:
    strategy = policy.get("strategy") or "weighted"
    if strategy == "keep":
        return list(routes)
    if strategy == "weighted" or len(routes) < 2:
        return weighted_order(routes, sticky)
    if strategy != "cost" and random.random() < float(current_app.config["ROUTING_EXPLORE"]):
        return weighted_order(routes)
    unknown, ranked = tiers(routes, strategy, need)
    out = weighted_order(unknown) if unknown else []
    for tier in ranked:
        out += weighted_order(tier, sticky)
    return out


def tiers(routes: list[Route], strategy: str, need: Need) -> tuple[list[Route], list[list[Route]]]:
    """A scoring strategy's ranking: the routes with no data yet (tried first, to learn), then
    tiers best first; routes within a tier are equals and share traffic by weight. The policy
    simulator (reporting/simulator.py) reads the same tiers."""
    scored = [(_score(r, strategy, need), r) for r in routes]
    unknown = [r for s, r in scored if s is None]
    scored = sorted(((s, r) for s, r in scored if s is not None), key=lambda x: x[0])
    out = []
    # Equals (within 10%, or a hair apart) share traffic by weight; then the next tier.
    while scored:
        best = scored[0][0]
        margin = abs(best) * 0.1 + (1e-9 if strategy == "cost" else 5.0 if strategy == "latency" else 0.01)
        out.append([r for s, r in scored if s <= best + margin])
        scored = [(s, r) for s, r in scored if s > best + margin]
    return unknown, out
