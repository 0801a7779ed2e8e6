"""Usage aggregation in SQL (time buckets, groups, percentiles) and the Plotly charts of it.

Everything is grouped by the database: the page reads a few hundred aggregate rows, never
the usage records themselves. created_at is indexed (alone and with key and model).
Percentiles: Postgres computes them exactly (percentile_cont); SQLite has no percentile
aggregate, so it takes the nearest-rank value per bucket from a window-function query
(row_number over the bucket ordered by latency), which reads the range's rows once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, literal, or_, select

from gateway.extensions import db
from gateway.models import ApiKey, UsageRecord, User, utcnow

RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
GROUPS = ("model", "provider", "key", "user", "team", "tag")
TOP_GROUPS = 8          # series drawn per chart; the rest is summed as "other"


@dataclass
class UsageFilter:
    """What the usage page, the logs and the exports are showing."""
    range: str = "24h"
    start: datetime = field(default_factory=lambda: utcnow() - RANGES["24h"])
    end: datetime = field(default_factory=utcnow)
    model: str = ""
    provider: str = ""
    key_id: int | None = None
    user_id: int | None = None
    team_id: int | None = None
    tag: str = ""               # "name=value" or just "name"
    status: str = ""            # ok, error, 4xx, 5xx
    group: str = "model"
    tag_key: str = ""           # which tag to group by when group == "tag"
    # Members' scope: their own requests plus these keys' (their team's); None = everything.
    scope_user_id: int | None = None
    scope_key_ids: tuple[int, ...] | None = None

    def query_args(self) -> dict:
        """The filter as URL parameters (for links, exports, pagination)."""
        args = {"range": self.range, "group": self.group}
        if self.range == "custom":
            args.update(start=self.start.strftime("%Y-%m-%d"), end=(self.end - timedelta(days=1)).strftime("%Y-%m-%d"))
        for name in ("model", "provider", "tag", "status", "tag_key"):
            if getattr(self, name):
                args[name] = getattr(self, name)
        for name in ("key_id", "user_id", "team_id"):
            if getattr(self, name) is not None:
                args[name] = getattr(self, name)
        return args


def _int(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _date(value: str | None) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%d") if value else None
    except ValueError:
        return None


def parse_filter(args) -> tuple[UsageFilter, dict]:
    """A UsageFilter from request args, and field -> message for anything invalid."""
    errors: dict[str, str] = {}
    f = UsageFilter()
    rng = args.get("range", "24h")
    now = utcnow()
    if rng == "custom":
        start, end = _date(args.get("start")), _date(args.get("end"))
        if start is None:
            errors["start"] = "Pick a start date."
        if end is None:
            errors["end"] = "Pick an end date."
        if start and end and end < start:
            errors["end"] = "The end date is before the start date."
        if start and end and (end - start).days > 366:
            errors["end"] = "Custom ranges are limited to a year."
        if errors:
            rng = "24h"
        else:
            f.start, f.end = start, end + timedelta(days=1)     # end date is inclusive
    if rng != "custom":
        rng = rng if rng in RANGES else "24h"
        f.start, f.end = now - RANGES[rng], now
    f.range = rng
    f.model = args.get("model", "").strip()[:200]
    f.provider = args.get("provider", "").strip()[:100]
    f.tag = args.get("tag", "").strip()[:200]
    f.status = args.get("status", "") if args.get("status") in ("ok", "error", "4xx", "5xx") else ""
    f.key_id, f.user_id, f.team_id = _int(args.get("key_id")), _int(args.get("user_id")), _int(args.get("team_id"))
    f.group = args.get("group") if args.get("group") in GROUPS else "model"
    f.tag_key = args.get("tag_key", "").strip()[:64]
    if f.group == "tag" and not f.tag_key:
        errors["tag_key"] = "Name the tag to group by."
        f.group = "model"
    if f.group == "team" and not has_teams():
        f.group = "model"
    return f, errors


def has_teams() -> bool:
    return hasattr(ApiKey, "team_id")


def conditions(f: UsageFilter) -> list:
    """WHERE clauses for a filter, including the member's scope."""
    r = UsageRecord
    where = [r.created_at >= f.start, r.created_at < f.end]
    if f.model:
        where.append(r.requested_model == f.model)
    if f.provider:
        where.append(r.provider == f.provider)
    if f.key_id is not None:
        where.append(r.key_id == f.key_id)
    if f.user_id is not None:
        where.append(r.user_id == f.user_id)
    if f.team_id is not None and has_teams():
        where.append(r.key_id.in_(select(ApiKey.id).where(ApiKey.team_id == f.team_id)))
    if f.tag:
        name, sep, value = f.tag.partition("=")
        expr = r.tags[name.strip()].as_string()
        where.append(expr == value.strip() if sep else expr.is_not(None))
    if f.status == "ok":
        where.append(r.status < 400)
    elif f.status == "error":
        where.append(r.status >= 400)
    elif f.status == "4xx":
        where.append(and_(r.status >= 400, r.status < 500))
    elif f.status == "5xx":
        where.append(r.status >= 500)
    if f.scope_user_id is not None or f.scope_key_ids is not None:
        mine = [r.user_id == f.scope_user_id] if f.scope_user_id is not None else []
        if f.scope_key_ids:
            mine.append(r.key_id.in_(f.scope_key_ids))
        where.append(or_(*mine) if mine else literal(False))
    return where


