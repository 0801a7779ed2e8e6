"""Providers and deployments: admin changes, and the cached routing table the proxy reads."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import Deployment, Provider
from gateway.providers import transport
from gateway.providers.base import Target
from gateway import secrets

KINDS = ("openai", "azure", "anthropic", "gemini", "mock")
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
    "mock": "mock://local/v1",
}


@dataclass(frozen=True, slots=True)
class Route:
    """A deployment ready to call: everything the proxy needs, no database session."""
    deployment_id: int
    model: str
    mode: str
    provider_id: int
    provider: str
    kind: str
    region: str
    weight: int
    target: Target
    input_per_1k: float | None = None       # the deployment's price, else the price table's
    output_per_1k: float | None = None
    context_window: int | None = None
    capabilities: frozenset[str] | None = None   # None: not declared, nothing is ruled out
    rpm_limit: int | None = None
    tpm_limit: int | None = None

    @property
    def label(self) -> str:
        """How responses and records name the deployment (never a secret)."""
        return f"{self.provider}/{self.target.model}"

    own_price: bool = False                 # the deployment sets its price (else the price table)

    def price(self) -> tuple | None:
        """The price the request is billed at, as pricing.cost_of takes it."""
        if self.own_price:
            return (self.input_per_1k or 0.0, self.output_per_1k or 0.0, None)
        from gateway.services.accounting import pricing
        return pricing.price_book().lookup(self.target.model)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything routing reads per request, loaded together so it is consistent."""
    routes: dict[str, list[Route]]
    by_id: dict[int, Route]
    aliases: dict[str, str]
    policies: dict[str, dict]


EMPTY = Snapshot({}, {}, {}, {})


class Catalog:
    """model -> routes, rebuilt from the database at most every `ttl` seconds."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.current: Snapshot = EMPTY
        self.loaded_at = float("-inf")
        self.lock = threading.Lock()

    @property
    def routes(self) -> dict[str, list[Route]]:
        return self.current.routes

    def table(self) -> dict[str, list[Route]]:
        return self.snapshot().routes

    def snapshot(self) -> Snapshot:
        if time.monotonic() - self.loaded_at < self.ttl:
            return self.current
        with self.lock:
            if time.monotonic() - self.loaded_at >= self.ttl:
                try:
                    self.current = _load()
                except Exception:
                    db.session.rollback()
                    if self.loaded_at == float("-inf"):
                        raise
                    current_app.logger.warning("catalog reload failed; serving the last one", exc_info=True)
                finally:
                    db.session.remove()
                self.loaded_at = time.monotonic()
        return self.current

    def invalidate(self) -> None:
        self.loaded_at = float("-inf")


def _load() -> Snapshot:
    from gateway.models import Alias, Policy
    from gateway.services.accounting import pricing

    book = pricing.price_book()
    book.lookup("")     # reload now, not in the middle of reading rows
    rows = db.session.scalars(
        select(Deployment).join(Provider)
        .where(Deployment.enabled, Provider.enabled)
        .options(selectinload(Deployment.provider))).all()
    keys: dict[int, str] = {}
    table: dict[str, list[Route]] = {}
    for d in rows:
        p = d.provider
        if p.id not in keys:
            keys[p.id] = secrets.decrypt(p.api_key_enc)
        target = Target(kind=p.kind, base_url=p.base_url, api_key=keys[p.id],
                        model=d.upstream_model, options=dict(p.options or {}))
        listed = book.lookup(d.upstream_model) or (None, None, None)
        inp = d.input_per_1k if d.input_per_1k is not None else listed[0]
        out = d.output_per_1k if d.output_per_1k is not None else listed[1]
        caps = frozenset(d.capabilities) if d.capabilities is not None else None
        table.setdefault(d.model, []).append(Route(
            d.id, d.model, d.mode, p.id, p.name, p.kind, d.region or p.region or "", max(d.weight, 0),
            target, inp, out, d.context_window, caps, d.rpm_limit, d.tpm_limit,
            d.input_per_1k is not None or d.output_per_1k is not None))
    by_id = {r.deployment_id: r for routes in table.values() for r in routes}
    aliases = {a.name: a.target for a in db.session.scalars(select(Alias))}
    policies = {p.name: policy_dict(p) for p in db.session.scalars(select(Policy).where(Policy.enabled))}
    return Snapshot(table, by_id, aliases, policies)


def policy_dict(p) -> dict:
    """A Policy row as the plain dict routing reads."""
    return {"name": p.name, "strategy": p.strategy, "candidates": p.candidates, "weights": p.weights,
            "capabilities": p.capabilities, "regions": p.regions, "sticky": p.sticky,
            "ab": p.ab, "shadow": p.shadow}


def catalog() -> Catalog:
    """This process's routing table (built by services.init_app)."""
    return current_app.extensions["catalog"]


