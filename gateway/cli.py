"""Command line: `gateway ...` or `flask --app app ...`. Every command applies migrations
first, so it works on a fresh, empty database named by DATABASE_URL."""
from __future__ import annotations

import os
import sys
from datetime import datetime

import click
from flask import Flask
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import select

from gateway.errors import GatewayError


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _ready() -> None:
    from gateway.database import upgrade_schema
    from gateway.services.accounting import pricing
    upgrade_schema()
    pricing.seed_prices()


def _fail(e: GatewayError):
    raise click.ClickException(e.message)


@click.group("users", help="Console users.")
def users_cli():
    pass


@users_cli.command("create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--role", type=click.Choice(["admin", "member", "viewer"]), default="member")
@with_appcontext
def users_create(email, password, role):
    """Create a user, or update the password and role of an existing one."""
    from gateway.services.admin import users
    _ready()
    try:
        user = users.create_user(email, password, role)
    except GatewayError as e:
        _fail(e)
    click.echo(f"user {user.email} ({user.role})")


@click.group("providers", help="Upstream providers (BYOK).")
def providers_cli():
    pass


@providers_cli.command("add")
@click.option("--name", required=True)
@click.option("--kind", required=True, help="openai, azure, anthropic, gemini or mock")
@click.option("--base-url", help="as the vendor's SDK takes it, e.g. https://api.openai.com/v1")
@click.option("--api-key", help="stored encrypted; read from $PROVIDER_API_KEY when omitted")
@click.option("--models", help="chat models to expose, comma-separated; public=upstream renames")
@click.option("--embedding-models", help="embedding models to expose, comma-separated")
@click.option("--region", default="")
@click.option("--api-version", help="Azure OpenAI api-version")
@with_appcontext
def providers_add(name, kind, base_url, api_key, models, embedding_models, region, api_version):
    """Add a provider, or update the one with this name (idempotent)."""
    from gateway.services.admin import catalog_admin
    _ready()
    api_key = api_key if api_key is not None else os.environ.get("PROVIDER_API_KEY")
    options = {"api_version": api_version} if api_version else None
    try:
        p = catalog_admin.save_provider(name, kind, base_url=base_url, api_key=api_key, models=_csv(models),
                                        embedding_models=_csv(embedding_models), region=region, options=options)
    except GatewayError as e:
        _fail(e)
    served = ", ".join(sorted(d.model for d in p.deployments)) or "none"
    click.echo(f"provider {p.name} ({p.kind}) {p.base_url} models: {served}")


@providers_cli.command("list")
@with_appcontext
def providers_list():
    from gateway.extensions import db
    from gateway.models import Provider
    _ready()
    for p in db.session.scalars(select(Provider).order_by(Provider.name)):
        key = f"…{p.key_last4}" if p.key_last4 else ("set" if p.api_key_enc else "none")
        models = ",".join(sorted(d.model for d in p.deployments))
        click.echo(f"{p.name}\t{p.kind}\t{p.base_url}\tkey {key}\t{models}\t{'enabled' if p.enabled else 'disabled'}")


@click.group("keys", help="Virtual API keys.")
def keys_cli():
    pass


