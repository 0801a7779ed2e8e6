"""Catalog writes shared by the console, the CLI and gateway.yaml: providers, deployments,
aliases, policies and prices. Each write commits and drops the caches that hold what it changed,
so no caller has to know which ones those are."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import select

from gateway import secrets
from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import Deployment, ModelPrice, Provider, utcnow
from gateway.providers import model_catalogue, registry, ssrf
from gateway.services.accounting import pricing
from gateway.services.admin import audit
# Aliases (with their history) and policies live in routing_rules; callers reach them here too.
from gateway.services.admin.routing_rules import (  # noqa: F401
    POLICY_FIELDS, alias_history, delete_alias, delete_policy, policy_names, record_pruned_alias, rollback_alias,
    save_policy, set_alias)
from gateway.services.api_request import MEDIA_MODES
from gateway.services.routing import probe
from gateway.services.routing.catalog import catalog

DEPLOYMENT_FIELDS = ("upstream_model", "mode", "weight", "enabled", "region", "input_per_1k", "output_per_1k",
                     "context_window", "capabilities", "rpm_limit", "tpm_limit", "unit_price", "price_unit")
MODES = ("chat", "embedding", *MEDIA_MODES)   # deployment modes the gateway serves; the catalogue knows more


def _commit() -> None:
    """Commit, and have this process's routing table reread the catalog."""
    db.session.commit()
    catalog().invalidate()


def save_provider(name: str, kind: str, *, base_url: str | None = None, api_key: str | None = None,
                  models: list[str] | None = None, region: str = "", options: dict | None = None,
                  embedding_models: list[str] | None = None, source: str = "cli",
                  exists_ok: bool = True, preset: str | None = None,
                  media_models: dict[str, list[str]] | None = None) -> Provider:
    """Create or update a provider by name and make sure each listed model has a deployment.
    Models may be given as `public=upstream` to expose an upstream model under another name;
    a model's mode comes from the model catalogue (embedding_models force embedding).
    `preset` (registry.PRESETS) fills in a vendor's URL and quirks; the kind is stored as given.
    `media_models`: mode (image, audio, moderation, rerank) -> models, for the kinds that have
    those APIs. With exists_ok=False an existing name is an error instead of an update (the console's create)."""
    kind = kind.strip().lower()
    if kind not in registry.KINDS:
        raise InvalidRequest(f"unknown provider kind '{kind}'; choose one of {', '.join(registry.KINDS)}",
                             param="kind")
    if not name.strip():
        raise InvalidRequest("a provider needs a name", param="name")
    provider = provider_named(name)
    if provider is not None and not exists_ok:
        raise InvalidRequest("A provider with this name exists already.", param="name")
    preset = (preset or "").strip().lower() or None
    try:
        spec = registry.spec_for(kind, preset)
    except ValueError as e:
        raise InvalidRequest(str(e), param="preset") from None
    region = (region or "").strip() or (provider.region if provider is not None else "")
    if (spec.regional_url and provider is not None and base_url
            and _is_regional_default(kind, base_url, provider.region)):
        base_url = None         # the stored default of the old region: follow the region given now
    if embedding_models and not spec.embeddings:
        raise InvalidRequest(f"{kind} providers serve chat models only here (Converse has no "
                             "embeddings); add embedding models to another provider",
                             param="embedding_models")
    try:
        base_url, options = registry.resolve_endpoint(kind, base_url, options, preset, region)
    except ValueError as e:
        param = "region" if spec.regional_url and not base_url else "base_url"
        raise InvalidRequest(str(e), param=param) from None
    try:
        ssrf.check_url(base_url, current_app.config["ALLOW_PRIVATE_UPSTREAMS"])
    except ValueError as e:
        raise InvalidRequest(f"base URL refused: {e}", param="base_url") from None
    if api_key is None:
        require_key_for(provider, base_url)
    for mode, names in (media_models or {}).items():
        if names:
            check_mode_for_kind(kind, mode)
    if provider is None:
        provider = Provider(name=name, kind=kind, source=source)
        db.session.add(provider)
    provider.kind, provider.base_url, provider.region = kind, base_url, region
    if options is not None:
        provider.options = options
    if api_key is not None:
        provider.api_key_enc = secrets.encrypt(api_key)
        provider.key_last4 = api_key[-4:] if len(api_key) >= 8 else ""
    db.session.flush()
    for mode, names in ((None, models or []), ("embedding", embedding_models or []),
                        *(media_models or {}).items()):
        for spec in names:
            public, _, upstream = spec.strip().partition("=")
            if public:
                _ensure_deployment(provider, public.strip(), (upstream or public).strip(), mode)
    _commit()
    return provider


