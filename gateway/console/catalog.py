"""Model marketplace, model detail and prices, and BYOK providers and their deployments."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from flask import abort, render_template, request, url_for
from sqlalchemy import case, func, select
from sqlalchemy.orm import selectinload

from gateway.auth.rbac import ADMIN, READ, require_role
from gateway.console import bp
from gateway.console.scope import base_url, log_action
from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.htmx import navigate, render
from gateway.models import Deployment, ModelPrice, Provider, UsageRecord, utcnow
from gateway import secrets
from gateway.services.accounting import pricing
from gateway.services.reporting import charts
from gateway.services.admin import catalog_admin
from gateway.services.routing import catalog, probe


@dataclass
class ModelEntry:
    """A public model name as the marketplace shows it, over all its deployments."""
    name: str
    modes: set = field(default_factory=set)
    providers: list = field(default_factory=list)
    capabilities: set = field(default_factory=set)
    input_per_1k: float | None = None
    output_per_1k: float | None = None
    context_window: int | None = None
    deployments: list = field(default_factory=list)


def model_entries() -> dict[str, ModelEntry]:
    """Every enabled model of an enabled provider, with price, capabilities and deployments."""
    rows = db.session.scalars(select(Deployment).join(Provider)
                              .where(Deployment.enabled, Provider.enabled)
                              .options(selectinload(Deployment.provider))
                              .order_by(Deployment.model)).all()
    book = pricing.price_book()
    out: dict[str, ModelEntry] = {}
    for d in rows:
        e = out.setdefault(d.model, ModelEntry(d.model))
        e.modes.add(d.mode)
        e.capabilities.update(getattr(d, "capabilities", None) or [d.mode])
        if d.provider.name not in e.providers:
            e.providers.append(d.provider.name)
        price = _deployment_price(d) or book.lookup(d.upstream_model) or book.lookup(d.model)
        if price and (e.input_per_1k is None or price[0] < e.input_per_1k):
            e.input_per_1k, e.output_per_1k = price[0], price[1]
        ctx = getattr(d, "context_window", None)
        if ctx:
            e.context_window = max(e.context_window or 0, ctx)
        e.deployments.append(d)
    return out


def _deployment_price(d: Deployment):
    """A per-deployment price when the routing work added one, else None."""
    inp, out = getattr(d, "input_per_1k", None), getattr(d, "output_per_1k", None)
    return (inp, out or 0.0, None) if inp is not None else None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


@bp.get("/models")
@require_role(*READ)
def marketplace():
    entries = model_entries()
    a = request.args
    q, provider, capability = a.get("q", "").strip().lower(), a.get("provider", ""), a.get("capability", "")
    max_price, min_ctx = _float(a.get("max_price")), _float(a.get("min_context"))
    shown = [e for e in entries.values()
             if (not q or q in e.name.lower())
             and (not provider or provider in e.providers)
             and (not capability or capability in e.capabilities)
             and (max_price is None or (e.input_per_1k is not None and e.input_per_1k <= max_price))
             and (min_ctx is None or (e.context_window or 0) >= min_ctx)]
    sort = a.get("sort", "name")
    if sort == "price":
        shown.sort(key=lambda e: (e.input_per_1k is None, e.input_per_1k or 0))
    elif sort == "context":
        shown.sort(key=lambda e: -(e.context_window or 0))
    providers = sorted({p for e in entries.values() for p in e.providers})
    capabilities = sorted({c for e in entries.values() for c in e.capabilities})
    return render("console/marketplace.html", "console/_model_cards.html", models=shown,
                  providers=providers, capabilities=capabilities, args=a, total=len(entries))


def deployment_health(d: Deployment) -> dict:
    """Live status from the router when it exists, else from the last hour of usage."""
    try:
        from gateway.services.routing.plan import deployment_status
        status = dict(deployment_status(d.id))
        status.setdefault("state", "unknown")
        return status
    except (ImportError, AttributeError):
        pass
    except Exception:       # the router's status is a nice-to-have on this page
        pass
    r = UsageRecord
    since = utcnow() - timedelta(hours=1)
    n, errors = db.session.execute(
        select(func.count(), func.coalesce(func.sum(case((r.status >= 500, 1), else_=0)), 0))
        .where(r.created_at >= since, r.provider_id == d.provider_id,
               r.upstream_model == d.upstream_model)).one()
    p95 = None
    if n:
        ms = db.session.scalars(select(r.latency_ms).where(
            r.created_at >= since, r.provider_id == d.provider_id, r.upstream_model == d.upstream_model,
            r.status < 400).order_by(r.latency_ms.desc()).limit(max(1, n // 20))).all()
        p95 = ms[-1] if ms else None
    rate = errors / n if n else None
    state = "unknown" if not n else ("healthy" if rate < 0.2 else "degraded")
    return {"state": state, "p95_ms": p95, "error_rate": rate, "requests": n}


@bp.get("/models/<path:name>")
@require_role(*READ)
def model_detail(name: str):
    entry = model_entries().get(name)
    if entry is None:
        abort(404)
    prices = {p.model: p for p in db.session.scalars(select(ModelPrice).where(
        ModelPrice.model.in_({d.upstream_model for d in entry.deployments} | {name})))}
    health = {d.id: deployment_health(d) for d in entry.deployments}
    return render_template("console/model_detail.html", model=entry, prices=prices, health=health,
                           base_url=base_url(), errors={})


@bp.post("/models/<path:name>/price")
@require_role(*ADMIN)
def price_update(name: str):
    model = request.form.get("model", "").strip()[:200] or name
    values, errors = {}, {}
    for field_name in ("input_per_1k", "output_per_1k", "cached_input_per_1k"):
        raw = request.form.get(field_name, "").strip()
        values[field_name] = _float(raw)
        if raw and values[field_name] is None:
            errors[field_name] = "Enter a price of 0 or more."
    row = None
    if not errors:
        try:
            row = catalog_admin.save_price(model, **values)
        except InvalidRequest as e:
            db.session.rollback()
            errors[e.param] = e.message
    if errors:
        return render_template("console/_price_form.html", name=name, price=db.session.scalar(select(ModelPrice).where(ModelPrice.model == model)),
                               model_name=model, errors=errors, saved=False)
    log_action("price.update", model, **values)
    return render_template("console/_price_form.html", name=name, price=row, model_name=model,
                           errors={}, saved=True)


# Providers

@bp.get("/providers")
@require_role("admin", "viewer")
def providers_index():
    rows = db.session.scalars(select(Provider).options(selectinload(Provider.deployments))
                              .order_by(Provider.name)).all()
    return render_template("console/providers.html", providers=rows)


@bp.get("/providers/new")
@require_role(*ADMIN)
def provider_new():
    return render_template("console/provider_form.html", provider=None, form={}, errors={},
                           kinds=catalog.KINDS, defaults=catalog.DEFAULT_BASE_URLS)


def _split_models(text: str) -> list[str]:
    return [m.strip() for part in text.splitlines() for m in part.split(",") if m.strip()]


def _form() -> dict:
    f = request.form
    return {"name": f.get("name", "").strip()[:100], "kind": f.get("kind", "openai"),
            "base_url": f.get("base_url", "").strip()[:500], "region": f.get("region", "").strip()[:64],
            "api_key": f.get("api_key", "").strip(), "api_version": f.get("api_version", "").strip()[:32],
            "models": f.get("models", ""), "embedding_models": f.get("embedding_models", "")}


def _save(form: dict, provider: Provider | None):
    """Save through the catalog service; returns (provider, errors by field)."""
    errors = {}
    if not form["name"]:
        errors["name"] = "A provider needs a name."
    elif provider is None and db.session.scalar(select(Provider).where(Provider.name == form["name"])):
        errors["name"] = "A provider with this name exists already."
    if provider is None and not form["api_key"] and form["kind"] not in ("mock",):
        errors["api_key"] = "Enter the provider's API key."
    if errors:
        return None, errors
    options = dict(provider.options or {}) if provider else {}
    if form["api_version"]:
        options["api_version"] = form["api_version"]
    try:
        saved = catalog_admin.save_provider(
            form["name"], form["kind"], base_url=form["base_url"] or None,
            api_key=form["api_key"] or None,        # empty on edit: keep the stored key
            models=_split_models(form["models"]), embedding_models=_split_models(form["embedding_models"]),
            region=form["region"], options=options or None, source="console")
    except InvalidRequest as e:
        db.session.rollback()
        return None, {e.param or "name": e.message}
    return saved, {}


@bp.post("/providers")
@require_role(*ADMIN)
def provider_create():
    form = _form()
    provider, errors = _save(form, None)
    if errors:
        form.pop("api_key", None)       # never echo a key back into the page
        return render_template("console/provider_form.html", provider=None, form=form, errors=errors,
                               kinds=catalog.KINDS, defaults=catalog.DEFAULT_BASE_URLS), 422
    log_action("provider.create", provider.name, kind=provider.kind, base_url=provider.base_url,
               region=provider.region, models=[d.model for d in provider.deployments])
    return navigate(url_for("console.provider_edit", provider_id=provider.id, created=1))


@bp.get("/providers/<int:provider_id>/edit")
@require_role(*ADMIN)
def provider_edit(provider_id: int):
    p = db.get_or_404(Provider, provider_id)
    form = {"name": p.name, "kind": p.kind, "base_url": p.base_url, "region": p.region,
            "api_version": (p.options or {}).get("api_version", "")}
    return render_template("console/provider_form.html", provider=p, form=form, errors={},
                           kinds=catalog.KINDS, defaults=catalog.DEFAULT_BASE_URLS,
                           created=request.args.get("created"))


@bp.post("/providers/<int:provider_id>")
@require_role(*ADMIN)
def provider_update(provider_id: int):
    p = db.get_or_404(Provider, provider_id)
    form = _form()
    form["name"] = p.name           # the name is the provider's identity; not renamed here
    key_changed = bool(form["api_key"])
    saved, errors = _save(form, p)
    if errors:
        form.pop("api_key", None)
        return render_template("console/provider_form.html", provider=p, form=form, errors=errors,
                               kinds=catalog.KINDS, defaults=catalog.DEFAULT_BASE_URLS), 422
    exposed = set(request.form.getlist("expose"))
    listed = set(request.form.getlist("listed"))
    catalog_admin.expose(saved, {int(i) for i in listed if i.isdigit()}, {int(i) for i in exposed if i.isdigit()})
    log_action("provider.update", saved.name, kind=saved.kind, base_url=saved.base_url, region=saved.region,
               key_changed=key_changed, exposed=sorted(d.model for d in saved.deployments if d.enabled))
    return navigate(url_for("console.providers_index"))


@bp.post("/providers/<int:provider_id>/toggle")
@require_role(*ADMIN)
def provider_toggle(provider_id: int):
    p = db.get_or_404(Provider, provider_id)
    catalog_admin.set_provider_enabled(p, not p.enabled)
    log_action("provider.enable" if p.enabled else "provider.disable", p.name)
    return navigate(url_for("console.providers_index"))


@bp.post("/providers/<int:provider_id>/delete")
@require_role(*ADMIN)
def provider_delete(provider_id: int):
    p = db.get_or_404(Provider, provider_id)
    name = p.name
    catalog_admin.delete_provider(p)
    log_action("provider.delete", name)
    return navigate(url_for("console.providers_index"))


@bp.post("/providers/test")
@require_role(*ADMIN)
def provider_test():
    """Probe the provider as the form describes it; an empty key on edit uses the stored one."""
    form = _form()
    key = form["api_key"]
    options = {"api_version": form["api_version"]} if form["api_version"] else {}
    stored = db.session.get(Provider, int(request.form["provider_id"])) if request.form.get("provider_id", "").isdigit() else None
    if stored is not None:
        key = key or secrets.decrypt(stored.api_key_enc)
        options = {**(stored.options or {}), **options}
    models = _split_models(form["models"])
    model = request.form.get("test_model", "").strip() or (models[0].partition("=")[2] or models[0] if models else "")
    if not model and stored is not None and stored.deployments:
        model = stored.deployments[0].upstream_model
    if not model:
        return render_template("console/_provider_test.html", result=None,
                               error="List at least one model to test with.")
    result = probe.probe_provider(form["kind"], form["base_url"], key, model, options)
    log_action("provider.test", form["name"] or (stored.name if stored else ""), model=model, ok=result.ok,
               latency_ms=round(result.latency_ms, 1))
    return render_template("console/_provider_test.html", result=result, error=None)


@bp.post("/deployments/<int:deployment_id>/toggle")
@require_role(*ADMIN)
def deployment_toggle(deployment_id: int):
    d = db.get_or_404(Deployment, deployment_id)
    catalog_admin.set_deployment_enabled(d, not d.enabled)
    log_action("deployment.expose" if d.enabled else "deployment.hide", f"{d.provider.name}/{d.model}")
    return navigate(url_for("console.provider_edit", provider_id=d.provider_id))