def _parse_expiry(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        raise click.BadParameter("use an ISO date like 2027-01-31 or 2027-01-31T12:00") from None


def _limit_options(f):
    """The limit settings `keys create` and `keys update` share."""
    for opt in reversed([
        click.option("--models", help="allowed models, comma-separated (default: all; 'all' on update)"),
        click.option("--expires", help="ISO date or date-time, UTC ('never' on update)"),
        click.option("--team", help="owning team (name or id)"),
        click.option("--plan", help="plan whose default limits apply"),
        click.option("--token-quota", type=int, help="tokens per period"),
        click.option("--quota-period", type=click.Choice(["total", "day", "week", "month"])),
        click.option("--quota-tz", help="time zone where a period starts, e.g. Europe/Paris"),
        click.option("--budget", type=float, help="spend limit in USD per period"),
        click.option("--rpm", type=int, help="requests per minute"),
        click.option("--tpm", type=int, help="tokens per minute"),
        click.option("--parallel", type=int, help="requests in flight at once"),
        click.option("--policy", help="bound routing policy"),
        click.option("--ip-allow", help="allowed client IPs or CIDR ranges, comma-separated"),
    ]):
        f = opt(f)
    return f


def _settings(models=None, expires=None, team=None, plan=None, token_quota=None, quota_period=None,
              quota_tz=None, budget=None, rpm=None, tpm=None, parallel=None, policy=None, ip_allow=None,
              update=False) -> dict:
    """Only what was given; on update, 0 / 'none' / 'all' / 'never' clear a limit."""
    from gateway.services.accounting import teams
    s: dict = {}
    for name, value in (("token_quota", token_quota), ("rpm", rpm), ("tpm", tpm), ("max_parallel", parallel)):
        if value is not None:
            s[name] = None if update and value == 0 else value
    if budget is not None:
        s["budget_usd"] = None if update and budget == 0 else budget
    if quota_period:
        s["quota_period"] = quota_period
    if quota_tz:
        s["quota_tz"] = quota_tz
    if models is not None:
        s["models"] = None if models.strip().lower() == "all" else _csv(models)
    if expires is not None:
        s["expires_at"] = None if expires.strip().lower() == "never" else _parse_expiry(expires)
    if team is not None:
        s["team_id"] = None if team.lower() == "none" else teams.find_team(team).id
    if plan is not None:
        s["plan_id"] = None if plan.lower() == "none" else teams.find_plan(plan).id
    if policy is not None:
        s["policy"] = None if policy.lower() == "none" else policy
    if ip_allow is not None:
        s["ip_allow"] = None if ip_allow.strip().lower() in ("", "any", "none") else ip_allow
    return s


def _describe(k) -> str:
    from gateway.services.accounting import keys
    i = keys.info(k)
    limits = []
    if i.token_quota is not None:
        limits.append(f"quota={i.token_quota}/{i.quota_period}")
    if i.budget_usd is not None:
        limits.append(f"budget=${i.budget_usd:g}/{i.quota_period}")
    for name in ("rpm", "tpm", "max_parallel"):
        if getattr(i, name) is not None:
            limits.append(f"{name}={getattr(i, name)}")
    if k.ip_allow:
        limits.append("ip=" + ",".join(k.ip_allow))
    state = "revoked" if k.revoked_at else ("disabled" if not k.enabled else "active")
    return (f"{k.prefix}…\t{k.name}\t{state}\tteam={k.team.name if k.team else '-'}"
            f"\tmodels={','.join(sorted(i.models)) if i.models is not None else 'all'}"
            f"\texpires={k.expires_at or '-'}\t{' '.join(limits) or 'unlimited'}")


@keys_cli.command("create")
@click.option("--name", required=True)
@click.option("--user", "user_email", help="owner's email")
@_limit_options
@with_appcontext
def keys_create(name, user_email, **options):
    """Create a key; the secret is printed alone on the last line, once."""
    from gateway.extensions import db
    from gateway.models import User
    from gateway.services.accounting import keys
    _ready()
    user_id = None
    if user_email:
        user = db.session.scalar(select(User).where(User.email == user_email.strip().lower()))
        if user is None:
            raise click.ClickException(f"no user {user_email}")
        user_id = user.id
    try:
        settings = _settings(**options)
        if user_id is not None and "team_id" not in settings and user.team_id:
            settings["team_id"] = user.team_id
        key, secret = keys.create_key(name, user_id=user_id, **settings)
    except GatewayError as e:
        _fail(e)
    click.echo(f"key {key.name} ({key.prefix}…) created")
    click.echo(secret)


@keys_cli.command("update")
@click.argument("prefix")
@click.option("--name")
@click.option("--enable/--disable", "enabled", default=None)
@_limit_options
@with_appcontext
def keys_update(prefix, name, enabled, **options):
    """Edit the key whose visible prefix is PREFIX; the secret stays the same. 0 clears a limit."""
    from gateway.services.accounting import keys
    _ready()
    try:
        key = keys.find_by_prefix(prefix)
        settings = _settings(update=True, **options)
        if name:
            settings["name"] = name
        if enabled is not None:
            settings["enabled"] = enabled
        keys.update_key(key, **settings)
    except GatewayError as e:
        _fail(e)
    click.echo(_describe(key))


@keys_cli.command("rotate")
@click.argument("prefix")
@click.option("--grace", default="24h", help="how long the old secret keeps working: 90s, 30m, 24h, 7d, 0")
@with_appcontext
def keys_rotate(prefix, grace):
    """New secret for the key PREFIX, same settings; printed alone on the last line, once."""
    from gateway.services.accounting import keys
    _ready()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = float(grace[:-1]) * units[grace[-1]] if grace[-1:] in units else float(grace)
    except ValueError:
        raise click.BadParameter("use e.g. 90s, 30m, 24h, 7d or 0", param_hint="--grace") from None
    try:
        key, secret = keys.rotate_key(keys.find_by_prefix(prefix), grace_seconds=seconds)
    except GatewayError as e:
        _fail(e)
    until = f"until {key.prev_valid_until:%Y-%m-%d %H:%M} UTC" if key.prev_valid_until else "no longer"
    click.echo(f"key {key.name} rotated to {key.prefix}…; the old secret works {until}")
    click.echo(secret)


@keys_cli.command("list")
@with_appcontext
def keys_list():
    from gateway.extensions import db
    from gateway.models import ApiKey
    _ready()
    for k in db.session.scalars(select(ApiKey).order_by(ApiKey.id)):
        click.echo(_describe(k))


@keys_cli.command("revoke")
@click.argument("prefix")
@with_appcontext
def keys_revoke(prefix):
    """Revoke the key whose visible prefix is PREFIX."""
    from gateway.services.accounting import keys
    _ready()
    try:
        key = keys.find_by_prefix(prefix)
    except GatewayError as e:
        _fail(e)
    keys.revoke_key(key)
    click.echo(f"revoked {key.prefix}…")


@keys_cli.command("reconcile")
@with_appcontext
def keys_reconcile():
    """Release reservations never settled and rebuild shared (Redis) counters from the ledger."""
    from flask import current_app

    from gateway.services.accounting import quota
    _ready()
    n = quota.reconcile(current_app._get_current_object())
    click.echo(f"reconciled {n} counters")


@click.group("teams", help="Teams, plans and tag budgets.")
def teams_cli():
    pass


def _team_line(t) -> str:
    budget = f"${t.budget_usd:g}/{t.budget_period} ({t.timezone})" if t.budget_usd is not None else "no budget"
    alerts = ",".join(f"{x}%" for x in (t.alert_thresholds or [])) or "none"
    return f"{t.id}\t{t.name}\t{budget}\talerts {alerts}\twebhook {'set' if t.webhook_url else 'none'}"


@teams_cli.command("create")
@click.option("--name", required=True)
@click.option("--budget", type=float, help="hard cap in USD per period")
@click.option("--period", type=click.Choice(["total", "day", "week", "month"]))
@click.option("--tz", "timezone", help="time zone where a period starts")
@click.option("--alerts", help="alert thresholds in percent, e.g. 50,80,100")
@click.option("--webhook-url")
@click.option("--webhook-secret", help="HMAC secret; read from $WEBHOOK_SECRET when omitted")
@with_appcontext
def teams_create(name, budget, period, timezone, alerts, webhook_url, webhook_secret):
    """Create a team, or update the one with this name."""
    from gateway.services.accounting import teams
    _ready()
    fields = {k: v for k, v in (("budget_usd", budget), ("budget_period", period), ("timezone", timezone),
                                ("alert_thresholds", alerts)) if v is not None}
    secret = webhook_secret if webhook_secret is not None else os.environ.get("WEBHOOK_SECRET")
    try:
        t = teams.save_team(name, webhook_url=webhook_url, webhook_secret=secret, **fields)
    except GatewayError as e:
        _fail(e)
    click.echo(_team_line(t))


@teams_cli.command("list")
@with_appcontext
def teams_list():
    from gateway.extensions import db
    from gateway.models import Team
    _ready()
    for t in db.session.scalars(select(Team).order_by(Team.name)):
        click.echo(_team_line(t))


@teams_cli.command("plan")
@click.option("--name", required=True)
@click.option("--token-quota", type=int)
@click.option("--quota-period", type=click.Choice(["total", "day", "week", "month"]))
@click.option("--budget", type=float)
@click.option("--rpm", type=int)
@click.option("--tpm", type=int)
@click.option("--parallel", type=int)
@click.option("--models", help="allowed models, comma-separated")
@with_appcontext
def teams_plan(name, token_quota, quota_period, budget, rpm, tpm, parallel, models):
    """Create or edit a plan: default limits for the keys on it."""
    from gateway.services.accounting import teams
    _ready()
    fields = {k: v for k, v in (("token_quota", token_quota), ("quota_period", quota_period),
                                ("budget_usd", budget), ("rpm", rpm), ("tpm", tpm),
                                ("max_parallel", parallel), ("models", _csv(models))) if v is not None}
    try:
        p = teams.save_plan(name, **fields)
    except GatewayError as e:
        _fail(e)
    click.echo(f"plan {p.name} saved")


@teams_cli.command("tag-budget")
@click.argument("tag")
@click.option("--budget", type=float, required=True, help="hard cap in USD per period")
@click.option("--period", type=click.Choice(["total", "day", "week", "month"]))
@click.option("--tz", "timezone")
@click.option("--alerts", help="alert thresholds in percent, e.g. 50,80,100")
@click.option("--webhook-url")
@click.option("--webhook-secret")
@with_appcontext
def teams_tag_budget(tag, budget, period, timezone, alerts, webhook_url, webhook_secret):
    """Budget on requests tagged TAG (name=value, e.g. feature=search)."""
    from gateway.services.accounting import teams
    _ready()
    name, sep, value = tag.partition("=")
    if not sep:
        raise click.BadParameter("use name=value, e.g. tenant=acme", param_hint="TAG")
    fields = {k: v for k, v in (("budget_period", period), ("timezone", timezone),
                                ("alert_thresholds", alerts)) if v is not None}
    try:
        b = teams.save_tag_budget(name, value, budget, webhook_url=webhook_url,
                                  webhook_secret=webhook_secret, **fields)
    except GatewayError as e:
        _fail(e)
    click.echo(f"budget ${b.budget_usd:g}/{b.budget_period} on {b.tag}={b.value}")


@click.command("bootstrap")
@click.option("--base-url", default="http://127.0.0.1:8080", help="shown in the demo curl line")
@with_appcontext
def bootstrap_cmd(base_url):
    """Migrate, seed prices, create a first admin and the demo (on an empty database)."""
    from gateway.database import bootstrap
    bootstrap(click.echo, base_url)


@click.command("serve")
@click.option("--host", default=lambda: os.environ.get("HOST", "0.0.0.0"))
@click.option("--port", default=lambda: int(os.environ.get("PORT", 8080)), type=int)
@click.option("--workers", default=lambda: int(os.environ.get("WEB_CONCURRENCY", 2)), type=int)
def serve_cmd(host, port, workers):
    """Serve with gunicorn and gevent workers (bootstraps the database first)."""
    os.environ.setdefault("GATEWAY_PUBLIC_URL", f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}")
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf",
            "-b", f"{host}:{port}", "-w", str(workers), "app:app"]
    sys.stdout.flush()
    # exec: a fresh process where gevent patches before anything imports ssl
    os.execv(sys.executable, argv)


