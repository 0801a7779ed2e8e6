"""The usage view's response cache and overhead tiles: hit rate and USD saved, and the
gateway's own p50/p95 next to the upstream's (latency less overhead).

Read from usage_records over the filter (the rollup has no cache or overhead columns): one
aggregate for the counts, then one statement per percentile pair, both exact nearest-rank values:
Postgres's percentile_disc, on SQLite the rows at those ranks by row_number(). When the filter is
a time range only, the index ix_usage_created_cache answers them all without reading the table's
wide rows (on 100,000 records the 24-hour usage page went from ~120 to ~50 ms of CPU on SQLite;
README, Benchmark).
"""
from __future__ import annotations

import math

from sqlalchemy import and_, case, func, select

from gateway.extensions import db
from gateway.models import UsageRecord
from gateway.services.reporting.filters import UsageFilter, conditions, time_only

QUANTILES = (0.5, 0.95)


def _percentiles(expr, where: list, n: int) -> tuple[float | None, ...]:
    """The nearest-rank QUANTILES of `expr` among the `n` rows matching `where`, in one sort."""
    if not n:
        return (None,) * len(QUANTILES)
    if db.engine.dialect.name == "postgresql":
        return tuple(db.session.execute(select(*(func.percentile_disc(q).within_group(expr) for q in QUANTILES))
                                        .where(*where)).one())
    ranks = [max(1, math.ceil(q * n)) for q in QUANTILES]
    ranked = select(expr.label("v"), func.row_number().over(order_by=expr).label("rn")).where(*where).subquery()
    found = dict(db.session.execute(select(ranked.c.rn, ranked.c.v).where(ranked.c.rn.in_(set(ranks)))).all())
    return tuple(found.get(k) for k in ranks)


def summary(f: UsageFilter) -> dict:
    """hits, answered, hit_rate (hits per answered request), saved_usd, and overhead and
    upstream p50/p95 in ms (None without measured requests)."""
    r = UsageRecord
    where = conditions(f, covered=time_only(f))     # else the scans the other tiles do
    ok = r.status == 200
    went_upstream = and_(r.cached.is_(False), ok)
    answered, hits, saved, n, m = db.session.execute(select(
        func.sum(case((ok, 1), else_=0)), func.sum(case((and_(ok, r.cached), 1), else_=0)),
        func.sum(case((ok, r.saved_usd), else_=0.0)), func.count(r.overhead_ms),
        func.count(case((went_upstream, r.overhead_ms)))).where(*where)).one()
    answered, hits, n, m = int(answered or 0), int(hits or 0), int(n or 0), int(m or 0)
    timed = [*where, r.overhead_ms.is_not(None)]
    overhead = _percentiles(r.overhead_ms, timed, n)
    upstream = _percentiles(r.latency_ms - r.overhead_ms, [*timed, went_upstream], m)
    return {"hits": hits, "answered": answered, "hit_rate": hits / answered if answered else 0.0,
            "saved_usd": float(saved or 0.0), "overhead_p50": overhead[0], "overhead_p95": overhead[1],
            "upstream_p50": upstream[0], "upstream_p95": upstream[1]}
