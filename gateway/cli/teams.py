"""`gateway users|teams ...`: who uses the gateway (console users, teams) and what they may
spend (plans, tag budgets)."""
from __future__ import annotations

import os
from urllib.parse import urlsplit

import click

from gateway.auth import throttle
from gateway.cli import (PERIODS, audited, command, confirm, echo_row, given, list_command, split_csv,
                         yes_option)
from gateway.formatting import money
from gateway.models import ROLES, Team
from gateway.services.accounting import keys, teams
from gateway.services.admin import users

users_cli = click.Group("users", help="Console users.")
teams_cli = click.Group("teams", help="Teams, plans and tag budgets.")
COMMANDS = (users_cli, teams_cli)


@command(users_cli, "create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--role", type=click.Choice(ROLES), default="member")
def users_create(email, password, role):
    """Create a user, or reset the password and role of an existing one: its sessions end and
    its login lock-outs are lifted, so this is the way back in for a locked-out admin."""
    existed = users.user_named(email) is not None
    user = users.create_user(email, password, role)
    if existed:
        audited("user.update", user.email, role=user.role, password_changed=True, active=True)
    else:
        audited("user.create", user.email, role=user.role, team_id=user.team_id)
    throttle.forget(user.email)
    click.echo(f"user {user.email} ({user.role})")


@command(users_cli, "unlock")
@click.option("--email", required=True)
def users_unlock(email):
    """Lift the login lock-outs of an account, from every address."""
    throttle.forget(email.strip().lower())
    audited("user.unlock", email.strip().lower())
    click.echo(f"login failures of {email.strip().lower()} cleared")


@command(users_cli, "list")
def users_list():
    """Every console user: email, role, access, team, when created."""
    team_names = {t.id: t.name for t in teams.all_teams()}
    for u in users.all_users():
        echo_row((u.email, u.role, "active" if u.active else "disabled",
                  f"team={team_names.get(u.team_id, '-')}", f"created={u.created_at:%Y-%m-%d}"))


def _set_active(email: str, active: bool) -> None:
    user = users.set_active(users.find_user(email), active)
    audited("user.activate" if active else "user.deactivate", user.email)
    click.echo(f"user {user.email} " + ("can sign in again" if active else "disabled: can't sign in"))


@command(users_cli, "disable")
@click.argument("email")
def users_disable(email):
    """Revoke EMAIL's console access (sign-in and open sessions); the last admin stays."""
    _set_active(email, False)


@command(users_cli, "enable")
@click.argument("email")
def users_enable(email):
    """Restore EMAIL's console access."""
    _set_active(email, True)


@command(users_cli, "delete")
@click.argument("email")
@click.option("--keys", "their_keys", type=click.Choice([users.REVOKE, users.KEEP]),
              help="what happens to the user's keys not yet revoked (asked for when there are any)")
@yes_option
def users_delete(email, their_keys, yes):
    """Delete the user EMAIL (the last admin stays); their usage records stay."""
    user = users.find_user(email)
    live = users.check_delete(user, their_keys)        # refused before anything is asked
    labels = [keys.label(k) for k in live]
    what = f" and {their_keys} their key(s) {', '.join(labels)}" if live else ""
    confirm(yes, f"Delete the user {user.email} ({user.role}){what}?")
    address, role = user.email, user.role
    users.delete_user(user, their_keys)
    audited("user.delete", address, role=role, **({"their_keys": their_keys, "keys": labels} if live else {}))
    click.echo(f"deleted user {address}" + (f"; {their_keys}: {', '.join(labels)}" if live else ""))


@list_command(teams_cli, Team, Team.name)
def _team_row(t) -> tuple:
    budget = f"{money(t.budget_usd)}/{t.budget_period} ({t.timezone})" if t.budget_usd is not None else "no budget"
    alerts = ",".join(f"{x}%" for x in (t.alert_thresholds or [])) or "none"
    plan = teams.team_plan(t.id)
    return (t.id, t.name, budget, f"alerts {alerts}", f"webhook {'set' if t.webhook_url else 'none'}",
            f"plan {plan.name if plan else 'none'}")


