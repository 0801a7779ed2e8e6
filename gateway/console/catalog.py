"""Model marketplace, model detail and prices, and BYOK providers and their deployments."""
from __future__ import annotations

from flask import abort, render_template, request, url_for
from flask_login import current_user

from gateway.auth.rbac import ADMIN, READ, SEE_ALL, require_role
from gateway.auth.security import client_ip
from gateway.console import bp
from gateway.console.scope import base_url, done, log_action
from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.formatting import plain, price
from gateway.htmx import render
from gateway.models import Deployment, Provider
from gateway.providers import registry
from gateway.services.admin import catalog_admin
from gateway.services.api_request import MEDIA_MODES
from gateway.services.reporting import marketplace as market
from gateway.services.routing.health import deployment_status


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


bp.add_app_template_filter(market.per_million, "per_million")
bp.add_app_template_filter(price, "price")      # a unit price: $0.015 / 1K characters
bp.add_app_template_filter(plain, "plain")      # a number in a form field: 0.000075, never 7.5e-05


def _admin() -> bool:
    return current_user.role == "admin"


@bp.get("/models")
@require_role(*READ)
def marketplace():
    entries = market.model_entries(include_disabled=_admin())      # admins also see what they switched off
    a = request.args
    per_1m = _float(a.get("max_per_1m"))            # the form asks per 1M tokens, as the cards show prices
    max_price = per_1m / 1000 if per_1m is not None else _float(a.get("max_price"))     # max_price: per 1K
    shown = market.search(entries, q=a.get("q", "").strip(), provider=a.get("provider", ""),
                          capability=a.get("capability", ""), max_price=max_price,
                          min_context=_float(a.get("min_context")), sort=a.get("sort", "name"))
    providers = sorted({p for e in entries.values() for p in e.providers})
    capabilities = sorted({c for e in entries.values() for c in e.badges})
    return render("console/marketplace.html", "console/_model_cards.html", models=shown,
                  providers=providers, capabilities=capabilities, args=a, total=len(entries))


@bp.get("/models/<path:name>")
@require_role(*READ)
def model_detail(name: str):
    entry = market.model_entries(include_disabled=_admin()).get(name)
    if entry is None:
        abort(404)
    upstream = {d.upstream_model for d in entry.deployments} | {name}
    prices = market.prices(upstream)
    listed = market.listed_prices(sorted(m for m in upstream if m not in prices))
    health = {d.id: deployment_status(d.id) if d.enabled else {"state": "disabled", "p95_ms": None, "error_rate": None}
              for d in entry.deployments}
    return render_template("console/model_detail.html", model=entry, prices=prices, listed=listed,
                           health=health, base_url=base_url(), errors={})


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
            errors[e.param] = e.message
    if errors:
        return render_template("console/_price_form.html", name=name, price=market.prices([model]).get(model),
                               model_name=model, errors=errors, saved=False)
    log_action("price.update", model, **values)
    return render_template("console/_price_form.html", name=name, price=row, model_name=model,
                           errors={}, saved=True)


@bp.get("/providers")
@require_role(*SEE_ALL)
def providers_index():
    return render_template("console/providers.html", providers=market.providers())


@bp.get("/providers/new")
@require_role(*ADMIN)
def provider_new():
    return render_template("console/provider_form.html", provider=None, form={}, errors={},
                           **_kind_choices())


def _kind_choices() -> dict:
    """What the provider form's kind select shows: kinds, presets, their URLs and models."""
    return {"kinds": registry.KINDS, "defaults": registry.DEFAULT_BASE_URLS,
            "preset_models": {name: list(spec.models) for name, spec in registry.PRESETS.items()}}


def _split_models(text: str) -> list[str]:
    return [m.strip() for part in text.splitlines() for m in part.split(",") if m.strip()]


def _form() -> dict:
    f = request.form
    return {"name": f.get("name", "").strip()[:100], "kind": f.get("kind", "openai"),
            "base_url": f.get("base_url", "").strip()[:500], "region": f.get("region", "").strip()[:64],
            "api_key": f.get("api_key", "").strip(), "api_version": f.get("api_version", "").strip()[:32],
            "models": f.get("models", ""), "embedding_models": f.get("embedding_models", ""),
            **{f"{m}_models": f.get(f"{m}_models", "") for m in MEDIA_MODES}}


