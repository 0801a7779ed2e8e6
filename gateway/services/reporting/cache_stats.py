"""The usage view's response cache and overhead tiles: hit rate and USD saved, and the
gateway's own p50/p95 next to the upstream's (latency less overhead).

Read from usage_records over the filter (the rollup has no cache or overhead columns): one
aggregate, then one ORDER BY ... OFFSET per percentile, the same on SQLite and Postgres. When the
filter is a time range only, the index ix_usage_created_cache answers all five on its own,
without reading the table's wide rows (on 100,000 records, SQLite went from ~90 to ~25 ms for 24
hours; README, Benchmark).
"""
from __future__ import annotations

import math

from sqlalchemy import and_, case, func, select

from gateway.extensions import db
from gateway.models import UsageRecord
from gateway.services.reporting.filters import UsageFilter, conditions, time_only


def _percentile(expr, where: list, n: int, q: float) -> float | None:
    """The nearest-rank q-th value of `expr` among `n` rows matching `where`."""
    if not n:
        return None
    k = max(0, math.ceil(q * n) - 1)
    return db.session.scalar(select(expr).where(*where).order_by(expr).offset(k).limit(1))


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
    upstream = [*timed, went_upstream]
    wait = r.latency_ms - r.overhead_ms
    return {"hits": hits, "answered": answered, "hit_rate": hits / answered if answered else 0.0,
            "saved_usd": float(saved or 0.0),
            "overhead_p50": _percentile(r.overhead_ms, timed, n, 0.5),
            "overhead_p95": _percentile(r.overhead_ms, timed, n, 0.95),
            "upstream_p50": _percentile(wait, upstream, m, 0.5),
            "upstream_p95": _percentile(wait, upstream, m, 0.95)}
