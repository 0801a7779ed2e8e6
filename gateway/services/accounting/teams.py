"""Teams, plans and tag budgets: who owns keys, default limits, and spend caps with alerts."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import func, select, update

from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import ApiKey, Plan, TagBudget, Team, User, utcnow
from gateway.services.accounting import alerts, keys, periods, quota
from gateway.services.accounting.limits import Limit

TEAM_FIELDS = ("name", "budget_usd", "budget_period", "timezone", "alert_thresholds", "plan_id")
PLAN_FIELDS = ("name", "token_quota", "quota_period", "budget_usd", "rpm", "tpm", "max_parallel", "models",
               "pool_budget_usd", "pool_period", "pool_timezone")
PLAN_NUMBERS = ("token_quota", "rpm", "tpm", "max_parallel")


def _thresholds(values) -> list[int]:
    if isinstance(values, str):
        values = [v for v in values.replace(" ", ",").split(",") if v]
    try:
        out = sorted({int(float(v)) for v in values})
    except (TypeError, ValueError):
        raise InvalidRequest("Alert thresholds are percentages, e.g. 50,80,100.",
                             param="alert_thresholds") from None
    if any(not 1 <= t <= 100 for t in out):
        raise InvalidRequest("Alert thresholds must be between 1 and 100 percent.", param="alert_thresholds")
    return out


def _check_budget(fields: dict) -> None:
    if fields.get("budget_usd") is not None and float(fields["budget_usd"]) < 0:
        raise InvalidRequest("A budget cannot be negative.", param="budget_usd")
    if "budget_period" in fields and fields["budget_period"] not in keys.PERIODS:
        raise InvalidRequest(f"The period must be one of {', '.join(keys.PERIODS)}.", param="budget_period")
    if fields.get("timezone"):
        _zone(fields["timezone"], "timezone")
    if "alert_thresholds" in fields:
        fields["alert_thresholds"] = _thresholds(fields["alert_thresholds"])


def save_team(name: str, *, team: Team | None = None, new: bool = False, webhook_url: str | None = None,
              webhook_secret: str | None = None, **fields) -> Team:
    """Create a team, or edit `team` (or the one named `name`, unless `new`). A webhook secret
    of None keeps the stored one; "" clears it."""
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("A team needs a name.", param="name")
    unknown = set(fields) - set(TEAM_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown team setting(s): {', '.join(sorted(unknown))}.")
    _check_budget(fields)
    same = db.session.scalar(select(Team).where(Team.name == name))
    if same is not None and (new or team is not None and same.id != team.id):
        raise InvalidRequest(f"There is already a team named {name}.", param="name")
    if fields.get("plan_id") is not None and db.session.get(Plan, fields["plan_id"]) is None:
        raise InvalidRequest("Choose a plan from the list.", param="plan_id")
    team = team or same or Team(name=name)
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


def save_plan(name: str, *, plan: Plan | None = None, new: bool = False, **fields) -> Plan:
    """Create or edit `plan` (or the one named `name`, unless `new`). pool_budget_usd is the plan-wide cap,
    shared by every key on the plan per pool_period; budget_usd each key's own default."""
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("A plan needs a name.", param="name")
    unknown = set(fields) - set(PLAN_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown plan setting(s): {', '.join(sorted(unknown))}.")
    for period in ("quota_period", "pool_period"):
        if period in fields and fields[period] not in keys.PERIODS:
            raise InvalidRequest(f"The period must be one of {', '.join(keys.PERIODS)}.", param=period)
    for number in PLAN_NUMBERS:
        v = fields.get(number)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise InvalidRequest("Enter a whole number of 0 or more.", param=number)
    for money in ("budget_usd", "pool_budget_usd"):
        if fields.get(money) is not None and float(fields[money]) < 0:
            raise InvalidRequest("A budget cannot be negative.", param=money)
    if fields.get("pool_timezone"):
        _zone(fields["pool_timezone"], "pool_timezone")
    if "models" in fields and fields["models"] is not None:
        fields["models"] = sorted({m.strip() for m in fields["models"] if m and m.strip()}) or None
    same = db.session.scalar(select(Plan).where(Plan.name == name))
    if same is not None and (new or plan is not None and same.id != plan.id):
        raise InvalidRequest(f"There is already a plan named {name}.", param="name")
    plan = plan or same or Plan(name=name)
    plan.name = name
    for k, v in fields.items():
        setattr(plan, k, v)
    db.session.add(plan)
    db.session.commit()
    keys.cache().clear()
    return plan


def all_plans() -> list[Plan]:
    return db.session.scalars(select(Plan).order_by(Plan.name)).all()


def delete_plan(plan: Plan) -> None:
    """Delete a plan: its keys and teams keep working, on no plan (their own limits only)."""
    db.session.execute(update(ApiKey).where(ApiKey.plan_id == plan.id).values(plan_id=None))
    db.session.execute(update(Team).where(Team.plan_id == plan.id).values(plan_id=None))
    db.session.delete(plan)
    db.session.commit()
    keys.cache().clear()


def delete_team(team: Team) -> None:
    """Delete a team: its keys and users keep working, in no team (no team budget)."""
    db.session.execute(update(ApiKey).where(ApiKey.team_id == team.id).values(team_id=None))
    db.session.execute(update(User).where(User.team_id == team.id).values(team_id=None))
    db.session.delete(team)
    db.session.commit()
    keys.cache().clear()


def members(team: Team) -> list[User]:
    return db.session.scalars(select(User).where(User.team_id == team.id).order_by(User.email)).all()


def team_keys(team: Team, limit: int = 100) -> list[ApiKey]:
    """The team's keys not revoked, newest first."""
    return db.session.scalars(select(ApiKey).where(ApiKey.team_id == team.id, ApiKey.revoked_at.is_(None))
                              .order_by(ApiKey.id.desc()).limit(limit)).all()


def set_member(team: Team, user: User, member: bool) -> User:
    """Add `user` to `team` (moving them from any other), or take them out of it. Their new
    keys are the team's; keys they already have stay where they are."""
    if member:
        user.team_id = team.id
    elif user.team_id == team.id:
        user.team_id = None
    db.session.commit()
    return user


def team_plan(team_id: int | None) -> Plan | None:
    """The plan a team's members make their keys on (None: no team, or no plan)."""
    team = db.session.get(Team, team_id) if team_id is not None else None
    return db.session.get(Plan, team.plan_id) if team is not None and team.plan_id is not None else None


def find_plan(name_or_id) -> Plan:
    plan = db.session.get(Plan, int(name_or_id)) if str(name_or_id).isdigit() else \
        db.session.scalar(select(Plan).where(Plan.name == str(name_or_id).strip()))
    if plan is None:
        raise InvalidRequest(f"No plan {name_or_id}.", param="plan")
    return plan


def save_tag_budget(tag: str, value: str, budget_usd: float | None, *, budget: TagBudget | None = None,
                    new: bool = False, webhook_url: str | None = None, webhook_secret: str | None = None,
                    **fields) -> TagBudget:
    """Create or edit the budget on requests tagged tag=value (`budget`: the one to edit; `new`:
    refuse one that exists)."""
    tag, value = (tag or "").strip(), (value or "").strip()
    if not tag:
        raise InvalidRequest("A tag budget needs a tag, e.g. feature.", param="tag")
    if not value:
        raise InvalidRequest("A tag budget needs a value, e.g. search.", param="value")
    if budget_usd is None:
        raise InvalidRequest("Enter the budget in USD.", param="budget_usd")
    fields["budget_usd"] = budget_usd
    _check_budget(fields)
    same = db.session.scalar(select(TagBudget).where(TagBudget.tag == tag, TagBudget.value == value))
    if same is not None and (new or budget is not None and same.id != budget.id):
        raise InvalidRequest(f"There is already a budget on {tag}={value}.", param="value")
    b = budget or same or TagBudget(tag=tag, value=value)
    b.tag, b.value = tag, value
    _apply(b, fields, webhook_url, webhook_secret)
    db.session.add(b)
    db.session.commit()
    _reload_tag_budgets()
    return b


def all_tag_budgets() -> list[TagBudget]:
    return db.session.scalars(select(TagBudget).order_by(TagBudget.tag, TagBudget.value)).all()


def delete_tag_budget(b: TagBudget) -> None:
    db.session.delete(b)
    db.session.commit()
    _reload_tag_budgets()


def _reload_tag_budgets() -> None:
    """This process sees the change at once; the others within TAG_BUDGET cache's ttl."""
    cache = current_app.extensions.get("tag_budgets")
    if cache is not None:
        cache.loaded_at = float("-inf")


def _zone(name: str, param: str) -> None:
    try:
        periods.zone(name)
    except InvalidRequest as e:
        raise InvalidRequest(e.message, param=param) from None


@dataclass(frozen=True, slots=True)
class Spend:
    """A budget's state this period, from the quota counters."""
    budget_usd: float | None
    used_usd: float
    period_start: datetime | None
    period_end: datetime | None

    @property
    def percent(self) -> float | None:
        if not self.budget_usd:
            return None
        return 100.0 * self.used_usd / self.budget_usd


def spend(scope: str, budget_usd: float | None, period: str, tz: str, now: datetime | None = None) -> Spend:
    """What `scope` (team:ID, plan:ID, tag:k=v) spent this period. A scope without a budget is
    not counted (no request reserves against it): no spend to show."""
    return _spends({scope: (scope, budget_usd, period, tz)}, now)[scope]


def _spends(budgets: dict, now: datetime | None = None) -> dict:
    """id -> Spend for {id: (scope, budget, period, tz)}, read in one go."""
    now = now or utcnow()
    limits = {}
    for ident, (scope, usd, period, tz) in budgets.items():
        if usd is not None:
            limits[ident] = Limit(scope, *periods.bounds(period or "month", tz or "UTC", now), usd=usd)
    used = quota.spent(list(limits.values())) if limits else {}
    return {ident: Spend(x.usd, used.get(x.scope, 0.0), x.period_start, x.period_end) if (x := limits.get(ident))
            else Spend(None, 0.0, None, None) for ident in budgets}


def team_spend(t: Team) -> Spend:
    return team_spends([t])[t.id]


def team_spends(rows: list[Team]) -> dict[int, Spend]:
    """team id -> its spend this period."""
    return _spends({t.id: (f"team:{t.id}", t.budget_usd, t.budget_period, t.timezone) for t in rows})


def plan_spends(rows: list[Plan]) -> dict[int, Spend]:
    """plan id -> what all its keys spent together this period (the plan budget's counter)."""
    return _spends({p.id: (f"plan:{p.id}", p.pool_budget_usd, p.pool_period, p.pool_timezone) for p in rows})


def plan_spend(p: Plan) -> Spend:
    return plan_spends([p])[p.id]


def tag_spends(rows: list[TagBudget]) -> dict[int, Spend]:
    return _spends({b.id: (f"tag:{b.tag}={b.value}", b.budget_usd, b.budget_period, b.timezone) for b in rows})


def counts(column) -> dict[int, int]:
    """id -> how many rows point at it, e.g. counts(ApiKey.team_id): keys per team (live keys
    only for keys)."""
    q = select(column, func.count()).where(column.is_not(None)).group_by(column)
    if column.class_ is ApiKey:
        q = q.where(ApiKey.revoked_at.is_(None))
    return dict(db.session.execute(q).all())


def find_tag_budget(budget_id: int) -> TagBudget:
    b = db.session.get(TagBudget, budget_id)
    if b is None:
        raise InvalidRequest(f"No tag budget {budget_id}.", param="tag")
    return b


def webhook_audit(url: str | None, secret: str | None) -> dict:
    """What the audit may say of a webhook: its host (the path of a Slack-style URL is itself
    a secret) and whether the signing secret changed, never the secret."""
    out = {}
    if url is not None:
        out["webhook_host"] = urlsplit(url).hostname or ""
    if secret is not None:
        out["webhook_signing"] = "changed" if secret else "cleared"
    return out


def _apply(row, fields: dict, webhook_url: str | None, webhook_secret: str | None) -> None:
    """Set a team's or tag budget's fields and alert webhook (the secret stored encrypted)."""
    for k, v in fields.items():
        setattr(row, k, v)
    if webhook_url is not None:
        row.webhook_url, enc = alerts.webhook_config(webhook_url, webhook_secret)
        if webhook_secret is not None:
            row.webhook_secret_enc = enc
