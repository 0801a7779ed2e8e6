"""What the console lists about models and providers: the marketplace, model pages, the
providers table. Models come from the routing snapshot, so the page shows what is served, at
the prices billing uses."""
from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from gateway.extensions import db
from gateway.models import ModelPrice, Provider
from gateway.providers import model_catalogue
from gateway.services.accounting import pricing
from gateway.services.routing.catalog import catalog


@dataclass(frozen=True, slots=True)
class Offer:
    """One deployment of a model, as a page shows it (a Route without its credentials)."""
    id: int
    provider: str
    upstream_model: str
    region: str


@dataclass
class ModelEntry:
    """A public model name as the marketplace shows it, over all its deployments."""
    name: str
    modes: set = field(default_factory=set)
    providers: list = field(default_factory=list)
    capabilities: set = field(default_factory=set)
    input_per_1k: float | None = None       # the cheapest deployment's
    output_per_1k: float | None = None
    context_window: int | None = None       # the largest
    deployments: list[Offer] = field(default_factory=list)


def model_entries() -> dict[str, ModelEntry]:
    """Every served model (enabled deployment of an enabled provider), by name."""
    routes = catalog().snapshot().routes
    out: dict[str, ModelEntry] = {}
    for name in sorted(routes):
        e = out[name] = ModelEntry(name)
        for r in routes[name]:
            e.modes.add(r.mode)
            e.capabilities.update(r.capabilities or [r.mode])
            if r.provider not in e.providers:
                e.providers.append(r.provider)
            price = r.price()       # what billing charges: the deployment's own, else the table's
            if price and (e.input_per_1k is None or price[0] < e.input_per_1k):
                e.input_per_1k, e.output_per_1k = price[0], price[1]
            if r.context_window:
                e.context_window = max(e.context_window or 0, r.context_window)
            e.deployments.append(Offer(r.deployment_id, r.provider, r.target.model, r.region))
        if e.context_window is None:        # deployments made before the catalogue: its window, to show
            known = [i.context_window for o in e.deployments
                     if (i := model_catalogue.lookup(o.upstream_model, current_app.instance_path))
                     and i.context_window]
            e.context_window = max(known, default=None)
    return out


def per_million(per_1k: float | None) -> str:
    """A per-1K-token price as money per 1M tokens: $0.15, $2.50, $0.075; an em dash for none."""
    if per_1k is None:
        return "—"
    usd = per_1k * 1000
    if usd >= 1 or usd == 0:
        return f"${usd:,.2f}"
    text = f"{usd:.6f}".rstrip("0")
    return "$" + (text if len(text.split(".")[1]) >= 2 else f"{usd:.2f}")


def listed_prices(models) -> dict[str, tuple]:
    """genai-prices' list price of each model the price table does not price (what billing uses)."""
    book = pricing.price_book()
    return {m: price for m in models if (price := book.lookup(m)) is not None}


def provider_names() -> list[str]:
    """Providers that serve at least one model."""
    return sorted({r.provider for routes in catalog().snapshot().routes.values() for r in routes})


def search(entries: dict[str, ModelEntry], *, q: str = "", provider: str = "", capability: str = "",
           max_price: float | None = None, min_context: float | None = None,
           sort: str = "name") -> list[ModelEntry]:
    """The entries that match every filter given, by name, input price or context (largest first)."""
    q = q.lower()
    shown = [e for e in entries.values()
             if (not q or q in e.name.lower())
             and (not provider or provider in e.providers)
             and (not capability or capability in e.capabilities)
             and (max_price is None or (e.input_per_1k is not None and e.input_per_1k <= max_price))
             and (min_context is None or (e.context_window or 0) >= min_context)]
    if sort == "price":
        shown.sort(key=lambda e: (e.input_per_1k is None, e.input_per_1k or 0))
    elif sort == "context":
        shown.sort(key=lambda e: -(e.context_window or 0))
    return shown


def prices(models) -> dict[str, ModelPrice]:
    """The price table's rows for these model names."""
    return {p.model: p for p in db.session.scalars(select(ModelPrice).where(ModelPrice.model.in_(set(models))))}


def providers() -> list[Provider]:
    """Every provider with its deployments, enabled or not, by name."""
    return db.session.scalars(select(Provider).options(selectinload(Provider.deployments))
                              .order_by(Provider.name)).all()


def provider_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Provider))
