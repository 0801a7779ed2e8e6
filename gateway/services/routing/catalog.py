"""Providers and deployments as routing reads them: a cached, consistent snapshot.
The writes live in services/admin/catalog_admin.py; each one invalidates this cache."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from gateway.database import bounded_session
from gateway.extensions import db
from gateway.models import Alias, Deployment, Policy, Provider
from gateway.providers import registry
from gateway.providers.base import Target
from gateway import secrets

DEMO_SOURCE = "demo"     # bootstrap.seed_demo's provider (and its deployments)


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
    unit_price: float | None = None         # media: the deployment's USD per price_unit, if it sets one
    price_unit: str | None = None
    demo: bool = False                      # the seeded demo: serves only requests naming its model

    def price(self) -> tuple | None:
        """The price the request is billed at, as pricing.cost_of takes it."""
        if self.own_price:
            return (self.input_per_1k or 0.0, self.output_per_1k or 0.0, None)
        from gateway.services.accounting import pricing
        return pricing.price_book().lookup(self.target.model)

    def unit_price_of(self) -> tuple | None:
        """A media request's price (USD, price_unit), as pricing.unit_cost takes it."""
        if self.unit_price is not None and self.price_unit:
            return (self.unit_price, self.price_unit)
        from gateway.services.accounting import pricing
        return pricing.price_book().unit_lookup(self.target.model)


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
    from gateway.services.accounting import pricing

    book = pricing.price_book()
    book.lookup("")     # reload now, not in the middle of reading rows
    with bounded_session():
        return _snapshot(book)


def _snapshot(book) -> Snapshot:
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
        region = d.region or p.region or ""
        target = Target(kind=p.kind, api_key=keys[p.id], model=d.upstream_model,
                        base_url=registry.deployment_base_url(p.kind, p.base_url, p.region, d.region),
                        options=dict(p.options or {}), region=region)
        listed = book.lookup(d.upstream_model) or (None, None, None)
        inp = d.input_per_1k if d.input_per_1k is not None else listed[0]
        out = d.output_per_1k if d.output_per_1k is not None else listed[1]
        caps = frozenset(d.capabilities) if d.capabilities is not None else None
        table.setdefault(d.model, []).append(Route(
            d.id, d.model, d.mode, p.id, p.name, p.kind, region, max(d.weight, 0),
            target, inp, out, d.context_window, caps, d.rpm_limit, d.tpm_limit,
            d.input_per_1k is not None or d.output_per_1k is not None, d.unit_price, d.price_unit,
            demo=DEMO_SOURCE in (p.source, d.source)))
    by_id = {r.deployment_id: r for routes in table.values() for r in routes}
    aliases = {a.name: a.target for a in db.session.scalars(select(Alias))}
    policies = {p.name: policy_dict(p) for p in db.session.scalars(select(Policy).where(Policy.enabled))}
    return Snapshot(table, by_id, aliases, policies)


def policy_dict(p) -> dict:
    """A Policy row as the plain dict routing reads."""
    return {"name": p.name, "strategy": p.strategy, "candidates": p.candidates, "weights": p.weights,
            "capabilities": p.capabilities, "regions": p.regions, "sticky": p.sticky,
            "ab": p.ab, "shadow": p.shadow, "redact": p.redact,
            "cache_ttl": p.cache_ttl}


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


def model_names(mode: str | None = None) -> list[str]:
    """Models and the aliases that lead to one (what /v1/models lists); with `mode`, only
    those with a deployment of that mode (the playground's chat models)."""
    snap = catalog().snapshot()

    def served(routes: list[Route]) -> bool:
        return bool(routes) and (mode is None or any(r.mode == mode for r in routes))

    return sorted({m for m, routes in snap.routes.items() if served(routes)}
                  | {a for a in snap.aliases if served(routes_for(a))})