def routes_for(model: str) -> list[Route]:
    """The deployments of a model, or of the model an alias points at."""
    snap = catalog().snapshot()
    for _ in range(5):
        if model in snap.routes or model not in snap.aliases:
            break
        model = snap.aliases[model]
    return snap.routes.get(model, [])


def model_names() -> list[str]:
    """Models and the aliases that lead to one (what /v1/models lists)."""
    snap = catalog().snapshot()
    return sorted(set(snap.routes) | {a for a in snap.aliases if routes_for(a)})


def order_routes(routes: list[Route]) -> list[Route]:
    """Weighted random order: the first is the pick, the rest are fallbacks."""
    pool = [r for r in routes if r.weight > 0] or list(routes)
    ordered = []
    while pool:
        pick = random.choices(pool, weights=[r.weight or 1 for r in pool])[0] if len(pool) > 1 else pool[0]
        ordered.append(pick)
        pool.remove(pick)
    return ordered


def save_provider(name: str, kind: str, *, base_url: str | None = None, api_key: str | None = None,
                  models: list[str] | None = None, region: str = "", options: dict | None = None,
                  embedding_models: list[str] | None = None, source: str = "cli") -> Provider:
    """Create or update a provider by name and make sure each listed model has a deployment.
    Models may be given as `public=upstream` to expose an upstream model under another name."""
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise InvalidRequest(f"unknown provider kind '{kind}'; choose one of {', '.join(KINDS)}", param="kind")
    if not name.strip():
        raise InvalidRequest("a provider needs a name", param="name")
    base_url = (base_url or DEFAULT_BASE_URLS.get(kind, "")).strip()
    if kind == "mock":
        base_url = DEFAULT_BASE_URLS["mock"]
    elif not base_url:
        raise InvalidRequest("this provider kind needs a base URL", param="base_url")
    try:
        transport.check_url(base_url, current_app.config["ALLOW_PRIVATE_UPSTREAMS"])
    except ValueError as e:
        raise InvalidRequest(f"base URL refused: {e}", param="base_url") from None
    if kind == "azure" and not (options or {}).get("api_version"):
        options = dict(options or {}, api_version="2024-10-21")
    provider = db.session.scalar(select(Provider).where(Provider.name == name))
    if provider is None:
        provider = Provider(name=name, kind=kind, source=source)
        db.session.add(provider)
    provider.kind, provider.base_url, provider.region = kind, base_url, region or provider.region or ""
    if options is not None:
        provider.options = options
    if api_key is not None:
        provider.api_key_enc = secrets.encrypt(api_key)
        provider.key_last4 = api_key[-4:] if len(api_key) >= 8 else ""
    db.session.flush()
    for mode, names in (("chat", models or []), ("embedding", embedding_models or [])):
        for spec in names:
            public, _, upstream = spec.strip().partition("=")
            if public:
                _ensure_deployment(provider, public.strip(), (upstream or public).strip(), mode)
    db.session.commit()
    catalog().invalidate()
    return provider


