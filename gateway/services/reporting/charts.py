"""Usage aggregation in SQL (time buckets, groups, percentiles) and the Plotly charts of it.

Everything is grouped by the database: the page reads a few hundred aggregate rows, never
the usage records themselves. Whole hours come from the rollup (accounting/rollup.py) when it
covers the filter (reporting/filters.py) and grouping (everything but tags); the partial hours at the range's edges,
hours before the rollup was complete, and tag views read usage_records, whose created_at is
indexed (alone and with key and model). Totals are exact either way.
Percentiles from the rollup are estimated from its latency histogram (within one bucket, <26%).
On raw records Postgres computes them exactly (percentile_cont); SQLite has no percentile
aggregate, so it takes the nearest-rank value per bucket from a window-function query
(row_number over the bucket ordered by latency), which reads the range's rows once.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, func, or_, select

from gateway.extensions import db
from gateway.formatting import money
from gateway.models import ApiKey, Plan, Team, UsageHourly, UsageRecord, User
from gateway.services.accounting import rollup
from gateway.services.admin import settings
from gateway.services.reporting.figure_style import finish, money_axis, money_hover  # noqa: F401 (money_*: for callers)
from gateway.services.reporting.filters import UsageFilter, conditions, rollup_conditions
from gateway.services.reporting.grouping import MANY, OTHER, TOP_GROUPS, Grouped, folded, top_groups



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
    if f.group == "team":
        return select(ApiKey.team_id).where(ApiKey.id == r.key_id).scalar_subquery()
    if f.group == "plan":
        return plan_expr(r.key_id)
    if f.group == "tag":
        return r.tags[f.tag_key].as_string()
    return r.requested_model


def plan_expr(key_id):
    """The plan a key's requests count under: the key's own, else its team's."""
    team_plan = select(Team.plan_id).where(Team.id == ApiKey.team_id).scalar_subquery()
    return select(func.coalesce(ApiKey.plan_id, team_plan)).where(ApiKey.id == key_id).scalar_subquery()


def _rates(n: int, err: int, tokens: int, cost: float, throttled: int) -> dict:
    """Success rate, throttled share and $ per 1K tokens from summed measures."""
    return {"success_rate": (n - err) / n if n else None, "throttled": int(throttled),
            "cost_per_1k": cost * 1000 / tokens if tokens else None}


def totals(f: UsageFilter) -> dict:
    """Requests, errors, tokens, cost, mean latency, success rate, throttled (429) requests and
    $ per 1K tokens over the whole filter."""
    n, err, prompt, completion, tokens, cost, lat, throttled = _aggregate(f, by_bucket=False,
                                                                           by_group=False).get((), _ZERO)
    return {"requests": n, "errors": int(err), "prompt_tokens": int(prompt), "completion_tokens": int(completion),
            "tokens": int(tokens), "cost": float(cost), "avg_latency": lat / n if n else 0.0,
            **_rates(n, err, tokens, cost, throttled)}


def breakdown(f: UsageFilter, limit: int = 50, cells: Grouped | None = None) -> list[dict]:
    """Per-group totals, biggest first; `cells` (from `grouped`, which the charts read too)
    instead of grouping the records again."""
    per_group = cells.by_group if cells is not None else _aggregate(f, by_bucket=False, by_group=True)
    rows = sorted(per_group.items(), key=lambda kv: kv[1][0], reverse=True)[:limit]
    names = group_names(f, [k[0] for k, _ in rows])
    return [{"group": names.get(k[0], "—" if k[0] is None else str(k[0])), "requests": c[0], "errors": int(c[1]),
             "tokens": int(c[4]), "cost": float(c[5]), "avg_latency": c[6] / c[0] if c[0] else 0.0,
             **_rates(c[0], c[1], c[4], c[5], c[7])}
            for k, c in rows]


_ZERO = (0, 0, 0, 0, 0, 0.0, 0.0, 0)


def _needs(f: UsageFilter, by_group: bool) -> tuple[bool, bool]:
    """Whether the view needs (keys or users, models or providers) kept apart."""
    group = f.group if by_group else ""
    keys = (group in ("key", "user", "team", "plan") or f.key_id is not None or f.user_id is not None
            or f.team_id is not None or f.scope_user_id is not None or f.scope_key_ids is not None)
    models = group in ("model", "provider") or bool(f.model or f.provider)
    return keys, models


