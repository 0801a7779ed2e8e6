"""`gateway providers|deployments|aliases|policies ...`: the routing catalogue."""
from __future__ import annotations

import os

import click
from sqlalchemy import select

from gateway import formatting
from gateway.cli import (audited, command, confirm, echo_row, given, list_command, options, os_user, split_csv,
                         yes_option)
from gateway.extensions import db
from gateway.models import Alias, Deployment, Policy, Provider
from gateway.providers import registry
from gateway.services.accounting import keys, pricing, redaction
from gateway.services.admin import catalog_admin
from gateway.services.routing.health import deployment_status

providers_cli = click.Group("providers", help="Upstream providers (BYOK).")
deployments_cli = click.Group("deployments", help="Deployments: a provider serving a public model name.")
aliases_cli = click.Group("aliases", help="Model aliases: stable names pointing at a model or policy:NAME.")
policies_cli = click.Group(
    "policies", help="Routing policies (built in: cost-, latency-, throughput-, reliability-optimized).")
COMMANDS = (providers_cli, deployments_cli, aliases_cli, policies_cli)


@command(providers_cli, "add")
@click.option("--name", required=True)
@click.option("--kind", required=True,
              help="openai, azure, anthropic, gemini, bedrock, mock, or a preset (see `providers presets`)")
@click.option("--preset", help="an OpenAI-compatible vendor's URL and quirks, with --kind openai")
@click.option("--base-url", help="as the vendor's SDK takes it, e.g. https://api.openai.com/v1")
@click.option("--api-key", help="stored encrypted; read from $PROVIDER_API_KEY when omitted; "
              "bedrock: ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN] or a Bedrock API key")
@click.option("--models", help="models to expose, comma-separated; public=upstream renames; "
                               "the model catalogue tells chat from embedding")
@click.option("--embedding-models", help="embedding models to expose, comma-separated")
@click.option("--image-models", help="image generation models, comma-separated (OpenAI-format kinds)")
@click.option("--audio-models", help="transcription and speech models, e.g. whisper-1,tts-1")
@click.option("--moderation-models", help="moderation models, comma-separated")
@click.option("--rerank-models", help="rerank models ({base}/rerank), comma-separated")
@click.option("--region", default="", help="for routing constraints; bedrock: the AWS region, "
              "which also builds the endpoint URL")
@click.option("--api-version", help="Azure OpenAI api-version")
def providers_add(name, kind, preset, base_url, api_key, models, embedding_models, image_models, audio_models,
                  moderation_models, rerank_models, region, api_version):
    """Add a provider, or update the one with this name (idempotent)."""
    api_key = api_key if api_key is not None else os.environ.get("PROVIDER_API_KEY")
    existed = catalog_admin.provider_named(name) is not None
    media = {"image": split_csv(image_models), "audio": split_csv(audio_models),
             "moderation": split_csv(moderation_models), "rerank": split_csv(rerank_models)}
    p = catalog_admin.save_provider(name, kind, base_url=base_url, api_key=api_key, models=split_csv(models),
                              embedding_models=split_csv(embedding_models), region=region, preset=preset,
                              options={"api_version": api_version} if api_version else None,
                              media_models={m: names for m, names in media.items() if names})
    served = sorted(d.model for d in p.deployments)
    audited("provider.update" if existed else "provider.create", p.name, kind=p.kind, base_url=p.base_url,
            region=p.region, models=served, key_changed=api_key is not None)
    click.echo(f"provider {p.name} ({p.kind}) {p.base_url} models: {', '.join(served) or 'none'}")


@command(providers_cli, "presets")
def providers_presets():
    """The OpenAI-compatible vendor presets: name, base URL, known models."""
    for name, spec in registry.PRESETS.items():
        echo_row((name, spec.label, spec.default_base_url or "(enter the URL)",
                  "key required" if spec.needs_key else "key optional", ",".join(spec.models) or "-"))


@command(providers_cli, "delete")
@click.argument("name")
@yes_option
def providers_delete(name, yes):
    """Remove the provider NAME and its deployments."""
    p = catalog_admin.find_provider(name)
    served = sorted(d.model for d in p.deployments)
    confirm(yes, f"Delete provider {p.name} ({p.base_url}) and its {len(served)} deployment(s)?")
    kind, base_url, declared = p.kind, p.base_url, p.source == "config"
    catalog_admin.delete_provider(p)
    audited("provider.delete", name, kind=kind, base_url=base_url, models=served)
    click.echo(f"deleted provider {name}"
               + ("; gateway.yaml declares it, so the next apply brings it back" if declared else ""))


@list_command(providers_cli, Provider, Provider.name)
def _provider_row(p) -> tuple:
    key = f"…{p.key_last4}" if p.key_last4 else ("set" if p.api_key_enc else "none")
    return (p.name, p.kind, p.base_url, f"key {key}", ",".join(sorted(d.model for d in p.deployments)),
            "enabled" if p.enabled else "disabled")


