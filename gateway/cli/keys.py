"""`gateway keys ...`: virtual API keys, their limits, rotation and counters."""
from __future__ import annotations

from datetime import datetime

import click
from flask import current_app

from gateway.cli import (PERIODS, audited, command, confirm, echo_row, given, list_command, options, split_csv,
                         yes_option)
from gateway.models import ApiKey
from gateway.services.accounting import key_limits, key_scope, keys, quota, redaction, teams
from gateway.services.admin import users

keys_cli = click.Group("keys", help="Virtual API keys.")
COMMANDS = (keys_cli,)


def _parse_date(value: str | None, option: str = "--expires") -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        raise click.BadParameter("use an ISO date like 2027-01-31 or 2027-01-31T12:00", param_hint=option) from None


# The limit settings `keys create` and `keys update` share.
_limit_options = options(
    click.option("--models", help="allowed models, comma-separated (default: all; 'all' on update)"),
    click.option("--expires", help="ISO date or date-time, UTC, in the future ('never' on update)"),
    click.option("--valid-from", help="ISO date or date-time, UTC: refused before it ('now' on update)"),
    click.option("--team", help="owning team (name or id)"),
    click.option("--plan", help="plan whose default limits apply"),
    click.option("--token-quota", type=int, help="tokens per period"),
    click.option("--quota-period", type=PERIODS),
    click.option("--quota-tz", help="time zone where a period starts, e.g. Europe/Paris"),
    click.option("--budget", type=float, help="spend limit in USD per period"),
    click.option("--rpm", type=int, help="requests per minute"),
    click.option("--tpm", type=int, help="tokens per minute"),
    click.option("--parallel", type=int, help="requests in flight at once"),
    click.option("--policy", help="bound routing policy"),
    click.option("--ip-allow", help="allowed client IPs or CIDR ranges, comma-separated"),
    click.option("--redact", type=click.Choice([*redaction.MODES, "default"]),
                 help="PII redaction: off, store (what is logged), upstream (also what is sent); "
                      "default: the policy's or the console's default"),
    click.option("--cache-ttl", type=int, help="cache answers this many seconds (0 on update: the policy's)"),
)


def _settings(models=None, expires=None, valid_from=None, team=None, plan=None, token_quota=None, quota_period=None,
              quota_tz=None, budget=None, rpm=None, tpm=None, parallel=None, policy=None, ip_allow=None,
              redact=None, cache_ttl=None, update=False) -> dict:
    """Only what was given; on update, 0 / 'none' / 'all' / 'never' clear a limit."""
    s: dict = {}
    for name, value in (("token_quota", token_quota), ("rpm", rpm), ("tpm", tpm), ("max_parallel", parallel),
                        ("budget_usd", budget)):
        if value is not None:
            s[name] = None if update and value == 0 else value
    if quota_period:
        s["quota_period"] = quota_period
    if quota_tz:
        s["quota_tz"] = quota_tz
    if models is not None:
        s["models"] = None if models.strip().lower() == "all" else split_csv(models)
    if expires is not None:
        s["expires_at"] = None if expires.strip().lower() == "never" else _parse_date(expires)
    if valid_from is not None:
        s["valid_from"] = None if valid_from.strip().lower() == "now" else _parse_date(valid_from, "--valid-from")
    if team is not None:
        s["team_id"] = None if team.lower() == "none" else teams.find_team(team).id
    if plan is not None:
        s["plan_id"] = None if plan.lower() == "none" else teams.find_plan(plan).id
    if policy is not None:
        s["policy"] = None if policy.lower() == "none" else policy
    if ip_allow is not None:
        s["ip_allow"] = None if ip_allow.strip().lower() in ("", "any", "none") else ip_allow
    if redact is not None:
        s["redact"] = None if redact == "default" else redact
    if cache_ttl is not None:
        s["cache_ttl"] = None if update and cache_ttl == 0 else cache_ttl
    return s


@list_command(keys_cli, ApiKey, ApiKey.id)
def _key_row(k) -> tuple:
    e = key_limits.effective(k)
    limits = [a.cli() for a in e.applied]
    if k.ip_allow:
        limits.append("ip=" + ",".join(k.ip_allow))
    if k.redact:
        limits.append(f"redact={k.redact}")
    if k.cache_ttl is not None:
        limits.append(f"cache={k.cache_ttl}s")
    return (f"{k.prefix}…", k.name, key_scope.state(k), f"team={k.team.name if k.team else '-'}",
            f"models={','.join(e.models) if e.models is not None else 'all'}",
            f"valid_from={k.valid_from or '-'}", f"expires={k.expires_at or '-'}", " ".join(limits) or "unlimited")


