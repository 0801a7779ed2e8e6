"""Downtime history: the periods each deployment's circuit was open (deployment_events).

A period runs from the circuit opening to it closing again; half-open (a probe in flight)
is still down. A period open at the range's start is counted from the start, one still open
from its end (or now). With several workers, each writes its own transitions: the first
opening starts a period and the first closing ends it. Events are few (two or three per
outage), so they are walked here, not the usage records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func, select

from gateway.extensions import db
from gateway.models import Deployment, DeploymentEvent, Provider, utcnow
from gateway.services.reporting.figure_style import finish

DOWN = ("opened", "half_open")


@dataclass
class Period:
    start: datetime
    end: datetime
    ongoing: bool
    reason: str

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass
class Downtime:
    deployment_id: int
    label: str
    periods: list[Period] = field(default_factory=list)
    opened: int = 0             # times the circuit opened in the range

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.periods)


def history(start: datetime, end: datetime, now: datetime | None = None) -> list[Downtime]:
    """Per deployment with downtime in [start, end): its periods, most downtime first."""
    e = DeploymentEvent
    stop = min(end, now or utcnow())
    last = (select(e.deployment_id, func.max(e.at).label("at")).where(e.at < start)
            .group_by(e.deployment_id).subquery())
    before = db.session.execute(select(e.deployment_id, e.state, e.reason)
                                .join(last, and_(e.deployment_id == last.c.deployment_id, e.at == last.c.at))).all()
    inside = db.session.execute(select(e.deployment_id, e.state, e.at, e.reason)
                                .where(e.at >= start, e.at < end).order_by(e.deployment_id, e.at, e.id)).all()
    opened_at: dict[int, tuple[datetime, str]] = {}
    for dep_id, state, reason in before:
        if state in DOWN:
            opened_at[dep_id] = (start, reason)
    out: dict[int, Downtime] = {}
    for dep_id, state, at, reason in inside:
        item = out.setdefault(dep_id, Downtime(dep_id, ""))
        if state == "opened":
            item.opened += 1
        if state in DOWN:
            opened_at.setdefault(dep_id, (at, reason))
        elif dep_id in opened_at:
            since, why = opened_at.pop(dep_id)
            item.periods.append(Period(since, at, False, why))
    for dep_id, (since, why) in opened_at.items():
        if since < stop:
            out.setdefault(dep_id, Downtime(dep_id, "")).periods.append(Period(since, stop, True, why))
    found = [d for d in out.values() if d.periods]
    labels = _labels([d.deployment_id for d in found])
    for d in found:
        d.label = labels.get(d.deployment_id, f"deployment #{d.deployment_id} (deleted)")
    return sorted(found, key=lambda d: (-d.seconds, d.label))


def duration(seconds: float) -> str:
    """3 h 12 min, 4 min 05 s, 12 s: for the downtime table."""
    s = round(seconds)
    if s >= 86400:
        return f"{s // 86400} d {s % 86400 // 3600} h"
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def _labels(ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = db.session.execute(select(Deployment.id, Deployment.model, Provider.name, Deployment.upstream_model)
                              .join(Provider, Provider.id == Deployment.provider_id).where(Deployment.id.in_(ids)))
    return {i: f"{model} via {provider} ({upstream})" for i, model, provider, upstream in rows}


def timeline_figure(items: list[Downtime], start: datetime, end: datetime) -> dict:
    """The periods as horizontal bars on a time axis, one row per deployment (Plotly JSON)."""
    traces = []
    for d in items:
        traces.append({"type": "bar", "orientation": "h", "name": d.label, "showlegend": False,
                       "base": [p.start.isoformat() for p in d.periods],
                       "x": [p.seconds * 1000 for p in d.periods],      # a date axis counts milliseconds
                       "y": [d.label] * len(d.periods), "marker": {"color": "#b00020"},
                       "hovertext": [p.reason for p in d.periods]})
    return finish({"data": traces,
                   "layout": {"title": {"text": "Circuit open (downtime)"}, "barmode": "overlay",
                              "height": max(200, 80 + 36 * len(items)),
                              "margin": {"l": 20, "r": 20, "t": 40, "b": 40},
                              "xaxis": {"type": "date", "range": [start.isoformat(), end.isoformat()]},
                              "yaxis": {"automargin": True}}})