_deployment_options = options(
    click.option("--upstream", help="the provider's model name (default: MODEL)"),
    click.option("--weight", type=int), click.option("--region"),
    click.option("--input-price", type=float, help="USD per 1K input tokens"),
    click.option("--output-price", type=float, help="USD per 1K output tokens"),
    click.option("--context-window", type=int),
    click.option("--capabilities", help="tools, vision, json, audio, embeddings"),
    click.option("--rpm", type=int, help="requests per minute cap"),
    click.option("--tpm", type=int, help="tokens per minute cap"),
    click.option("--enabled/--disabled", default=None),
    click.option("--mode", type=click.Choice(list(catalog_admin.MODES))),
    click.option("--unit-price", type=float, help="media: USD per --price-unit (image, second, 1K characters, ...)"),
    click.option("--price-unit", type=click.Choice(list(pricing.PRICE_UNITS))),
)


def _save_deployment(action, model, provider, upstream, deployment_id=None, **o):
    fields = given(weight=o["weight"], region=o["region"], input_per_1k=o["input_price"],
                   output_per_1k=o["output_price"], context_window=o["context_window"],
                   capabilities=split_csv(o["capabilities"]), rpm_limit=o["rpm"], tpm_limit=o["tpm"],
                   enabled=o["enabled"], mode=o["mode"], unit_price=o["unit_price"],
                   price_unit=o["price_unit"])
    d = catalog_admin.save_deployment(model, provider, upstream, deployment_id=deployment_id, **fields)
    audited(action, f"{provider}/{d.model}", deployment_id=d.id, upstream_model=d.upstream_model, **fields)
    click.echo(f"deployment {d.id}: {d.model} -> {provider}/{d.upstream_model}")


@command(deployments_cli, "add")
@click.argument("model")
@click.argument("provider")
@_deployment_options
def deployments_add(model, provider, upstream, **o):
    """Serve MODEL from PROVIDER (created or updated)."""
    _save_deployment("deployment.save", model, provider, upstream, **o)


@command(deployments_cli, "update")
@click.argument("deployment_id", type=int)
@_deployment_options
def deployments_update(deployment_id, upstream, **o):
    """Change a deployment by id; options not given keep their value."""
    d = db.session.get(Deployment, deployment_id)
    if d is None:
        raise click.ClickException(f"no deployment {deployment_id}")
    _save_deployment("deployment.update", d.model, d.provider.name, upstream or d.upstream_model,
                     deployment_id=d.id, **o)


@command(deployments_cli, "delete")
@click.argument("deployment_id", type=int)
@yes_option
def deployments_delete(deployment_id, yes):
    """Remove a deployment by id."""
    d = db.session.get(Deployment, deployment_id)
    if d is None:
        raise click.ClickException(f"no deployment {deployment_id}")
    label = f"{d.provider.name}/{d.model}"
    confirm(yes, f"Delete deployment {deployment_id} ({label} -> {d.upstream_model})?")
    upstream = d.upstream_model
    catalog_admin.delete_deployment(d)
    audited("deployment.delete", label, deployment_id=deployment_id, upstream_model=upstream)
    click.echo(f"deleted deployment {deployment_id}")


@list_command(deployments_cli, Deployment, Deployment.model, Deployment.id,
              help="Every deployment with its routing facts and live health (this process's view).")
def _deployment_row(d) -> tuple:
    price = f"{formatting.price(d.input_per_1k)}/{formatting.price(d.output_per_1k)} per 1K" if d.input_per_1k is not None else "table"
    if d.unit_price is not None:
        price = f"{formatting.price(d.unit_price)}/{d.price_unit}"
    return (d.id, d.model, d.mode, f"{d.provider.name}/{d.upstream_model}", d.region or d.provider.region or "-",
            f"w={d.weight}", f"price={price}", f"ctx={d.context_window or '-'}",
            f"caps={','.join(d.capabilities or []) or '-'}", f"rpm={d.rpm_limit or '-'}",
            f"tpm={d.tpm_limit or '-'}", "enabled" if d.enabled else "disabled", d.source,
            deployment_status(d.id)["state"])


@command(aliases_cli, "set")
@click.argument("name")
@click.argument("target")
def aliases_set(name, target):
    """Point NAME at TARGET (a model, another alias or policy:NAME); clients keep asking for NAME."""
    previous = db.session.scalar(select(Alias.target).where(Alias.name == name))
    catalog_admin.set_alias(name, target, actor=f"cli:{os_user()}")
    audited("alias.set", name, target=target, previous_target=previous)
    click.echo(f"alias {name} -> {target}")