@command(keys_cli, "show")
@click.argument("prefix")
def keys_show(prefix):
    """The key PREFIX: its state, dates and the limits that apply (key, plan and team), with where each comes from."""
    k = keys.find_by_prefix(prefix)
    e = key_limits.effective(k)
    rows = [("key", keys.label(k)), ("state", key_scope.state(k)), ("owner", k.user.email if k.user else "-"),
            ("team", k.team.name if k.team else "-"), ("plan", k.plan.name if k.plan else "-"),
            ("valid from", f"{k.valid_from:%Y-%m-%d %H:%M} UTC" if k.valid_from else "created"),
            ("expires", f"{k.expires_at:%Y-%m-%d %H:%M} UTC" if k.expires_at else "never"),
            ("models", e.models_text + (f" ({e.models_source})" if e.models_source else ""))]
    rows += [(a.label.lower(), f"{a.text} ({a.source})") for a in e.applied] or [("limits", "unlimited")]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"{label.ljust(width)}  {value}")


@command(keys_cli, "create")
@click.option("--name", required=True)
@click.option("--user", "user_email", help="owner's email")
@_limit_options
def keys_create(name, user_email, **limits):
    """Create a key; the secret is printed alone on the last line, once."""
    user = users.find_user(user_email) if user_email else None
    settings = _settings(**limits)
    if user is not None and "team_id" not in settings and user.team_id:
        settings["team_id"] = user.team_id
    key, secret = keys.create_key(name, user_id=user.id if user else None, **settings)
    audited("key.create", keys.label(key), key_id=key.id, **given(user=user_email), **settings)
    click.echo(f"key {key.name} ({key.prefix}…) created")
    click.echo(secret)


@command(keys_cli, "update")
@click.argument("prefix")
@click.option("--name")
@click.option("--enable/--disable", "enabled", default=None)
@_limit_options
def keys_update(prefix, name, enabled, **limits):
    """Edit the key whose visible prefix is PREFIX; the secret stays the same. 0 clears a limit."""
    key = keys.find_by_prefix(prefix)
    settings = _settings(update=True, **limits)
    if name:
        settings["name"] = name
    if enabled is not None:
        settings["enabled"] = enabled
    keys.update_key(key, **settings)
    audited("key.update", keys.label(key), key_id=key.id, **settings)
    echo_row(_key_row(key))


@command(keys_cli, "rotate")
@click.argument("prefix")
@click.option("--grace", default="24h", help="how long the old secret keeps working: 90s, 30m, 24h, 7d, 0")
def keys_rotate(prefix, grace):
    """New secret for the key PREFIX, same settings; printed alone on the last line, once."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = float(grace[:-1]) * units[grace[-1]] if grace[-1:] in units else float(grace)
    except ValueError:
        raise click.BadParameter("use e.g. 90s, 30m, 24h, 7d or 0", param_hint="--grace") from None
    key = keys.find_by_prefix(prefix)
    old_prefix = key.prefix
    key, secret = keys.rotate_key(key, grace_seconds=seconds)
    audited("key.rotate", keys.label(key), key_id=key.id, old_prefix=old_prefix, grace_seconds=seconds)
    until = f"until {key.prev_valid_until:%Y-%m-%d %H:%M} UTC" if key.prev_valid_until else "no longer"
    click.echo(f"key {key.name} rotated to {key.prefix}…; the old secret works {until}")
    click.echo(secret)


@command(keys_cli, "revoke")
@click.argument("prefix")
def keys_revoke(prefix):
    """Revoke the key whose visible prefix is PREFIX."""
    key = keys.find_by_prefix(prefix)
    keys.revoke_key(key)
    audited("key.revoke", keys.label(key), key_id=key.id)
    click.echo(f"revoked {key.prefix}…")


@command(keys_cli, "delete")
@click.argument("prefix")
@yes_option
def keys_delete(prefix, yes):
    """Delete the key whose visible prefix is PREFIX: it stops working at once; its usage
    records stay."""
    key = keys.find_by_prefix(prefix)
    label, key_id = keys.label(key), key.id         # the row is gone after the delete
    confirm(yes, f"Delete the key {label}?")
    keys.delete_key(key)
    audited("key.delete", label, key_id=key_id)
    click.echo(f"deleted {label}")


@command(keys_cli, "reconcile")
def keys_reconcile():
    """Release reservations never settled and rebuild shared (Redis) counters from the ledger."""
    n = quota.reconcile(current_app._get_current_object())
    audited("quota.reconcile", "counters", counters=n)
    click.echo(f"reconciled {n} counters")