@command(teams_cli, "create")
@click.option("--name", required=True)
@click.option("--budget", type=float, help="hard cap in USD per period")
@click.option("--period", type=PERIODS)
@click.option("--tz", "timezone", help="time zone where a period starts")
@click.option("--alerts", help="alert thresholds in percent, e.g. 50,80,100")
@click.option("--webhook-url")
@click.option("--webhook-secret", help="HMAC secret; read from $WEBHOOK_SECRET when omitted")
@click.option("--plan", help="plan of the keys its members make: their defaults and ceiling ('none' clears)")
def teams_create(name, budget, period, timezone, alerts, webhook_url, webhook_secret, plan):
    """Create a team, or update the one with this name."""
    secret = webhook_secret if webhook_secret is not None else os.environ.get("WEBHOOK_SECRET")
    plan_id = None if plan is None else {"plan_id": None if plan.lower() == "none" else teams.find_plan(plan).id}
    fields = given(budget_usd=budget, budget_period=period, timezone=timezone, alert_thresholds=alerts)
    t = teams.save_team(name, webhook_url=webhook_url, webhook_secret=secret, **(plan_id or {}), **fields)
    audited("team.save", t.name, **fields, **(plan_id or {}), **_webhook(webhook_url, secret))
    echo_row(_team_row(t))


@command(teams_cli, "plan")
@click.option("--name", required=True)
@click.option("--token-quota", type=int)
@click.option("--quota-period", type=PERIODS)
@click.option("--budget", type=float)
@click.option("--rpm", type=int)
@click.option("--tpm", type=int)
@click.option("--parallel", type=int)
@click.option("--models", help="allowed models, comma-separated")
def teams_plan(name, token_quota, quota_period, budget, rpm, tpm, parallel, models):
    """Create or edit a plan: default limits for the keys on it."""
    fields = given(token_quota=token_quota, quota_period=quota_period, budget_usd=budget, rpm=rpm, tpm=tpm,
                   max_parallel=parallel, models=split_csv(models))
    p = teams.save_plan(name, **fields)
    audited("plan.save", p.name, **fields)
    click.echo(f"plan {p.name} saved")


@command(teams_cli, "tag-budget")
@click.argument("tag")
@click.option("--budget", type=float, required=True, help="hard cap in USD per period")
@click.option("--period", type=PERIODS)
@click.option("--tz", "timezone")
@click.option("--alerts", help="alert thresholds in percent, e.g. 50,80,100")
@click.option("--webhook-url")
@click.option("--webhook-secret")
def teams_tag_budget(tag, budget, period, timezone, alerts, webhook_url, webhook_secret):
    """Budget on requests tagged TAG (name=value, e.g. feature=search)."""
    name, sep, value = tag.partition("=")
    if not sep:
        raise click.BadParameter("use name=value, e.g. tenant=acme", param_hint="TAG")
    fields = given(budget_period=period, timezone=timezone, alert_thresholds=alerts)
    b = teams.save_tag_budget(name, value, budget, webhook_url=webhook_url, webhook_secret=webhook_secret, **fields)
    audited("tag_budget.save", f"{b.tag}={b.value}", budget_usd=budget, **fields,
            **_webhook(webhook_url, webhook_secret))
    click.echo(f"budget {money(b.budget_usd)}/{b.budget_period} on {b.tag}={b.value}")


def _webhook(url: str | None, secret: str | None) -> dict:
    """What the audit may say of a webhook: its host (the path of a Slack-style URL is itself
    a secret) and whether the signing secret changed, never the secret."""
    out = {}
    if url is not None:
        out["webhook_host"] = urlsplit(url).hostname or ""
    if secret is not None:
        out["webhook_signing"] = "changed" if secret else "cleared"
    return out
