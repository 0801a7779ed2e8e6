"""How requests ended: failed requests by error type, and its chart.

The rollup keeps the status but not the error type, so this reads usage_records, grouped by
the database over the filter's failed requests only (a few rows come back, never the records).
"""
from __future__ import annotations

from sqlalchemy import case, func, select

from gateway.extensions import db
from gateway.models import UsageRecord
from gateway.services.reporting.figure_style import finish
from gateway.services.reporting.filters import UsageFilter, conditions

TOP_TYPES = 12      # bars drawn; the rest is summed as "other"


def error_types(f: UsageFilter) -> list[dict]:
    """Failed requests (status >= 400) by error type, most frequent first: type, requests,
    of them throttled (429)."""
    r = UsageRecord
    kind = func.coalesce(r.error_type, "unknown").label("kind")
    q = (select(kind, func.count(), func.sum(case((r.status == 429, 1), else_=0)))
         .where(*conditions(f), r.status >= 400).group_by(kind))
    rows = sorted(((k, int(n), int(t or 0)) for k, n, t in db.session.execute(q)), key=lambda x: (-x[1], x[0]))
    out = [{"type": k, "requests": n, "throttled": t} for k, n, t in rows[:TOP_TYPES]]
    rest = rows[TOP_TYPES:]
    if rest:
        out.append({"type": "other", "requests": sum(x[1] for x in rest), "throttled": sum(x[2] for x in rest)})
    return out


def error_type_figure(rows: list[dict]) -> dict:
    """A horizontal bar chart of failed requests by error type (Plotly JSON, drawn by console.js)."""
    rows = list(reversed(rows))     # plotly draws the first bar at the bottom
    return finish({"data": [{"type": "bar", "orientation": "h", "name": "failed requests",
                             "y": [r["type"] for r in rows], "x": [r["requests"] for r in rows]}],
                   "layout": {"title": {"text": "Errors by type"}, "height": 300,
                              "margin": {"l": 160, "r": 20, "t": 40, "b": 40},
                              "xaxis": {"rangemode": "tozero", "title": {"text": "requests"}},
                              "yaxis": {"automargin": True}}})
