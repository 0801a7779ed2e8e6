"""`gateway users|teams ...`: who uses the gateway (console users, teams) and what they may
spend (plans, tag budgets)."""
from __future__ import annotations

import os

import click

from gateway.auth import throttle
from gateway.cli import (PERIODS, audited, command, confirm, echo_row, given, list_command, split_csv,
                         yes_option)
from gateway.formatting import money
from gateway.models import ROLES, ApiKey, Team
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
@click.option("--budget", type=float, help="each key's default budget in USD per quota period")
@click.option("--rpm", type=int)
@click.option("--tpm", type=int)
@click.option("--parallel", type=int)
@click.option("--models", help="allowed models, comma-separated")
@click.option("--plan-budget", help="plan-wide cap in USD per plan period, shared by every key on the plan "
              "('none' clears it)")
@click.option("--plan-period", type=PERIODS, help="period of the plan-wide budget")
@click.option("--plan-tz", help="time zone where a plan-wide budget period starts")
def teams_plan(name, token_quota, quota_period, budget, rpm, tpm, parallel, models, plan_budget, plan_period,
               plan_tz):
    """Create or edit a plan: default limits for the keys on it, and a budget they share."""
    pool = {} if plan_budget is None else {"pool_budget_usd": _usd(plan_budget, "--plan-budget")}
    fields = given(token_quota=token_quota, quota_period=quota_period, budget_usd=budget, rpm=rpm, tpm=tpm,
                   max_parallel=parallel, models=split_csv(models), pool_period=plan_period,
                   pool_timezone=plan_tz) | pool
    p = teams.save_plan(name, **fields)
    audited("plan.save", p.name, **fields)
    shared = f"; plan budget {money(p.pool_budget_usd)}/{p.pool_period}" if p.pool_budget_usd is not None else ""
    click.echo(f"plan {p.name} saved{shared}")


@command(teams_cli, "plan-delete")
@click.argument("name")
@yes_option
def teams_plan_delete(name, yes):
    """Delete the plan NAME: its keys and teams keep working, on no plan."""
    p = teams.find_plan(name)
    n = teams.counts(ApiKey.plan_id).get(p.id, 0)
    confirm(yes, f"Delete the plan {p.name} ({n} key(s) on it keep working without it)?")
    pid, pname = p.id, p.name
    teams.delete_plan(p)
    audited("plan.delete", pname, plan_id=pid, keys=n)
    click.echo(f"deleted plan {pname}")


@command(teams_cli, "delete")
@click.argument("team")
@yes_option
def teams_delete(team, yes):
    """Delete TEAM (name or id): its keys and users keep working, in no team."""
    t = teams.find_team(team)
    n_keys, n_users = teams.counts(ApiKey.team_id).get(t.id, 0), len(teams.members(t))
    confirm(yes, f"Delete the team {t.name} ({n_keys} key(s) and {n_users} user(s) keep working without it)?")
    tid, tname = t.id, t.name
    teams.delete_team(t)
    audited("team.delete", tname, team_id=tid, keys=n_keys, users=n_users)
    click.echo(f"deleted team {tname}")


members_cli = click.Group("members", help="Who is in a team.")
teams_cli.add_command(members_cli)


def _members(team: str, emails: tuple[str, ...], member: bool) -> None:
    t = teams.find_team(team)
    for email in emails:
        u = teams.set_member(t, users.find_user(email), member)
        audited("team.member_add" if member else "team.member_remove", t.name, user=u.email, team_id=t.id)
        click.echo(f"{u.email} {'added to' if member else 'removed from'} team {t.name}")


@command(members_cli, "add")
@click.argument("team")
@click.argument("emails", nargs=-1, required=True)
def teams_members_add(team, emails):
    """Put the users EMAILS in TEAM (moving them from any other team)."""
    _members(team, emails, True)


@command(members_cli, "remove")
@click.argument("team")
@click.argument("emails", nargs=-1, required=True)
def teams_members_remove(team, emails):
    """Take the users EMAILS out of TEAM."""
    _members(team, emails, False)


@command(members_cli, "list")
@click.argument("team")
def teams_members_list(team):
    """The users in TEAM."""
    for u in teams.members(teams.find_team(team)):
        echo_row((u.email, u.role))


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


@command(teams_cli, "tag-budget-delete")
@click.argument("tag")
@yes_option
def teams_tag_budget_delete(tag, yes):
    """Delete the budget on requests tagged TAG (name=value)."""
    name, _, value = tag.partition("=")
    b = next((x for x in teams.all_tag_budgets() if (x.tag, x.value) == (name.strip(), value.strip())), None)
    if b is None:
        raise click.ClickException(f"No budget on {tag}.")
    confirm(yes, f"Delete the budget on {b.tag}={b.value}?")
    target = f"{b.tag}={b.value}"
    teams.delete_tag_budget(b)
    audited("tag_budget.delete", target)
    click.echo(f"deleted the budget on {target}")


def _usd(text: str, option: str) -> float | None:
    """An amount of USD from an option, None for 'none'."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter("a number of USD, or 'none'", param_hint=option) from None


def _webhook(url: str | None, secret: str | None) -> dict:
    return teams.webhook_audit(url, secret)
