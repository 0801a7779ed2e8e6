"""`gateway users|teams ...`: who uses the gateway (console users, teams) and what they may
spend (plans, tag budgets)."""
from __future__ import annotations

import os

import click

from gateway.auth import throttle
from gateway.cli import PERIODS, command, echo_row, given, list_command, split_csv
from gateway.models import Team
from gateway.services.accounting import teams
from gateway.services.admin import users

users_cli = click.Group("users", help="Console users.")
teams_cli = click.Group("teams", help="Teams, plans and tag budgets.")
COMMANDS = (users_cli, teams_cli)


@command(users_cli, "create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--role", type=click.Choice(["admin", "member", "viewer"]), default="member")
def users_create(email, password, role):
    """Create a user, or reset the password and role of an existing one: its sessions end and
    its login lock-outs are lifted, so this is the way back in for a locked-out admin."""
    user = users.create_user(email, password, role)
    throttle.forget(user.email)
    click.echo(f"user {user.email} ({user.role})")


@command(users_cli, "unlock")
@click.option("--email", required=True)
def users_unlock(email):
    """Lift the login lock-outs of an account, from every address."""
    throttle.forget(email.strip().lower())
    click.echo(f"login failures of {email.strip().lower()} cleared")


@list_command(teams_cli, Team, Team.name)
def _team_row(t) -> tuple:
    budget = f"${t.budget_usd:g}/{t.budget_period} ({t.timezone})" if t.budget_usd is not None else "no budget"
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
    t = teams.save_team(name, webhook_url=webhook_url, webhook_secret=secret, **(plan_id or {}),
                        **given(budget_usd=budget, budget_period=period, timezone=timezone,
                                alert_thresholds=alerts))
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
    p = teams.save_plan(name, **given(token_quota=token_quota, quota_period=quota_period, budget_usd=budget,
                                      rpm=rpm, tpm=tpm, max_parallel=parallel, models=split_csv(models)))
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
    b = teams.save_tag_budget(name, value, budget, webhook_url=webhook_url, webhook_secret=webhook_secret,
                              **given(budget_period=period, timezone=timezone, alert_thresholds=alerts))
    click.echo(f"budget ${b.budget_usd:g}/{b.budget_period} on {b.tag}={b.value}")