@click.command("mock-upstream")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=9000, type=int)
def mock_upstream_cmd(host, port):
    """Run the fake OpenAI/Anthropic/Gemini upstream for tests, demos and benchmarks."""
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "gateway.mock_upstream",
                              "--host", host, "--port", str(port)])


@click.group("aliases", help="Model aliases: stable names pointing at a model or policy:NAME.")
def aliases_cli():
    pass


@aliases_cli.command("set")
@click.argument("name")
@click.argument("target")
@with_appcontext
def aliases_set(name, target):
    """Point NAME at TARGET (a model or policy:NAME); clients keep asking for NAME."""
    from gateway.services.admin import catalog_admin
    _ready()
    try:
        catalog_admin.set_alias(name, target)
    except GatewayError as e:
        _fail(e)
    click.echo(f"alias {name} -> {target}")


@aliases_cli.command("list")
@with_appcontext
def aliases_list():
    from gateway.extensions import db
    from gateway.models import Alias
    _ready()
    for a in db.session.scalars(select(Alias).order_by(Alias.name)):
        click.echo(f"{a.name}\t{a.target}\t{a.source}")


@aliases_cli.command("delete")
@click.argument("name")
@with_appcontext
def aliases_delete(name):
    from gateway.services.admin import catalog_admin
    _ready()
    if not catalog_admin.delete_alias(name):
        raise click.ClickException(f"no alias {name}")
    click.echo(f"deleted alias {name}")