def _is_regional_default(kind: str, base_url: str, region: str) -> bool:
    try:
        return base_url.strip().rstrip("/") == registry.regional_url(kind, region)
    except ValueError:
        return False


def catalogued(upstream: str) -> model_catalogue.ModelInfo | None:
    """The model catalogue's entry for an upstream model name (instance copy first)."""
    return model_catalogue.lookup(upstream, current_app.instance_path)


def _mode_of(info: model_catalogue.ModelInfo | None) -> str:
    """A model's mode by the catalogue, among those the gateway serves; else chat."""
    return info.mode if info is not None and info.mode in MODES else "chat"


def check_mode_for_kind(kind: str, mode: str) -> None:
    """Refuse a deployment mode the provider kind has no API for (anthropic has no images)."""
    if mode not in MODES:
        raise InvalidRequest(f"mode must be one of {', '.join(MODES)}", param="mode")
    if mode in MEDIA_MODES and registry.KINDS[kind].media is None:
        raise InvalidRequest(f"{kind} providers have no {mode} API: serve {mode} models from an "
                             "OpenAI-format provider (openai, azure, an OpenAI-compatible server).", param="mode")
    if mode == "embedding" and not registry.KINDS[kind].embeddings:
        raise InvalidRequest(f"{kind} providers serve chat models only here (Converse has no "
                             "embeddings); add embedding models to another provider", param="mode")


def _ensure_deployment(provider: Provider, model: str, upstream: str, mode: str | None) -> None:
    """Serve `model` as `upstream` in `mode` (None: the catalogue's); a new deployment takes its
    context window and capabilities from the catalogue."""
    info = catalogued(upstream)
    mode = mode or _mode_of(info)
    check_mode_for_kind(provider.kind, mode)
    for d in provider.deployments:
        if d.model == model:
            d.upstream_model, d.mode = upstream, mode
            return
    provider.deployments.append(Deployment(model=model, upstream_model=upstream, mode=mode,
                                           **_catalogue_fields(info, mode)))


def _catalogue_fields(info: model_catalogue.ModelInfo | None, mode: str) -> dict:
    """Context window and capabilities of a deployment the admin did not describe."""
    if info is None or info.mode != mode:
        return {}
    return {"context_window": info.context_window, "capabilities": list(info.capabilities) or None}


