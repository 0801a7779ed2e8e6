"""Teams, plans and tag budgets: who owns keys, default limits, and spend caps with alerts."""
from __future__ import annotations

from sqlalchemy import select

from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import Plan, TagBudget, Team
from gateway.services.accounting import alerts, keys, periods

TEAM_FIELDS = ("name", "budget_usd", "budget_period", "timezone", "alert_thresholds", "plan_id")
PLAN_FIELDS = ("name", "token_quota", "quota_period", "budget_usd", "rpm", "tpm", "max_parallel", "models")


def _thresholds(values) -> list[int]:
    if isinstance(values, str):
        values = [v for v in values.replace(" ", ",").split(",") if v]
    try:
        out = sorted({int(float(v)) for v in values})
    except (TypeError, ValueError):
        raise InvalidRequest("Alert thresholds are percentages, e.g. 50,80,100.",
                             param="alert_thresholds") from None
    if any(not 1 <= t <= 1000 for t in out):
        raise InvalidRequest("Alert thresholds must be between 1 and 1000 percent.", param="alert_thresholds")
    return out


def _check_budget(fields: dict) -> None:
    if fields.get("budget_usd") is not None and float(fields["budget_usd"]) < 0:
        raise InvalidRequest("A budget cannot be negative.", param="budget_usd")
    if "budget_period" in fields and fields["budget_period"] not in keys.PERIODS:
        raise InvalidRequest(f"The period must be one of {', '.join(keys.PERIODS)}.", param="budget_period")
    if fields.get("timezone"):
        periods.zone(fields["timezone"])
    if "alert_thresholds" in fields:
        fields["alert_thresholds"] = _thresholds(fields["alert_thresholds"])


def save_team(name: str, *, team: Team | None = None, webhook_url: str | None = None,
              webhook_secret: str | None = None, **fields) -> Team:
    """Create a team, or edit `team` (or the one named `name`). A webhook secret of None keeps
    the stored one; "" clears it."""
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("A team needs a name.", param="name")
    unknown = set(fields) - set(TEAM_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown team setting(s): {', '.join(sorted(unknown))}.")
    _check_budget(fields)
    team = team or db.session.scalar(select(Team).where(Team.name == name)) or Team(name=name)
    team.name = name
    _apply(team, fields, webhook_url, webhook_secret)
    db.session.add(team)
    db.session.commit()
    keys.cache().clear()        # keys carry their team's budget
    return team


def all_teams() -> list[Team]:
    return db.session.scalars(select(Team).order_by(Team.name)).all()


def find_team(name_or_id) -> Team:
    team = db.session.get(Team, int(name_or_id)) if str(name_or_id).isdigit() else \
        db.session.scalar(select(Team).where(Team.name == str(name_or_id).strip()))
    if team is None:
        raise InvalidRequest(f"No team {name_or_id}.", param="team")
    return team


def save_plan(name: str, **fields) -> Plan:
    """Create or edit the plan named `name`."""
    unknown = set(fields) - set(PLAN_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown plan setting(s): {', '.join(sorted(unknown))}.")
    if "quota_period" in fields and fields["quota_period"] not in keys.PERIODS:
        raise InvalidRequest(f"The period must be one of {', '.join(keys.PERIODS)}.", param="quota_period")
    plan = db.session.scalar(select(Plan).where(Plan.name == name)) or Plan(name=name)
    for k, v in fields.items():
        setattr(plan, k, v)
    db.session.add(plan)
    db.session.commit()
    keys.cache().clear()
    return plan


def team_plan(team_id: int | None) -> Plan | None:
    """The plan a team's members make their keys on (None: no team, or no plan)."""
    team = db.session.get(Team, team_id) if team_id is not None else None
    return db.session.get(Plan, team.plan_id) if team is not None and team.plan_id is not None else None


def find_plan(name: str) -> Plan:
    plan = db.session.scalar(select(Plan).where(Plan.name == name))
    if plan is None:
        raise InvalidRequest(f"No plan {name}.", param="plan")
    return plan


def save_tag_budget(tag: str, value: str, budget_usd: float, *, webhook_url: str | None = None,
                    webhook_secret: str | None = None, **fields) -> TagBudget:
    """Create or edit the budget on requests tagged tag=value."""
    tag, value = tag.strip(), value.strip()
    if not tag or not value:
        raise InvalidRequest("A tag budget needs a tag and a value, e.g. feature=search.", param="tag")
    fields["budget_usd"] = budget_usd
    _check_budget(fields)
    b = db.session.scalar(select(TagBudget).where(TagBudget.tag == tag, TagBudget.value == value)) \
        or TagBudget(tag=tag, value=value)
    _apply(b, fields, webhook_url, webhook_secret)
    db.session.add(b)
    db.session.commit()
    return b


def _apply(row, fields: dict, webhook_url: str | None, webhook_secret: str | None) -> None:
    """Set a team's or tag budget's fields and alert webhook (the secret stored encrypted)."""
    for k, v in fields.items():
        setattr(row, k, v)
    if webhook_url is not None:
        row.webhook_url, enc = alerts.webhook_config(webhook_url, webhook_secret)
        if webhook_secret is not None:
            row.webhook_secret_enc = enc
