"""What the console lists about models and providers: the marketplace, model pages, the
providers table. Models come from the routing snapshot, so the page shows what is served, at
the prices billing uses."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from flask import current_app
from sqlalchemy import func, not_, select
from sqlalchemy.orm import selectinload

from gateway import formatting
from gateway.errors import GatewayError
from gateway.extensions import db
from gateway.models import Deployment, ModelPrice, Provider
from gateway.providers import model_catalogue
from gateway.services.accounting import pricing
from gateway.services.routing import policies
from gateway.services.routing.catalog import catalog
from gateway.services.routing.health import deployment_status

# A card's status badge: deployment_status' states, summed over a model's deployments.
STATUS_LABELS = {"healthy": "healthy", "degraded": "degraded", "open": "circuit open", "disabled": "disabled",
                 "unknown": "no traffic yet"}
TOKEN_MODES = ("chat", "embedding")     # the others are priced per unit (image, second, ...)
UNIT_LABELS = {"image": "image", "second": "second", "minute": "minute", "1k_chars": "1K characters",
               "search_unit": "search unit", "request": "request"}


@dataclass(frozen=True, slots=True)
class Offer:
    """One deployment of a model, as a page shows it (a Route without its credentials)."""
    id: int
    provider: str
    upstream_model: str
    region: str
    enabled: bool = True
    price: tuple | None = None          # what billing charges: (USD per 1K input, per 1K output)
    unit_price: tuple | None = None     # media: (USD, price_unit)


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
    unit_price: float | None = None         # media: the cheapest deployment's USD per price_unit
    price_unit: str | None = None
    states: list[str] = field(default_factory=list)     # deployment_status' state of each deployment
    p95s: list[float] = field(default_factory=list)     # each deployment's p95 latency (ms), where known

    @property
    def badges(self) -> list[str]:
        """Modes first, then the capabilities the deployments declare."""
        return sorted(self.modes) + sorted(self.capabilities - self.modes)

    @property
    def status(self) -> str:
        """healthy, degraded (a deployment errs, is throttled or has its circuit open), open (every
        circuit open), disabled (no deployment is served) or unknown (no traffic seen yet)."""
        s = set(self.states)
        if not s or s == {"disabled"}:
            return "disabled"
        if s == {"open"}:
            return "open"
        if s & {"open", "degraded"}:
            return "degraded"
        return "healthy" if "healthy" in s else "unknown"

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

    @property
    def p95_text(self) -> str:
        """320 ms, or 320–900 ms when the deployments differ; an em dash before any traffic."""
        if not self.p95s:
            return "—"
        lo, hi = round(min(self.p95s)), round(max(self.p95s))
        return f"{lo:,} ms" if lo == hi else f"{lo:,}–{hi:,} ms"

    @property
    def unit_label(self) -> str:
        return UNIT_LABELS.get(self.price_unit or "", self.price_unit or "")


def model_entries(include_disabled: bool = False) -> dict[str, ModelEntry]:
    """Every served model (enabled deployment of an enabled provider), by name, with its
    deployments' live status and p95; `include_disabled` adds the models none of whose
    deployments is served (one query). One pass over the routing snapshot and the in-memory
    health statistics: no query per model."""
    routes = catalog().snapshot().routes
    out: dict[str, ModelEntry] = {}
    for name in sorted(routes):
        e = out[name] = ModelEntry(name)
        for r in routes[name]:
            tokens = r.mode in TOKEN_MODES
            # the snapshot's price: what billing charges (the deployment's own, else the table's), read once
            price = (r.input_per_1k or 0.0, r.output_per_1k or 0.0) if r.own_price or r.input_per_1k is not None else None
            _add(e, r.mode, r.provider, r.capabilities, r.context_window, price if tokens else None,
                 None if tokens else r.unit_price_of(), Offer(r.deployment_id, r.provider, r.target.model, r.region))
            health = deployment_status(r.deployment_id)
            e.states.append(health["state"])
            if health["p95_ms"] is not None:
                e.p95s.append(health["p95_ms"])
    if include_disabled:
        _add_disabled(out)
    for e in out.values():
        if e.context_window is None:        # deployments made before the catalogue: its window, to show
            known = [i.context_window for o in e.deployments
                     if (i := model_catalogue.lookup(o.upstream_model, current_app.instance_path))
                     and i.context_window]
            e.context_window = max(known, default=None)
    return dict(sorted(out.items()))


def _add(e: ModelEntry, mode: str, provider: str, capabilities, context_window: int | None,
         price: tuple | None, unit_price: tuple | None, offer: Offer) -> None:
    """Fold one deployment into its model's entry: the cheapest price, the largest window."""
    e.modes.add(mode)
    e.capabilities.update(capabilities or [mode])
    if provider not in e.providers:
        e.providers.append(provider)
    if price and (e.input_per_1k is None or price[0] < e.input_per_1k):
        e.input_per_1k, e.output_per_1k = price[0], price[1]
    if unit_price and (e.unit_price is None or unit_price[0] < e.unit_price):
        e.unit_price, e.price_unit = unit_price
    if context_window:
        e.context_window = max(e.context_window or 0, context_window)
    e.deployments.append(replace(offer, price=price and tuple(price[:2]), unit_price=unit_price))


def _add_disabled(out: dict[str, ModelEntry]) -> None:
    """The models whose every deployment is disabled (or whose providers are), as `disabled`."""
    book = pricing.price_book()
    rows = db.session.scalars(select(Deployment).join(Provider)
                              .where(not_(Deployment.enabled & Provider.enabled))
                              .options(selectinload(Deployment.provider))).all()
    for d in rows:
        if d.model in out and "disabled" not in out[d.model].states:
            continue        # served by another deployment: the card shows the served ones
        e = out.setdefault(d.model, ModelEntry(d.model))
        price = unit = None
        if d.mode in TOKEN_MODES:
            own = d.input_per_1k is not None or d.output_per_1k is not None
            price = (d.input_per_1k or 0.0, d.output_per_1k or 0.0, None) if own else book.lookup(d.upstream_model)
        else:
            own = d.unit_price is not None and d.price_unit
            unit = (d.unit_price, d.price_unit) if own else book.unit_lookup(d.upstream_model)
        _add(e, d.mode, d.provider.name, d.capabilities, d.context_window, price, unit,
             Offer(d.id, d.provider.name, d.upstream_model, d.region or d.provider.region or "", enabled=False))
        e.states.append("disabled")


def per_million(per_1k: float | None) -> str:
    """A per-1K-token price as money per 1M tokens: $0.15, $2.50, $0.075; an em dash for none."""
    return formatting.price(None if per_1k is None else per_1k * 1000)


def chat_choices() -> tuple[list[str], list[str]]:
    """What the playground offers: the models and aliases with a chat deployment, and the
    enabled policies that lead to one (never embedding, image, audio, moderation or rerank)."""
    snap = catalog().snapshot()

    def chats(name: str) -> bool:
        try:
            return bool(policies.pool(name, snap, "chat")[0])
        except GatewayError:        # an alias of a policy that no longer exists
            return False
    return (sorted(m for m in {*snap.routes, *snap.aliases} if chats(m)),
            sorted(p for p in snap.policies if chats(policies.POLICY_PREFIX + p)))


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
             and (not capability or capability in e.capabilities or capability in e.modes)
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