def _destination(url: str) -> tuple:
    """Where a base URL sends a key: scheme, host, port and path, spelled one way."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port, parts.path.rstrip("/"), parts.query


def require_key_for(provider: Provider | None, base_url: str) -> None:
    """A stored key only goes to the base URL it was saved with: sending it anywhere else
    takes the key again, so whoever can edit a provider cannot send its key to their own host."""
    if provider is None or not provider.api_key_enc:
        return
    if _destination(base_url) != _destination(provider.base_url):
        raise InvalidRequest(f"The base URL changes from {ssrf.display_url(provider.base_url)} to "
                             f"{ssrf.display_url(base_url)}: enter the provider's API key again to send it "
                             "there.", param="api_key", code="api_key_required")


def provider_named(name: str) -> Provider | None:
    """The provider called `name`, if there is one."""
    return db.session.scalar(select(Provider).where(Provider.name == name))


def find_provider(name: str) -> Provider:
    """The provider called `name`, or InvalidRequest."""
    provider = provider_named(name)
    if provider is None:
        raise InvalidRequest(f"no provider named '{name}'", param="provider")
    return provider


def set_provider_enabled(provider: Provider, enabled: bool) -> Provider:
    """Serve (or stop serving) every deployment of the provider."""
    provider.enabled = enabled
    _commit()
    return provider


def delete_provider(provider: Provider) -> None:
    """Remove the provider and its deployments."""
    db.session.delete(provider)
    _commit()


def check_connection(kind: str, base_url: str, api_key: str, models: list[str], *, model: str = "",
                     options: dict | None = None, stored: Provider | None = None, name: str = "",
                     actor=None, ip: str = "", region: str = "") -> probe.ProbeResult:
    """Probe a provider as a form describes it, with `model` or the first listed one. On an edit
    (`stored`) an empty key means the stored key, for the stored base URL only. Every attempt is
    audited with its URL (never the key) and counts against PROBE_LIMIT_PER_USER and _PER_IP."""
    options = dict(options or {})
    if stored is not None:
        options = {**(stored.options or {}), **options}
    model = model or (models[0].partition("=")[2] or models[0] if models else "")
    if not model and stored is not None and stored.deployments:
        model = stored.deployments[0].upstream_model
    region = region or (stored.region if stored is not None else "")
    try:
        url = registry.resolve_endpoint(kind.strip().lower(), base_url or None, options, region=region)[0]
    except (KeyError, ValueError):
        url = base_url
    row = audit.record(actor, "provider.test", name or (stored.name if stored else ""),
                       {"base_url": ssrf.display_url(url), "model": model}, ip=ip).id
    try:
        if _probes_over_limit(actor, ip):
            result = probe.ProbeResult("rate_limited", model)
        else:
            if not model:
                raise InvalidRequest("List at least one model to test with.", param="test_model")
            if stored is not None and not api_key:
                require_key_for(stored, url)
                api_key = secrets.decrypt(stored.api_key_enc)
            result = probe.probe_provider(kind, url, api_key, model, options, region)
    except InvalidRequest as e:
        audit.complete(row, outcome="invalid", error=e.message)
        raise
    audit.complete(row, outcome=result.outcome, ok=result.ok, latency_ms=round(result.latency_ms, 1))
    return result


def _probes_over_limit(actor, ip: str) -> bool:
    """More Test connections in the last minute than this user, or this address, may make
    (counting the attempt just audited, so concurrent ones cannot all slip through)."""
    since = utcnow() - timedelta(minutes=1)
    config = current_app.config
    actor_id = getattr(actor, "id", None)
    if actor_id is not None and audit.recent("provider.test", since, actor_id=actor_id) > config["PROBE_LIMIT_PER_USER"]:
        return True
    return bool(ip) and audit.recent("provider.test", since, ip=ip) > config["PROBE_LIMIT_PER_IP"]


def save_deployment(model: str, provider: str, upstream_model: str | None = None, *,
                    source: str | None = None, deployment_id: int | None = None, exists_ok: bool = True,
                    **fields) -> Deployment:
    """Create or update the deployment of `model` on `provider` serving `upstream_model`
    (by default the model's own name); only the fields given change. What a new deployment
    leaves unset (mode, context window, capabilities) comes from the model catalogue.
    With `deployment_id` that deployment is changed (its model, provider and upstream too);
    with exists_ok=False a deployment already serving the same is an error (the console's add)."""
    unknown = set(fields) - set(DEPLOYMENT_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown deployment field(s): {', '.join(sorted(unknown))}")
    model = (model or "").strip()
    if not model or len(model) > 200 or any(c.isspace() for c in model) or model.startswith("policy:"):
        raise InvalidRequest("A model name has 1 to 200 characters, no spaces, and does not start with "
                             "'policy:'.", param="model")
    p = find_provider(provider)
    upstream = (upstream_model or model).strip()
    if len(upstream) > 200:
        raise InvalidRequest("The upstream model name has at most 200 characters.", param="upstream_model")
    check_deployment_fields(fields)
    same = db.session.scalar(select(Deployment).where(
        Deployment.provider_id == p.id, Deployment.model == model, Deployment.upstream_model == upstream))
    d = same
    if deployment_id is not None:
        d = db.session.get(Deployment, deployment_id)
        if d is None:
            raise InvalidRequest(f"no deployment {deployment_id}", param="deployment")
        if same is not None and same.id != d.id:
            raise InvalidRequest(f"{p.name} already serves {model} as {upstream} (deployment {same.id}).",
                                 param="upstream_model")
        d.model, d.provider, d.upstream_model = model, p, upstream
    elif d is not None and not exists_ok:
        raise InvalidRequest(f"{p.name} already serves {model} as {upstream}: edit that deployment.",
                             param="upstream_model")
    if d is None:
        d = Deployment(model=model, provider=p, upstream_model=upstream, source=source or "cli")
        db.session.add(d)
    elif source:
        d.source = source
    info = catalogued(upstream)
    if fields.get("mode") is None and (d.id is None or "mode" in fields):
        fields["mode"] = d.mode if d.id is not None else _mode_of(info)    # as it was, or the catalogue's
    for name, value in _catalogue_fields(info, fields.get("mode", d.mode)).items():
        if fields.get(name, getattr(d, name)) is None:      # not set: the catalogue's
            fields[name] = value
    try:
        check_mode_for_kind(p.kind, fields.get("mode") or d.mode)   # also a deployment moved to another kind
    except InvalidRequest:
        db.session.rollback()
        raise
    caps = fields.get("capabilities")
    if caps is not None:
        fields["capabilities"] = sorted({str(c).strip().lower() for c in caps if str(c).strip()})
    for name, value in fields.items():
        setattr(d, name, value)
    _commit()
    return d


def check_deployment_fields(fields: dict) -> None:
    """Numbers in range before anything is written: weight 0 or more (0: fallback only), caps
    and context window 1 or more, prices 0 or more, region at most 64 characters."""
    def number(name: str, least: float, whole: bool, message: str) -> None:
        value = fields.get(name)
        if value is None:
            return
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= least
        if not ok or (whole and value != int(value)):
            raise InvalidRequest(message, param=name)
        if whole:
            fields[name] = int(value)

    number("weight", 0, True, "The weight is a whole number, 0 or more (0: used only as a fallback).")
    for name in ("rpm_limit", "tpm_limit"):
        number(name, 1, True, "A cap is a whole number of at least 1; leave it empty for none.")
    number("context_window", 1, True, "The context window is a number of tokens, at least 1.")
    for name in ("input_per_1k", "output_per_1k"):
        number(name, 0, False, "Enter a price of 0 or more.")
    check_unit_price(fields.get("unit_price"), fields.get("price_unit"))
    region = fields.get("region")
    if region is not None:
        if not isinstance(region, str) or len(region.strip()) > 64:
            raise InvalidRequest("A region has at most 64 characters.", param="region")
        fields["region"] = region.strip() or None
    caps = fields.get("capabilities")
    if caps is not None and (isinstance(caps, str) or not isinstance(caps, (list, tuple, set))):
        raise InvalidRequest("capabilities is a list", param="capabilities")


def check_unit_price(price: float | None, unit: str | None) -> None:
    """A media price is 0 or more, in one of pricing.PRICE_UNITS."""
    if price is not None and price < 0:
        raise InvalidRequest("Enter a price of 0 or more.", param="unit_price")
    if unit is not None and unit not in pricing.PRICE_UNITS:
        raise InvalidRequest(f"price_unit must be one of {', '.join(pricing.PRICE_UNITS)}", param="price_unit")


def delete_deployment(deployment: Deployment) -> None:
    """Stop serving and forget one deployment (its usage records keep their labels)."""
    db.session.delete(deployment)
    _commit()


def set_deployment_enabled(deployment: Deployment, enabled: bool) -> Deployment:
    """Expose (or hide) one deployment."""
    deployment.enabled = enabled
    _commit()
    return deployment


def expose(provider: Provider, listed: set[int], exposed: set[int]) -> None:
    """Of the provider's deployments in `listed`, expose those in `exposed` and hide the rest
    (the edit form's checkboxes); the others stay as they are."""
    for d in provider.deployments:
        if d.id in listed:
            d.enabled = d.id in exposed
    _commit()


def save_price(model: str, input_per_1k: float | None, output_per_1k: float | None = None,
               cached_input_per_1k: float | None = None) -> ModelPrice:
    """Set a model's price in USD per 1K tokens; billing and routing use it from the next request."""
    for name, value in (("input_per_1k", input_per_1k), ("output_per_1k", output_per_1k),
                        ("cached_input_per_1k", cached_input_per_1k)):
        if value is not None and value < 0:
            raise InvalidRequest("Enter a price of 0 or more.", param=name)
    if input_per_1k is None:
        raise InvalidRequest("The input price is required.", param="input_per_1k")
    row = db.session.scalar(select(ModelPrice).where(ModelPrice.model == model))
    if row is None:
        row = ModelPrice(model=model)
        db.session.add(row)
    row.input_per_1k, row.output_per_1k = input_per_1k, output_per_1k or 0.0
    row.cached_input_per_1k = cached_input_per_1k
    _commit()       # routes carry the table's prices (the cost strategy reads them)
    pricing.price_book().invalidate()
    return row