def segments(f: UsageFilter, by_group: bool = True) -> list[tuple]:
    """The range split by source: ("raw", start, end) or ("rollup", grain, start, end)."""
    whole = [("raw", f.start, f.end)]
    if f.exact or f.tag or (by_group and f.group == "tag") or not rollup.supported():
        return whole
    since = rollup.since()
    if since is None:
        return whole
    a = max(_ceil(f.start, "hour"), since)
    b = f.end.replace(minute=0, second=0, microsecond=0)
    if a >= b:
        return whole
    out = [("raw", f.start, a)] if f.start < a else []
    keys, models = _needs(f, by_group)
    da, db_ = _ceil(a, "day"), b.replace(hour=0)
    day_grain = rollup.DAILY if not keys else rollup.DAILY_KEYS if not models else None
    if bucket_unit(f) == "day" and day_grain is not None and da < db_:
        out += [("rollup", rollup.HOURLY, a, da), ("rollup", day_grain, da, db_), ("rollup", rollup.HOURLY, db_, b)]
    else:
        out.append(("rollup", rollup.HOURLY, a, b))
    if b < f.end:
        out.append(("raw", b, f.end))
    return [s for s in out if s[0] == "raw" or s[2] < s[3]]


def _ceil(t: datetime, unit: str) -> datetime:
    floor = t.replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        floor = floor.replace(hour=0)
    return floor if floor == t else floor + (timedelta(hours=1) if unit == "hour" else timedelta(days=1))


def rollup_group_expr(f: UsageFilter):
    h = UsageHourly
    if f.group == "provider":
        return func.nullif(h.provider, "")
    if f.group == "key":
        return func.nullif(h.key_id, 0)
    if f.group == "user":
        return func.nullif(h.user_id, 0)
    if f.group == "team":
        return select(ApiKey.team_id).where(ApiKey.id == h.key_id).scalar_subquery()
    if f.group == "plan":
        return plan_expr(h.key_id)
    return func.nullif(h.requested_model, "")


def _rollup_bucket(unit: str, grain: int):
    if unit == "day" and grain == rollup.HOURLY:
        return bucket_expr("day", UsageHourly.hour)
    return UsageHourly.hour


def _aggregate(f: UsageFilter, by_bucket: bool, by_group: bool, top: list | None = None) -> dict[tuple, list]:
    """(bucket?, group?) -> [requests, errors, prompt, completion, total tokens, cost, latency sum,
    throttled (429)], summed over the raw and rollup segments of the range. With `top` (and
    by_group), the groups not in it are summed as one, OTHER."""
    unit = bucket_unit(f)
    out: dict[tuple, list] = {}

    def group_keys(expr) -> list:
        if not by_group:
            return []
        return [expr] if top is None else folded(expr, top)

    for seg in segments(f, by_group):
        if seg[0] == "raw":
            r = UsageRecord
            keys = ([bucket_expr(unit)] if by_bucket else []) + group_keys(group_expr(f))
            measures = [func.count(), func.sum(case((r.status >= 400, 1), else_=0)), func.sum(r.prompt_tokens),
                        func.sum(r.completion_tokens), func.sum(r.total_tokens), func.sum(r.cost_usd),
                        func.sum(r.latency_ms), func.sum(case((r.status == 429, 1), else_=0))]
            where = conditions(f, seg[1], seg[2])
        else:
            h, grain = UsageHourly, seg[1]
            keys = ([_rollup_bucket(unit, grain)] if by_bucket else []) + group_keys(rollup_group_expr(f))
            measures = [func.sum(h.requests), func.sum(h.errors), func.sum(h.prompt_tokens),
                        func.sum(h.completion_tokens), func.sum(h.total_tokens), func.sum(h.cost_usd),
                        func.sum(h.latency_ms_sum), func.sum(case((h.status == 429, h.requests), else_=0))]
            where = rollup_conditions(f, grain, seg[2], seg[3])
        labeled = [k.label(f"k{i}") for i, k in enumerate(keys)]
        q = select(*labeled, *measures).where(*where)
        if labeled:
            q = q.group_by(*labeled)
        for row in db.session.execute(q):
            k = tuple(row[:len(keys)])
            if top is not None and by_group:
                k = k[:-2] + (OTHER if k[-1] else k[-2],)
            if by_bucket:
                k = (_as_time(k[0]),) + k[1:]
            n = row[len(keys)] or 0
            if not n:
                continue
            cell = out.get(k)
            if cell is None:
                cell = out[k] = [0, 0, 0, 0, 0, 0.0, 0.0, 0]
            for i, v in enumerate(row[len(keys):]):
                cell[i] += v or 0
    for cell in out.values():       # Postgres sums BIGINT columns to NUMERIC (Decimal)
        cell[:] = [int(v) for v in cell[:5]] + [float(cell[5]), float(cell[6]), int(cell[7])]
    return out


