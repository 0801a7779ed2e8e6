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
from gateway.services import secrets

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


class Catalog:
    """model -> routes, rebuilt from the database at most every `ttl` seconds."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.routes: dict[str, list[Route]] = {}
        self.loaded_at = float("-inf")
        self.lock = threading.Lock()

    def table(self) -> dict[str, list[Route]]:
        if time.monotonic() - self.loaded_at < self.ttl:
            return self.routes
        with self.lock:
            if time.monotonic() - self.loaded_at >= self.ttl:
                try:
                    self.routes = _load_routes()
                except Exception:
                    db.session.rollback()
                    if self.loaded_at == float("-inf"):
                        raise
                    current_app.logger.warning("catalog reload failed; serving the last one", exc_info=True)
                finally:
                    db.session.remove()
                self.loaded_at = time.monotonic()
        return self.routes

    def invalidate(self) -> None:
        self.loaded_at = float("-inf")


def _load_routes() -> dict[str, list[Route]]:
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
        table.setdefault(d.model, []).append(Route(d.id, d.model, d.mode, p.id, p.name, p.kind,
                                                   p.region, max(d.weight, 0), target))
    return table


def catalog() -> Catalog:
    app = current_app._get_current_object()
    if "catalog" not in app.extensions:
        app.extensions["catalog"] = Catalog(app.config["CATALOG_CACHE_SECONDS"])
    return app.extensions["catalog"]


def routes_for(model: str) -> list[Route]:
    return catalog().table().get(model, [])


def model_names() -> list[str]:
    return sorted(catalog().table())


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