def _ensure_deployment(provider: Provider, model: str, upstream: str, mode: str) -> None:
    for d in provider.deployments:
        if d.model == model:
            d.upstream_model, d.mode = upstream, mode
            return
    provider.deployments.append(Deployment(model=model, upstream_model=upstream, mode=mode))


DEPLOYMENT_FIELDS = ("upstream_model", "mode", "weight", "enabled", "region", "input_per_1k", "output_per_1k",
                     "context_window", "capabilities", "rpm_limit", "tpm_limit")


def save_deployment(model: str, provider: str, upstream_model: str | None = None, *,
                    source: str | None = None, **fields) -> Deployment:
    """Create or update the deployment of `model` on `provider` serving `upstream_model`
    (by default the model's own name); only the fields given change."""
    unknown = set(fields) - set(DEPLOYMENT_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown deployment field(s): {', '.join(sorted(unknown))}")
    p = db.session.scalar(select(Provider).where(Provider.name == provider))
    if p is None:
        raise InvalidRequest(f"no provider named '{provider}'", param="provider")
    upstream = (upstream_model or model).strip()
    d = db.session.scalar(select(Deployment).where(
        Deployment.provider_id == p.id, Deployment.model == model, Deployment.upstream_model == upstream))
    if d is None:
        d = Deployment(model=model, provider=p, upstream_model=upstream, source=source or "cli")
        db.session.add(d)
    elif source:
        d.source = source
    if fields.get("mode") not in (None, "chat", "embedding"):
        raise InvalidRequest("mode must be chat or embedding", param="mode")
    caps = fields.get("capabilities")
    if caps is not None:
        fields["capabilities"] = sorted({str(c).strip().lower() for c in caps if str(c).strip()})
    for name, value in fields.items():
        setattr(d, name, value)
    db.session.commit()
    catalog().invalidate()
    return d


def set_alias(name: str, target: str, source: str = "cli") -> None:
    """Point `name` at a model or `policy:NAME` (clients keep asking for `name`)."""
    from gateway.models import Alias
    name, target = name.strip(), target.strip()
    if not name or not target or name == target:
        raise InvalidRequest("an alias needs a name and a different target", param="alias")
    row = db.session.scalar(select(Alias).where(Alias.name == name))
    if row is None:
        row = Alias(name=name, target=target, source=source)
        db.session.add(row)
    row.target, row.source = target, source
    db.session.commit()
    catalog().invalidate()


def delete_alias(name: str) -> bool:
    from gateway.models import Alias
    row = db.session.scalar(select(Alias).where(Alias.name == name))
    if row is not None:
        db.session.delete(row)
        db.session.commit()
        catalog().invalidate()
    return row is not None


POLICY_FIELDS = ("strategy", "candidates", "weights", "capabilities", "regions", "sticky", "ab", "shadow",
                 "enabled")


def save_policy(name: str, source: str = "cli", **fields):
    """Create or update a routing policy; only the fields given change."""
    from gateway.models import Policy
    from gateway.services.routing.policies import STRATEGIES
    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown policy field(s): {', '.join(sorted(unknown))}")
    if fields.get("strategy") is not None and fields["strategy"] not in STRATEGIES:
        raise InvalidRequest(f"strategy must be one of {', '.join(STRATEGIES)}", param="strategy")
    for exp in ("ab", "shadow"):
        spec = fields.get(exp)
        if spec is not None and not (isinstance(spec, dict) and spec.get("model")
                                     and 0 <= float(spec.get("percent", -1)) <= 100):
            raise InvalidRequest(f"{exp} needs a model and a percent from 0 to 100", param=exp)
    if not name.strip():
        raise InvalidRequest("a policy needs a name", param="name")
    row = db.session.scalar(select(Policy).where(Policy.name == name))
    if row is None:
        row = Policy(name=name, source=source)
        db.session.add(row)
    row.source = source
    for key, value in fields.items():
        setattr(row, key, value)
    db.session.commit()
    catalog().invalidate()
    return row