def group_names(f: UsageFilter, values: list) -> dict:
    """Readable labels for ids (keys by name and prefix, users by email)."""
    ids = [v for v in values if v is not None]
    if f.group == "key" and ids:
        return {k.id: f"{k.name} ({k.prefix}…)" for k in db.session.scalars(select(ApiKey).where(ApiKey.id.in_(ids)))}
    if f.group == "user" and ids:
        return {u.id: u.email for u in db.session.scalars(select(User).where(User.id.in_(ids)))}
    if f.group == "team" and ids:
        return {t.id: t.name for t in db.session.scalars(select(Team).where(Team.id.in_(ids)))}
    if f.group == "plan" and ids:
        return {p.id: p.name for p in db.session.scalars(select(Plan).where(Plan.id.in_(ids)))}
    return {v: str(v) for v in ids}


def grouped(f: UsageFilter) -> Grouped:
    """One grouped read for the charts and the breakdown. Few groups: per (bucket, group), summed
    here per group. Many (keys, users: 30 days x 400 keys = 12,000 rows): per group first, then
    per bucket for the top TOP_GROUPS only, the rest summed in SQL as OTHER."""
    if f.group in MANY:
        by_group = _aggregate(f, by_bucket=False, by_group=True)
        return Grouped(_aggregate(f, by_bucket=True, by_group=True, top=top_groups(by_group)), by_group)
    by_bucket = _aggregate(f, by_bucket=True, by_group=True)
    by_group: dict[tuple, list] = {}
    for (_, grp), c in by_bucket.items():
        cell = by_group.get((grp,))
        if cell is None:
            by_group[(grp,)] = list(c)
        else:
            for i, v in enumerate(c):
                cell[i] += v
    return Grouped(by_bucket, by_group)


def series(f: UsageFilter, cells: Grouped | None = None) -> dict:
    """Per bucket and group: requests, tokens and cost; the top groups kept, the rest 'other'."""
    unit = bucket_unit(f)
    shared = cells or grouped(f)
    rows = [(b, g, c[0], c[4], c[5]) for (b, g), c in shared.by_bucket.items()]
    rows.sort(key=lambda x: x[0])
    if f.group in MANY:         # the rest is OTHER already
        top = top_groups(shared.by_group)
    else:
        weight: dict = {}
        for _, grp, n, _, _ in rows:
            weight[grp] = weight.get(grp, 0) + n
        top = sorted(weight, key=weight.get, reverse=True)[:TOP_GROUPS]
    names = group_names(f, top)
    out: dict[str, dict[datetime, list]] = {}
    for bucket, grp, n, tok, cost in rows:
        label = (names.get(grp, "—" if grp is None else str(grp))) if grp in top else "other"
        cell = out.setdefault(label, {}).setdefault(bucket, [0, 0, 0.0])
        cell[0] += n
        cell[1] += int(tok)
        cell[2] += float(cost)
    return {"unit": unit, "groups": out}