def _experiment(value: str | None) -> dict | None:
    if not value:
        return None
    model, _, percent = value.rpartition(":")
    try:
        return {"model": model, "percent": float(percent)}
    except ValueError:
        raise click.BadParameter("use MODEL:PERCENT, e.g. gpt-4.1-mini:10") from None


@click.group("policies", help="Routing policies (built in: cost-, latency-, throughput-, reliability-optimized).")
def policies_cli():
    pass


@policies_cli.command("set")
@click.argument("name")
@click.option("--strategy", type=click.Choice(["weighted", "cost", "latency", "throughput", "reliability"]))
@click.option("--candidates", help="models (or aliases) to choose among, comma-separated")
@click.option("--regions", help="allowed regions, comma-separated: eu admits eu-west-1, never us-*")
@click.option("--capabilities", help="required of every deployment: tools, vision, json, ...")
@click.option("--sticky", help="request field that pins a caller to a deployment, e.g. user")
@click.option("--ab", help="MODEL:PERCENT of traffic to a candidate model")
@click.option("--shadow", help="MODEL:PERCENT of requests mirrored to a candidate, not billed")
@with_appcontext
def policies_set(name, strategy, candidates, regions, capabilities, sticky, ab, shadow):
    """Create or update a policy; options not given keep their value."""
    from gateway.services.admin import catalog_admin
    _ready()
    given = {"strategy": strategy, "candidates": _csv(candidates), "regions": _csv(regions),
             "capabilities": _csv(capabilities), "sticky": sticky, "ab": _experiment(ab),
             "shadow": _experiment(shadow)}
    try:
        p = catalog_admin.save_policy(name, **{k: v for k, v in given.items() if v is not None})
    except GatewayError as e:
        _fail(e)
    click.echo(f"policy {p.name}: {p.strategy}; use model \"policy:{p.name}\"")


