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

from sqlalchemy import DateTime, and_, case, func, literal, literal_column, or_, select

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
    col = r.created_at
    if f.end - f.start > timedelta(days=2) and db.engine.dialect.name == "sqlite":
        # A wide range matches most rows: walking the created_at index and fetching each row is
        # ~10x slower than scanning the table in SQLite; the unary + keeps the planner off it.
        col = literal_column("+usage_records.created_at", DateTime)
    where = [col >= f.start, col < f.end]
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
    # SQLite keeps DATETIME as ISO text; cutting the string is ~10x faster than strftime().
    if unit == "hour":
        return func.substr(column, 1, 13).concat(":00:00")
    return func.substr(column, 1, 10).concat(" 00:00:00")


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
    rank50 = (ranked.c.n * 50 + 99) // 100
    rank95 = (ranked.c.n * 95 + 99) // 100
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
    """The four usage charts as HTML fragments (plotly.js is loaded once by the page).
    Figures are plain dicts rendered without validation: graph_objects costs ~40 ms a chart."""
    import plotly.io as pio

    data = series(f)
    times = _timeline(f, data["unit"])
    xs = [t.isoformat() for t in times]
    figs: dict[str, dict] = {}
    for name, idx, title in (("requests", 0, "Requests"), ("tokens", 1, "Tokens")):
        traces = [{"type": "bar", "name": label, "x": xs, "y": [cells.get(t, (0, 0, 0))[idx] for t in times]}
                  for label, cells in data["groups"].items()]
        figs[name] = {"data": traces, "layout": {"title": {"text": title}, "barmode": "stack"}}
    per_bucket: dict[datetime, float] = {}
    for cells in data["groups"].values():
        for t, cell in cells.items():
            per_bucket[t] = per_bucket.get(t, 0.0) + cell[2]
    running, total = [], 0.0
    for t in times:
        total += per_bucket.get(t, 0.0)
        running.append(round(total, 6))
    cost_layout: dict = {"title": {"text": "Cost (USD, cumulative)"}}
    if budget:
        cost_layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": budget, "y1": budget,
                                  "line": {"dash": "dash", "color": "#b00020"}}]
        cost_layout["annotations"] = [{"xref": "paper", "x": 0, "y": budget, "yanchor": "bottom", "xanchor": "left",
                                       "showarrow": False, "text": f"budget ${budget:,.2f}",
                                       "font": {"color": "#b00020"}}]
        cost_layout["yaxis"] = {"range": [0, max(budget, total) * 1.1]}
    figs["cost"] = {"data": [{"type": "scatter", "mode": "lines", "fill": "tozeroy", "name": "cumulative cost",
                              "x": xs, "y": running}], "layout": cost_layout}
    lat = latency_percentiles(f)
    lx = [x[0].isoformat() for x in lat]
    figs["latency"] = {"data": [{"type": "scatter", "mode": "lines+markers", "name": "p50", "x": lx, "y": [x[1] for x in lat]},
                                {"type": "scatter", "mode": "lines+markers", "name": "p95", "x": lx, "y": [x[2] for x in lat]}],
                       "layout": {"title": {"text": "Latency (ms)"}}}
    html = {}
    for name, fig in figs.items():
        layout = fig["layout"]
        layout.update(height=300, margin={"l": 50, "r": 20, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.2},
                      font={"family": "system-ui, sans-serif", "size": 12}, template={})
        layout["xaxis"] = {"range": [f.start.isoformat(), f.end.isoformat()], "type": "date"}
        layout.setdefault("yaxis", {"rangemode": "tozero"})
        layout["autosize"] = True
        html[name] = pio.to_html(fig, validate=False, full_html=False, include_plotlyjs=False, div_id=f"chart-{name}",
                                 config={"displaylogo": False, "responsive": True})
    return html