def latency_percentiles(f: UsageFilter) -> list[tuple[datetime, float, float]]:
    """(bucket, p50 ms, p95 ms) for successful requests."""
    segs = segments(f, by_group=False)
    if all(seg[0] == "raw" for seg in segs):
        return _exact_percentiles(f)
    unit = bucket_unit(f)
    hists: dict[datetime, list[int]] = {}
    for seg in segs:
        if seg[0] == "raw":     # a partial hour at an edge: bin its latencies here
            b = bucket_expr(unit).label("b")
            rows = db.session.execute(select(b, UsageRecord.latency_ms)
                                      .where(*conditions(f, seg[1], seg[2]), UsageRecord.status < 400))
            for bucket, ms in rows:
                hists.setdefault(_as_time(bucket), [0] * len(rollup.HIST))[rollup.bucket(ms or 0.0)] += 1
            continue
        b = _rollup_bucket(unit, seg[1]).label("b")
        cols = [func.sum(UsageHourly.__table__.c[c]) for c in rollup.HIST]
        rows = db.session.execute(select(b, *cols).where(*rollup_conditions(f, seg[1], seg[2], seg[3]),
                                                         UsageHourly.status < 400).group_by(b))
        for bucket, *counts in rows:
            hist = hists.setdefault(_as_time(bucket), [0] * len(rollup.HIST))
            for i, c in enumerate(counts):
                hist[i] += int(c or 0)
    return [(t, rollup.percentile(h, 0.5), rollup.percentile(h, 0.95))
            for t, h in sorted(hists.items()) if sum(h)]


def _exact_percentiles(f: UsageFilter) -> list[tuple[datetime, float, float]]:
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


def budget_line(f: UsageFilter) -> float | None:
    """The cost chart's threshold: the filtered key's or team's budget, else the monthly setting."""
    key = db.session.get(ApiKey, f.key_id) if f.key_id is not None else None
    if key is not None and key.budget_usd:
        return key.budget_usd
    team = db.session.get(Team, f.team_id) if f.team_id is not None else None
    if team is not None and team.budget_usd:
        return team.budget_usd
    value = settings.get("monthly_budget_usd")
    return float(value) if value else None


def figures(f: UsageFilter, budget: float | None = None, cells: Grouped | None = None) -> dict[str, dict]:
    """The four usage charts as Plotly figures ({"data", "layout", "config"}, plain JSON).
    The page embeds them as JSON and static/console.js draws them: no inline script, so the
    Content-Security-Policy can forbid those. Plain dicts: graph_objects costs ~40 ms a chart."""
    data = series(f, cells)
    times = _timeline(f, data["unit"])
    xs = [t.isoformat() for t in times]
    figs: dict[str, dict] = {}
    for name, idx, title in (("requests", 0, "Requests"), ("tokens", 1, "Tokens")):
        traces = [{"type": "bar", "name": label, "x": xs, "y": [cells.get(t, (0, 0, 0))[idx] for t in times]}
                  for label, cells in data["groups"].items()]
        figs[name] = {"data": traces, "layout": {"title": {"text": title}, "barmode": "stack"}}
    per_bucket: dict[datetime, float] = {}
    for by_time in data["groups"].values():
        for t, cell in by_time.items():
            per_bucket[t] = per_bucket.get(t, 0.0) + cell[2]
    running, total = [], 0.0
    for t in times:
        total += per_bucket.get(t, 0.0)
        running.append(round(total, 6))
    cost_layout: dict = {"title": {"text": "Cost (USD, cumulative)"},
                         "yaxis": {"rangemode": "tozero", **money_axis(max([total, budget or 0.0]))}}
    if budget:
        cost_layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": budget, "y1": budget,
                                  "line": {"dash": "dash", "color": "#b00020"}}]
        cost_layout["annotations"] = [{"xref": "paper", "x": 0, "y": budget, "yanchor": "bottom", "xanchor": "left",
                                       "showarrow": False, "text": f"budget {money(budget)}",
                                       "font": {"color": "#b00020"}}]
        cost_layout["yaxis"]["range"] = [0, max(budget, total) * 1.1]
    figs["cost"] = {"data": [{"type": "scatter", "mode": "lines", "fill": "tozeroy", "name": "cumulative cost",
                              "x": xs, "y": running, **money_hover(running)}], "layout": cost_layout}
    lat = latency_percentiles(f)
    lx = [x[0].isoformat() for x in lat]
    figs["latency"] = {"data": [{"type": "scatter", "mode": "lines+markers", "name": "p50", "x": lx, "y": [x[1] for x in lat]},
                                {"type": "scatter", "mode": "lines+markers", "name": "p95", "x": lx, "y": [x[2] for x in lat]}],
                       "layout": {"title": {"text": "Latency (ms)"}}}
    for fig in figs.values():
        fig["layout"].setdefault("yaxis", {"rangemode": "tozero"})
        finish(fig, height=300, margin={"l": 50, "r": 20, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.2},
               xaxis={"range": [f.start.isoformat(), f.end.isoformat()], "type": "date"})
    return figs