@policies_cli.command("list")
@with_appcontext
def policies_list():
    from gateway.extensions import db
    from gateway.models import Policy
    _ready()
    for p in db.session.scalars(select(Policy).order_by(Policy.name)):
        click.echo(f"{p.name}\t{p.strategy}\tcandidates={','.join(p.candidates or []) or 'any'}"
                   f"\tregions={','.join(p.regions or []) or 'any'}\tab={p.ab or '-'}\tshadow={p.shadow or '-'}"
                   f"\t{p.source}")


@policies_cli.command("bind")
@click.argument("key_prefix")
@click.argument("policy", required=False)
@with_appcontext
def policies_bind(key_prefix, policy):
    """Route every request of the key KEY_PREFIX by POLICY (omit POLICY to unbind)."""
    from gateway.services.accounting import keys
    _ready()
    try:
        key = keys.update_key(keys.find_by_prefix(key_prefix), policy=policy)
    except GatewayError as e:
        _fail(e)
    click.echo(f"key {key.prefix}… " + (f"routes by {policy}" if policy else "unbound"))


@click.group("deployments", help="Deployments: a provider serving a public model name.")
def deployments_cli():
    pass


def _deployment_options(f):
    for opt in reversed([
        click.option("--upstream", help="the provider's model name (default: MODEL)"),
        click.option("--weight", type=int), click.option("--region"),
        click.option("--input-price", type=float, help="USD per 1K input tokens"),
        click.option("--output-price", type=float, help="USD per 1K output tokens"),
        click.option("--context-window", type=int),
        click.option("--capabilities", help="tools, vision, json, audio, embeddings"),
        click.option("--rpm", type=int, help="requests per minute cap"),
        click.option("--tpm", type=int, help="tokens per minute cap"),
        click.option("--enabled/--disabled", default=None),
        click.option("--mode", type=click.Choice(["chat", "embedding"])),
    ]):
        f = opt(f)
    return f