def _save(form: dict, provider: Provider | None):
    """Save through the catalog service; returns (provider, errors by field)."""
    kind = registry.KINDS.get(form["kind"])
    if provider is None and not form["api_key"] and (kind is None or kind.needs_key):
        return None, {"api_key": "Enter the provider's API key."}     # the CLI may omit it; the console asks
    options = dict(provider.options or {}) if provider else {}
    if form["api_version"]:
        options["api_version"] = form["api_version"]
    try:
        saved = catalog_admin.save_provider(
            form["name"], form["kind"], base_url=form["base_url"] or None,
            api_key=form["api_key"] or None,        # empty on edit: keep the stored key
            models=_split_models(form["models"]), embedding_models=_split_models(form["embedding_models"]),
            region=form["region"], options=options or None, source="console", exists_ok=provider is not None,
            media_models={m: _split_models(form[f"{m}_models"]) for m in MEDIA_MODES})
    except InvalidRequest as e:
        return None, {e.param or "name": e.message}
    return saved, {}


def _ids(name: str) -> set[int]:
    return {int(i) for i in request.form.getlist(name) if i.isdigit()}


@bp.post("/providers")
@require_role(*ADMIN)
def provider_create():
    form = _form()
    provider, errors = _save(form, None)
    if errors:
        form.pop("api_key", None)       # never echo a key back into the page
        return render_template("console/provider_form.html", provider=None, form=form, errors=errors,
                               **_kind_choices()), 422
    return done("provider.create", provider.name, url_for("console.provider_edit", provider_id=provider.id, created=1),
                kind=provider.kind, base_url=provider.base_url, region=provider.region,
                models=[d.model for d in provider.deployments])


@bp.get("/providers/<int:provider_id>/edit")
@require_role(*ADMIN)
def provider_edit(provider_id: int):
    p = db.get_or_404(Provider, provider_id)
    form = {"name": p.name, "kind": p.kind, "base_url": p.base_url, "region": p.region,
            "api_version": (p.options or {}).get("api_version", "")}
    return render_template("console/provider_form.html", provider=p, form=form, errors={},
                           **_kind_choices(),
                           created=request.args.get("created"))


@bp.post("/providers/<int:provider_id>")
@require_role(*ADMIN)
def provider_update(provider_id: int):
    p = db.get_or_404(Provider, provider_id)
    form = _form()
    form["name"] = p.name           # the name is the provider's identity; not renamed here
    key_changed, old_url = bool(form["api_key"]), p.base_url
    saved, errors = _save(form, p)
    if errors:
        form.pop("api_key", None)
        return render_template("console/provider_form.html", provider=p, form=form, errors=errors,
                               **_kind_choices()), 422
    catalog_admin.expose(saved, _ids("listed"), _ids("expose"))
    return done("provider.update", saved.name, url_for("console.providers_index"), kind=saved.kind,
                base_url=saved.base_url, region=saved.region, key_changed=key_changed,
                **({"previous_base_url": old_url} if old_url != saved.base_url else {}),
                exposed=sorted(d.model for d in saved.deployments if d.enabled))


@bp.post("/providers/<int:provider_id>/toggle")
@require_role(*ADMIN)
def provider_toggle(provider_id: int):
    p = db.get_or_404(Provider, provider_id)
    catalog_admin.set_provider_enabled(p, not p.enabled)
    return done("provider.enable" if p.enabled else "provider.disable", p.name, url_for("console.providers_index"),
                base_url=p.base_url)


@bp.post("/providers/<int:provider_id>/delete")
@require_role(*ADMIN)
def provider_delete(provider_id: int):
    p = db.get_or_404(Provider, provider_id)
    name, details = p.name, {"kind": p.kind, "base_url": p.base_url, "models": sorted(d.model for d in p.deployments)}
    catalog_admin.delete_provider(p)
    return done("provider.delete", name, url_for("console.providers_index"), **details)


@bp.post("/providers/test")
@require_role(*ADMIN)
def provider_test():
    """Probe the provider as the form describes it; an empty key on edit uses the stored one,
    for the stored base URL only. The service audits the attempt and rate-limits it."""
    form = _form()
    pid = request.form.get("provider_id", "")
    stored = db.get_or_404(Provider, int(pid)) if pid.isdigit() else None
    try:
        result = catalog_admin.check_connection(
            form["kind"], form["base_url"], form["api_key"], _split_models(form["models"]),
            model=request.form.get("test_model", "").strip(), stored=stored, name=form["name"],
            options={"api_version": form["api_version"]} if form["api_version"] else None,
            actor=current_user._get_current_object(), ip=client_ip(), region=form["region"])
    except InvalidRequest as e:
        return render_template("console/_provider_test.html", result=None, error=e.message,
                               field=(e.param or "").replace("_", "-"))
    return render_template("console/_provider_test.html", result=result, error=None, field=None)


@bp.post("/deployments/<int:deployment_id>/toggle")
@require_role(*ADMIN)
def deployment_toggle(deployment_id: int):
    d = db.get_or_404(Deployment, deployment_id)
    catalog_admin.set_deployment_enabled(d, not d.enabled)
    return done("deployment.expose" if d.enabled else "deployment.hide", f"{d.provider.name}/{d.model}",
                url_for("console.provider_edit", provider_id=d.provider_id))