@command(aliases_cli, "rollback")
@click.argument("name")
def aliases_rollback(name):
    """Point NAME back at its target before the last change (see `aliases history NAME`)."""
    previous = db.session.scalar(select(Alias.target).where(Alias.name == name))
    a = catalog_admin.rollback_alias(name, actor=f"cli:{os_user()}")
    audited("alias.rollback", name, target=a.target, previous_target=previous)
    click.echo(f"alias {name} -> {a.target} (was {previous or 'deleted'})")


@command(aliases_cli, "history")
@click.argument("name")
@click.option("--limit", type=int, default=20, show_default=True)
def aliases_history(name, limit):
    """The changes of the alias NAME, newest first: when, what, target, previous target, who, from where."""
    rows = catalog_admin.alias_history(name, limit)
    if not rows:
        raise click.ClickException(f"no history for alias {name}")
    for v in rows:
        echo_row((v.at.isoformat(timespec="seconds"), v.change, v.target or "(deleted)",
                  f"was {v.previous_target or '-'}", v.actor, v.source))


@list_command(aliases_cli, Alias, Alias.name)
def _alias_row(a) -> tuple:
    return a.name, a.target, a.source


@command(aliases_cli, "delete")
@click.argument("name")
def aliases_delete(name):
    """Remove the alias NAME; clients asking for it get model_not_found."""
    if not catalog_admin.delete_alias(name, actor=f"cli:{os_user()}"):
        raise click.ClickException(f"no alias {name}")
    audited("alias.delete", name)
    click.echo(f"deleted alias {name}")


def _experiment(value: str | None) -> dict | None:
    if not value:
        return None
    model, _, percent = value.rpartition(":")
    try:
        return {"model": model, "percent": float(percent)}
    except ValueError:
        raise click.BadParameter("use MODEL:PERCENT, e.g. gpt-4.1-mini:10") from None


@command(policies_cli, "set")
@click.argument("name")
@click.option("--strategy", type=click.Choice(["weighted", "cost", "latency", "throughput", "reliability"]))
@click.option("--candidates", help="models (or aliases) to choose among, comma-separated")
@click.option("--regions", help="allowed regions, comma-separated: eu admits eu-west-1, never us-*")
@click.option("--capabilities", help="required of every deployment: tools, vision, json, ...")
@click.option("--sticky", help="request field that pins a caller to a deployment, e.g. user")
@click.option("--ab", help="MODEL:PERCENT of traffic to a candidate model")
@click.option("--shadow", help="MODEL:PERCENT of requests mirrored to a candidate, not billed")
@click.option("--redact", type=click.Choice([*redaction.MODES, "default"]),
              help="PII redaction of requests under this policy (the stricter of it and the key's applies)")
@click.option("--cache-ttl", type=int, help="cache answers this many seconds (0: off; a key's own setting wins)")
def policies_set(name, strategy, candidates, regions, capabilities, sticky, ab, shadow, redact, cache_ttl):
    """Create or update a policy; options not given keep their value."""
    fields = given(strategy=strategy, candidates=split_csv(candidates), regions=split_csv(regions),
                   capabilities=split_csv(capabilities), sticky=sticky, ab=_experiment(ab),
                   shadow=_experiment(shadow))
    if redact is not None:
        fields["redact"] = None if redact == "default" else redact
    if cache_ttl is not None:
        fields["cache_ttl"] = cache_ttl or None
    p = catalog_admin.save_policy(name, **fields)
    audited("policy.save", p.name, **fields)
    click.echo(f"policy {p.name}: {p.strategy}; use model \"policy:{p.name}\"")


@list_command(policies_cli, Policy, Policy.name)
def _policy_row(p) -> tuple:
    return (p.name, p.strategy, f"candidates={','.join(p.candidates or []) or 'any'}",
            f"regions={','.join(p.regions or []) or 'any'}", f"ab={p.ab or '-'}", f"shadow={p.shadow or '-'}",
            f"redact={p.redact or 'default'}", f"cache={f'{p.cache_ttl}s' if p.cache_ttl else 'off'}", p.source)


@command(policies_cli, "delete")
@click.argument("name")
def policies_delete(name):
    """Remove the admin-defined policy NAME (refused while an alias points at it)."""
    if not catalog_admin.delete_policy(name):
        raise click.ClickException(f"no policy {name}")
    audited("policy.delete", name)
    click.echo(f"deleted policy {name}")


@command(policies_cli, "bind")
@click.argument("key_prefix")
@click.argument("policy", required=False)
def policies_bind(key_prefix, policy):
    """Route every request of the key KEY_PREFIX by POLICY (omit POLICY to unbind)."""
    key = keys.update_key(keys.find_by_prefix(key_prefix), policy=policy)
    audited("key.update", keys.label(key), key_id=key.id, policy=policy)
    click.echo(f"key {key.prefix}… " + (f"routes by {policy}" if policy else "unbound"))