def bucket_unit(f: UsageFilter) -> str:
    return "hour" if f.end - f.start <= timedelta(hours=48) else "day"


def bucket_expr(unit: str, column=UsageRecord.created_at):
    """A time bucket for GROUP BY, in the dialect at hand."""
    if db.engine.dialect.name == "postgresql":
        return func.date_trunc(unit, column)
    return func.strftime("%Y-%m-%d %H:00:00" if unit == "hour" else "%Y-%m-%d 00:00:00", column)


def _as_time(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def group_expr(f: UsageFilter):
    r = UsageRecord
    if f.group == "provider":
        return r.provider
    if f.group == "key":
        return r.key_id
    if f.group == "user":
        return r.user_id
    if f.group == "team" and has_teams():
        return select(ApiKey.team_id).where(ApiKey.id == r.key_id).scalar_subquery()
    if f.group == "tag":
        return r.tags[f.tag_key].as_string()
    return r.requested_model


def totals(f: UsageFilter) -> dict:
    """Requests, errors, tokens, cost and mean latency over the whole filter."""
    r = UsageRecord
    row = db.session.execute(select(
        func.count(), func.sum(case((r.status >= 400, 1), else_=0)),
        func.coalesce(func.sum(r.prompt_tokens), 0), func.coalesce(func.sum(r.completion_tokens), 0),
        func.coalesce(func.sum(r.total_tokens), 0), func.coalesce(func.sum(r.cost_usd), 0.0),
        func.avg(r.latency_ms)).where(*conditions(f))).one()
    return {"requests": row[0] or 0, "errors": int(row[1] or 0), "prompt_tokens": int(row[2]),
            "completion_tokens": int(row[3]), "tokens": int(row[4]), "cost": float(row[5]),
            "avg_latency": float(row[6] or 0)}


def breakdown(f: UsageFilter, limit: int = 50) -> list[dict]:
    """Per-group totals, biggest first."""
    r = UsageRecord
    g = group_expr(f).label("g")
    rows = db.session.execute(
        select(g, func.count().label("n"), func.sum(case((r.status >= 400, 1), else_=0)),
               func.coalesce(func.sum(r.total_tokens), 0), func.coalesce(func.sum(r.cost_usd), 0.0),
               func.avg(r.latency_ms))
        .where(*conditions(f)).group_by(g).order_by(func.count().desc()).limit(limit)).all()
    names = group_names(f, [row[0] for row in rows])
    return [{"group": names.get(row[0], "—" if row[0] is None else str(row[0])), "requests": row[1],
             "errors": int(row[2] or 0), "tokens": int(row[3]), "cost": float(row[4]),
             "avg_latency": float(row[5] or 0)} for row in rows]


def group_names(f: UsageFilter, values: list) -> dict:
    """Readable labels for ids (keys by name and prefix, users by email)."""
    ids = [v for v in values if v is not None]
    if f.group == "key" and ids:
        return {k.id: f"{k.name} ({k.prefix}…)" for k in db.session.scalars(select(ApiKey).where(ApiKey.id.in_(ids)))}
    if f.group == "user" and ids:
        return {u.id: u.email for u in db.session.scalars(select(User).where(User.id.in_(ids)))}
    if f.group == "team" and ids:
        try:
            from gateway.models import Team
            return {t.id: t.name for t in db.session.scalars(select(Team).where(Team.id.in_(ids)))}
        except ImportError:
            return {}
    return {v: str(v) for v in ids}


def series(f: UsageFilter) -> dict:
    """Per bucket and group: requests, tokens and cost; the top groups kept, the rest 'other'."""
    r = UsageRecord
    unit = bucket_unit(f)
    b, g = bucket_expr(unit).label("b"), group_expr(f).label("g")
    rows = db.session.execute(
        select(b, g, func.count(), func.coalesce(func.sum(r.total_tokens), 0),
               func.coalesce(func.sum(r.cost_usd), 0.0))
        .where(*conditions(f)).group_by(b, g).order_by(b)).all()
    weight: dict = {}
    for _, grp, n, _, _ in rows:
        weight[grp] = weight.get(grp, 0) + n
    top = sorted(weight, key=weight.get, reverse=True)[:TOP_GROUPS]
    names = group_names(f, top)
    out: dict[str, dict[datetime, list]] = {}
    for bucket, grp, n, tok, cost in rows:
        label = (names.get(grp, "—" if grp is None else str(grp))) if grp in top else "other"
        cell = out.setdefault(label, {}).setdefault(_as_time(bucket), [0, 0, 0.0])
        cell[0] += n
        cell[1] += int(tok)
        cell[2] += float(cost)
    return {"unit": unit, "groups": out}


def latency_percentiles(f: UsageFilter) -> list[tuple[datetime, float, float]]:
    """(bucket, p50 ms, p95 ms) for successful requests."""
    r = UsageRecord
    b = bucket_expr(bucket_unit(f)).label("b")
    where = conditions(f) + [r.status < 400]
    if db.engine.dialect.name == "postgresql":
        rows = db.session.execute(
            select(b, func.percentile_cont(0.5).within_group(r.latency_ms),
                   func.percentile_cont(0.95).within_group(r.latency_ms))
            .where(*where).group_by(b).order_by(b)).all()
        return [(_as_time(x), float(p50), float(p95)) for x, p50, p95 in rows]
    ranked = select(b, r.latency_ms.label("ms"),
                    func.row_number().over(partition_by=b, order_by=r.latency_ms).label("rn"),
                    func.count().over(partition_by=b).label("n")).where(*where).subquery()
    # Nearest rank: the ceil(q*n)-th value, in integer arithmetic (SQLite may lack ceil()).
    rank50 = (ranked.c.n * 50 + 99) / 100
    rank95 = (ranked.c.n * 95 + 99) / 100
    rows = db.session.execute(
        select(ranked.c.b, func.max(case((ranked.c.rn == rank50, ranked.c.ms))),
               func.max(case((ranked.c.rn == rank95, ranked.c.ms))))
        .where(or_(ranked.c.rn == rank50, ranked.c.rn == rank95))
        .group_by(ranked.c.b).order_by(ranked.c.b)).all()
    return [(_as_time(x), float(p50 or 0), float(p95 or 0)) for x, p50, p95 in rows]


def _timeline(f: UsageFilter, unit: str) -> list[datetime]:
    """Every bucket in the range, so gaps show as zero instead of being bridged."""
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    t = f.start.replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        t = t.replace(hour=0)
    out = []
    while t < f.end and len(out) < 2000:
        out.append(t)
        t += step
    return out


def figures(f: UsageFilter, budget: float | None = None) -> dict[str, str]:
    """The four usage charts as HTML fragments (plotly.js is loaded once by base.html)."""
    import plotly.graph_objects as go

    data = series(f)
    unit = data["unit"]
    times = _timeline(f, unit)
    charts: dict[str, go.Figure] = {}
    for name, idx, title in (("requests", 0, "Requests"), ("tokens", 1, "Tokens")):
        fig = go.Figure()
        for label, cells in data["groups"].items():
            fig.add_trace(go.Bar(x=times, y=[cells.get(t, [0, 0, 0])[idx] for t in times], name=label))
        fig.update_layout(barmode="stack", title=title)
        charts[name] = fig
    cost = go.Figure()
    running, total = [], 0.0
    per_bucket = {t: 0.0 for t in times}
    for cells in data["groups"].values():
        for t, cell in cells.items():
            per_bucket[t] = per_bucket.get(t, 0.0) + cell[2]
    for t in times:
        total += per_bucket.get(t, 0.0)
        running.append(round(total, 6))
    cost.add_trace(go.Scatter(x=times, y=running, name="cumulative cost", mode="lines", fill="tozeroy"))
    if budget:
        cost.add_hline(y=budget, line_dash="dash", line_color="#b00020",
                       annotation_text=f"budget ${budget:,.2f}", annotation_position="top left")
    cost.update_layout(title="Cost (USD, cumulative)")
    charts["cost"] = cost
    lat = latency_percentiles(f)
    latency = go.Figure()
    latency.add_trace(go.Scatter(x=[x[0] for x in lat], y=[x[1] for x in lat], name="p50", mode="lines+markers"))
    latency.add_trace(go.Scatter(x=[x[0] for x in lat], y=[x[2] for x in lat], name="p95", mode="lines+markers"))
    latency.update_layout(title="Latency (ms)")
    charts["latency"] = latency
    html = {}
    for name, fig in charts.items():
        fig.update_layout(template="none", height=300, margin=dict(l=50, r=20, t=40, b=40),
                          legend=dict(orientation="h", y=-0.2), font=dict(family="system-ui, sans-serif", size=12),
                          xaxis=dict(range=[f.start, f.end]) if name != "latency" else {})
        html[name] = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}",
                                 config={"displaylogo": False, "responsive": True})
    return html
