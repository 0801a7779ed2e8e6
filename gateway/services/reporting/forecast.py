"""Month-end forecast per team and tag budget: spent so far this month, the run rate, where it
lands at the month's end and the day the budget would run out. `project` is the arithmetic
(pure); `forecasts` reads the month's spend with one grouped query per team set and tag name."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select

from gateway.extensions import db
from gateway.models import ApiKey, TagBudget, Team, UsageRecord, utcnow
from gateway.services.accounting import periods
from gateway.services.reporting.filters import UsageFilter, conditions

BASES = ("7d", "mtd")       # run rate: the last 7 days, or the month so far
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Forecast:
    """One budget's month: what is spent, the daily run rate and where it leads."""
    kind: str                       # team or tag
    name: str                       # team name, or tag=value
    spent: float
    rate_per_day: float
    projected: float
    budget: float | None            # None: no monthly budget to compare with
    overrun_at: datetime | None     # when the projection crosses the budget (None: it does not)
    month_start: datetime
    month_end: datetime
    budget_note: str = ""           # why there is no comparison (a daily budget, ...)

    @property
    def over(self) -> bool:
        return self.budget is not None and self.projected > self.budget

    @property
    def used_pct(self) -> float | None:
        return self.projected / self.budget * 100 if self.budget else None


def project(spent: float, rate_per_day: float, budget: float | None, now: datetime,
            month_end: datetime) -> tuple[float, datetime | None]:
    """(projected month-end spend, when the budget is crossed): spent plus the rate for the
    days left; the crossing is `now` when already over, None when it stays within the month."""
    left_days = max((month_end - now) / DAY, 0.0)
    projected = spent + rate_per_day * left_days
    if budget is None:
        return projected, None
    if spent >= budget:
        return projected, now
    if rate_per_day <= 0:
        return projected, None
    crossing = now + DAY * ((budget - spent) / rate_per_day)
    return projected, crossing if crossing < month_end else None


def run_rate(spent_mtd: float, spent_7d: float, now: datetime, month_start: datetime, basis: str) -> float:
    """USD per day: the last 7 days' spend over 7 days, or the month's so far over its days
    (at least one hour, so the first minutes of a month do not explode the rate)."""
    if basis == "mtd":
        return spent_mtd / max((now - month_start) / DAY, 1 / 24)
    return spent_7d / 7


def forecasts(basis: str = "7d", now: datetime | None = None) -> list[Forecast]:
    """A Forecast for every team and every tag budget, biggest projected overrun first."""
    now = now or utcnow()
    basis = basis if basis in BASES else "7d"
    out: list[Forecast] = []
    teams = list(db.session.scalars(select(Team).order_by(Team.name)))
    tags = list(db.session.scalars(select(TagBudget).order_by(TagBudget.tag, TagBudget.value)))
    zones = sorted({t.timezone or "UTC" for t in teams} | {b.timezone or "UTC" for b in tags})
    windows = {tz: periods.bounds("month", tz, now) for tz in zones}     # a month starts at local midnight
    r = UsageRecord
    week = now - 7 * DAY
    for tz, (start, end) in windows.items():
        since = min(start, week)
        group_teams = [t for t in teams if (t.timezone or "UTC") == tz]
        if group_teams:     # per key, then keys to teams: no lookup per record
            by_key = db.session.execute(select(r.key_id, *_sums(start, week))
                                        .where(*_window(since, now), r.key_id.is_not(None)).group_by(r.key_id)).all()
            ids = [row.key_id for row in by_key]
            team_of = {k: t for k, t in db.session.execute(
                select(ApiKey.id, ApiKey.team_id).where(ApiKey.id.in_(ids)))} if ids else {}
            sums: dict = {}
            for row in by_key:
                cell = sums.setdefault(team_of.get(row.key_id), [0.0, 0.0])
                cell[0] += float(row.mtd or 0)
                cell[1] += float(row.wk or 0)
            for t in group_teams:
                out.append(_forecast("team", t.name, sums.get(t.id), t.budget_usd, t.budget_period, now, start, end,
                                     basis))
        for name in sorted({b.tag for b in tags if (b.timezone or "UTC") == tz}):
            value = r.tags[name].as_string().label("value")
            sums = {row.value: (row.mtd, row.wk) for row in db.session.execute(
                select(value, *_sums(start, week))
                .where(*_window(since, now), value.is_not(None)).group_by(value))}
            for b in tags:
                if b.tag == name and (b.timezone or "UTC") == tz:
                    out.append(_forecast("tag", f"{b.tag}={b.value}", sums.get(b.value), b.budget_usd,
                                         b.budget_period, now, start, end, basis))
    return sorted(out, key=lambda x: (not x.over, -(x.used_pct or 0), x.kind, x.name))


def _sums(start: datetime, week: datetime) -> list:
    r = UsageRecord
    return [func.sum(case((r.created_at >= start, r.cost_usd), else_=0.0)).label("mtd"),
            func.sum(case((r.created_at >= week, r.cost_usd), else_=0.0)).label("wk")]


def _window(start: datetime, end: datetime) -> list:
    """created_at in [start, end), written the way filters.conditions has SQLite scan wide ranges."""
    return conditions(UsageFilter(start=start, end=end))


def _forecast(kind, name, sums, budget, period, now, start, end, basis) -> Forecast:
    mtd, wk = (float(sums[0] or 0), float(sums[1] or 0)) if sums is not None else (0.0, 0.0)
    rate = run_rate(mtd, wk, now, start, basis)
    monthly = budget if budget and (period or "month") == "month" else None
    note = "" if monthly is not None or not budget else f"budget is per {period}, not per month"
    projected, crossing = project(mtd, rate, monthly, now, end)
    return Forecast(kind, name, mtd, rate, projected, monthly, crossing, start, end, note)
