"""Health alerts: every ALERT_CHECK_SECONDS each process looks at the live statistics of every
enabled deployment (health.py) and records an alert when its error rate or p95 latency is over
the settings' limit or its circuit is open; the alert is resolved once the condition clears.

An alert is recorded once per deployment, kind and hour across processes and instances (the
alerts table's unique constraint), and not again while an earlier one is still unresolved.
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from datetime import datetime

from flask import Flask
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import Alert, Deployment, Provider, utcnow
from gateway.services.accounting import alerts
from gateway.services.admin import settings
from gateway.services.routing.health import health
from gateway.threads import PerProcessThread

log = logging.getLogger("gateway.alerts")


@dataclass(frozen=True, slots=True)
class Condition:
    kind: str
    active: bool            # alert now
    cleared: bool           # known to be fine now: resolve an open alert
    value: float | None
    threshold: int
    message: str = ""


def conditions(app: Flask, dep_id: int, label: str, values: dict) -> list[Condition]:
    """What the statistics say about one deployment, for each kind of health alert."""
    h = health(app)
    st, circuit = h.stats(dep_id), h.state(dep_id)
    enough = st.count >= int(app.config["ALERT_MIN_REQUESTS"])
    window = int(float(app.config["HEALTH_WINDOW_SECONDS"]) // 60)
    out = []
    limit = int(values.get("alert_error_rate_percent") or 0)
    rate = st.error_rate * 100
    out.append(Condition("error_rate", bool(limit) and enough and rate > limit, not limit or (st.count > 0 and rate <= limit),
                         round(rate, 2), limit, f"{label}: error rate {rate:.0f}% over the last {window} min "
                         f"({st.count} requests), above {limit}%."))
    limit = int(values.get("alert_latency_p95_ms") or 0)
    p95 = st.p95_ms
    out.append(Condition("latency_p95", bool(limit) and enough and p95 is not None and p95 > limit,
                         not limit or (p95 is not None and p95 <= limit), p95, limit,
                         f"{label}: p95 latency {p95 or 0:,.0f} ms over the last {window} min, above {limit:,} ms."))
    on = bool(values.get("alert_provider_down"))
    out.append(Condition("provider_down", on and circuit == "open", not on or circuit == "closed", None, 0,
                         f"{label}: circuit open after repeated failures; requests go to other deployments."))
    return out


def evaluate(app: Flask, now: datetime | None = None) -> tuple[list[Alert], int]:
    """One look at every enabled deployment: (alerts recorded, alerts resolved)."""
    now = now or utcnow()
    hour = now.replace(minute=0, second=0, microsecond=0)
    values = settings.all_settings()
    url, secret = alerts.global_webhook()
    deps = db.session.execute(select(Deployment.id, Deployment.model, Provider.name).join(Provider)
                              .where(Deployment.enabled.is_(True), Provider.enabled.is_(True))).all()
    unresolved = {(a.scope, a.kind): a.id for a in alerts.unresolved()}
    made, clear, seen = [], [], set()
    for dep_id, model, provider in deps:
        scope = f"deployment:{dep_id}"
        label = f"deployment {model} on {provider}"
        for c in conditions(app, dep_id, label, values):
            seen.add((scope, c.kind))
            if c.active and (scope, c.kind) not in unresolved:
                alert = alerts.record(app, c.kind, scope, alerts.Target(label, (), url, secret), hour, c.threshold,
                                      c.message, c.value, float(c.threshold) if c.threshold else None)
                if alert is not None:
                    made.append(alert)
            elif c.cleared and (scope, c.kind) in unresolved:
                clear.append(unresolved[(scope, c.kind)])
    # A deployment disabled or deleted since: nothing to watch any more.
    clear += [i for k, i in unresolved.items() if k not in seen and k[0].startswith("deployment:")]
    return made, alerts.resolve(clear)


class AlertChecker:
    """The periodic health-alert check: one thread per process (app.extensions["alert_checker"])."""

    def __init__(self, app: Flask):
        self.app = app
        self.thread = PerProcessThread("alert-check", self._loop)
        self.stopped = threading.Event()

    def enabled(self) -> bool:
        c = self.app.config
        return float(c["ALERT_CHECK_SECONDS"]) > 0 and (not self.app.testing or bool(c["ALERT_CHECK_IN_TESTING"]))

    def ensure(self) -> None:
        """Start the thread in this process (not under TESTING unless asked, not when off)."""
        if self.enabled() and not self.stopped.is_set():
            self.thread.ensure()

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        interval = float(self.app.config["ALERT_CHECK_SECONDS"])
        while not self.stopped.wait(interval * random.uniform(0.8, 1.0)):
            try:
                self.run_once()
            except Exception:       # the next look tries again
                log.warning("health alert check failed", exc_info=True)

    def run_once(self, now: datetime | None = None) -> tuple[list[Alert], int]:
        with self.app.app_context():
            try:
                made, resolved = evaluate(self.app, now)
                for a in made:      # readable after the session is gone
                    db.session.refresh(a)
                db.session.expunge_all()
                return made, resolved
            finally:
                db.session.remove()