def _save_deployment(model, provider, upstream, **o):
    from gateway.services.admin import catalog_admin
    fields = {"weight": o["weight"], "region": o["region"], "input_per_1k": o["input_price"],
              "output_per_1k": o["output_price"], "context_window": o["context_window"],
              "capabilities": _csv(o["capabilities"]), "rpm_limit": o["rpm"], "tpm_limit": o["tpm"],
              "enabled": o["enabled"], "mode": o["mode"]}
    try:
        d = catalog_admin.save_deployment(model, provider, upstream,
                                          **{k: v for k, v in fields.items() if v is not None})
    except GatewayError as e:
        _fail(e)
    click.echo(f"deployment {d.id}: {d.model} -> {provider}/{d.upstream_model}")


@deployments_cli.command("add")
@click.argument("model")
@click.argument("provider")
@_deployment_options
@with_appcontext
def deployments_add(model, provider, upstream, **o):
    """Serve MODEL from PROVIDER (created or updated)."""
    _ready()
    _save_deployment(model, provider, upstream, **o)


@deployments_cli.command("update")
@click.argument("deployment_id", type=int)
@_deployment_options
@with_appcontext
def deployments_update(deployment_id, upstream, **o):
    """Change a deployment by id; options not given keep their value."""
    from gateway.extensions import db
    from gateway.models import Deployment
    _ready()
    d = db.session.get(Deployment, deployment_id)
    if d is None:
        raise click.ClickException(f"no deployment {deployment_id}")
    if upstream:
        d.upstream_model = upstream
        db.session.commit()
    _save_deployment(d.model, d.provider.name, d.upstream_model, **o)


@deployments_cli.command("list")
@with_appcontext
def deployments_list():
    """Every deployment with its routing facts and live health (this process's view)."""
    from gateway.extensions import db
    from gateway.models import Deployment
    from gateway.services.routing import plan
    _ready()
    for d in db.session.scalars(select(Deployment).order_by(Deployment.model, Deployment.id)):
        st = plan.deployment_status(d.id)
        price = f"{d.input_per_1k}/{d.output_per_1k}" if d.input_per_1k is not None else "table"
        click.echo(f"{d.id}\t{d.model}\t{d.provider.name}/{d.upstream_model}\t{d.region or d.provider.region or '-'}"
                   f"\tw={d.weight}\tprice={price}\tctx={d.context_window or '-'}"
                   f"\tcaps={','.join(d.capabilities or []) or '-'}\trpm={d.rpm_limit or '-'}"
                   f"\ttpm={d.tpm_limit or '-'}\t{'enabled' if d.enabled else 'disabled'}\t{d.source}"
                   f"\t{st['state']}")


@click.group("config", help="Declarative configuration (GATEWAY_CONFIG=gateway.yaml).")
def config_cli():
    pass


@config_cli.command("apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@with_appcontext
def config_apply(path):
    """Apply a gateway.yaml now (the same as at start; idempotent)."""
    from gateway.services.admin import declarative
    _ready()
    try:
        declarative.apply_file(path, click.echo)
    except GatewayError as e:
        _fail(e)


@click.group("usage", help="Usage records and their rollup.")
def usage_cli():
    pass


@usage_cli.command("rebuild-rollup")
@click.option("--days-per-batch", default=1, show_default=True, help="days of records per transaction")
@with_appcontext
def usage_rebuild_rollup(days_per_batch):
    """Recompute the usage rollup (charts) from the raw records, e.g. after an upgrade."""
    from gateway.services.accounting import rollup
    _ready()
    n = rollup.rebuild(days_per_batch, echo=click.echo)
    click.echo(f"rollup rebuilt from {n} usage records")


def register(app: Flask) -> None:
    for command in (users_cli, providers_cli, keys_cli, teams_cli, bootstrap_cmd, serve_cmd, mock_upstream_cmd):
        app.cli.add_command(command)
    for command in (aliases_cli, policies_cli, deployments_cli, config_cli, usage_cli):
        app.cli.add_command(command)


def _make_app():
    from gateway import create_app
    return create_app()


def main() -> None:
    """The `gateway` console script."""
    FlaskGroup(create_app=_make_app, add_default_commands=True,
               help="Self-hosted AI gateway.")(prog_name="gateway")
