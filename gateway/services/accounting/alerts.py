"""Budget alerts: when a team's or tag's spend crosses a threshold, record an Alert (the console
shows open ones as a banner) and POST a signed webhook, once per threshold per period.

"Once" holds across processes: the alerts table is unique on (scope, period, threshold), so
only the process whose insert wins sends. The webhook body is JSON, signed with HMAC-SHA256
over "<timestamp>.<body>" in X-Gateway-Signature: sha256=<hex>.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from datetime import datetime

import orjson
from flask import Flask, current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from gateway.extensions import db
from gateway.models import Alert, TagBudget, Team, utcnow

log = logging.getLogger("gateway.alerts")

SIGNATURE_HEADER = "X-Gateway-Signature"
TIMESTAMP_HEADER = "X-Gateway-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for a webhook body."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, tolerance: float = 300,
           now: float | None = None) -> bool:
    """What a receiver does: constant-time compare, and refuse stale timestamps (replays)."""
    try:
        if abs((now or time.time()) - float(timestamp)) > tolerance:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def _settings(scope: str) -> dict | None:
    """thresholds, budget, name and webhook of a team:ID or tag:k=v scope."""
    if scope.startswith("team:"):
        t = db.session.get(Team, int(scope[5:]))
        if t is None or not t.budget_usd:
            return None
        return {"name": f"team {t.name}", "budget": t.budget_usd, "thresholds": t.alert_thresholds or [],
                "url": t.webhook_url, "secret": t.webhook_secret_enc}
    if scope.startswith("tag:"):
        tag, _, value = scope[4:].partition("=")
        b = db.session.scalar(select(TagBudget).where(TagBudget.tag == tag, TagBudget.value == value))
        if b is None or not b.budget_usd:
            return None
        return {"name": f"tag {tag}={value}", "budget": b.budget_usd, "thresholds": b.alert_thresholds or [],
                "url": b.webhook_url, "secret": b.webhook_secret_enc}
    return None


class Fired:
    """Thresholds this process already knows are recorded, so most settles skip the database."""

    def __init__(self):
        self.seen: set[tuple[str, datetime, int]] = set()
        self.lock = threading.Lock()


def _fired(app: Flask) -> Fired:
    return app.extensions["alerts_fired"]


def check(app: Flask, res, counters: dict) -> list[Alert]:
    """After a settle: record and send an alert for every threshold newly crossed."""
    made = []
    for limit in res.limits:
        if limit.usd is None or not limit.scope.startswith(("team:", "tag:")):
            continue
        c = counters.get(limit.scope)
        if c is None or limit.usd <= 0:
            continue
        pct = c.used_usd / limit.usd * 100
        if pct < 1:
            continue
        made += crossed(app, limit.scope, limit.period_start, c.used_usd, pct)
    return made


def crossed(app: Flask, scope: str, period_start: datetime, spent: float, pct: float) -> list[Alert]:
    """Record alerts for each configured threshold at or under pct, once each."""
    fired = _fired(app)
    made: list[Alert] = []
    settings = _settings(scope)
    if settings is None:
        return made
    for threshold in sorted(int(t) for t in settings["thresholds"]):
        mark = (scope, period_start, threshold)
        if pct + 1e-9 < threshold or mark in fired.seen:
            continue
        alert = Alert(scope=scope, label=settings["name"], period_start=period_start, threshold=threshold,
                      spent_usd=round(spent, 6), budget_usd=settings["budget"],
                      webhook_status="pending" if settings["url"] else "none")
        db.session.add(alert)
        try:
            db.session.commit()
        except IntegrityError:      # another process or request got there first
            db.session.rollback()
            with fired.lock:
                fired.seen.add(mark)
            continue
        with fired.lock:
            fired.seen.add(mark)
        made.append(alert)
        if settings["url"]:
            send(app, alert.id, settings["url"], settings["secret"], payload(alert))
    return made


def payload(alert: Alert) -> dict:
    return {"type": "budget.threshold_crossed", "alert_id": alert.id, "scope": alert.scope,
            "name": alert.label, "threshold_percent": alert.threshold, "spent_usd": alert.spent_usd,
            "budget_usd": alert.budget_usd, "period_start": alert.period_start.isoformat() + "Z",
            "created_at": (alert.created_at or utcnow()).isoformat() + "Z"}


def send(app: Flask, alert_id: int, url: str, secret_enc: str, body: dict, background: bool = True) -> None:
    """POST the signed webhook; in a thread so a slow receiver holds no request."""
    if background and not app.config.get("ALERTS_SYNC"):
        threading.Thread(target=send, args=(app, alert_id, url, secret_enc, body, False),
                         name="alert-webhook", daemon=True).start()
        return
    from gateway.providers.base import UpstreamRequest
    from gateway import secrets
    with app.app_context():
        status = "sent"
        try:
            data = orjson.dumps(body)
            ts = str(int(time.time()))
            secret = secrets.decrypt(secret_enc) if secret_enc else ""
            headers = {"Content-Type": "application/json", "User-Agent": "gateway-alerts/1",
                       TIMESTAMP_HEADER: ts}
            if secret:
                headers[SIGNATURE_HEADER] = sign(secret, ts, data)
            resp = app.extensions["transport"].send(UpstreamRequest(url, headers, data))
            resp.read()
            resp.close()
            if resp.status >= 300:
                status = f"failed: HTTP {resp.status}"
        except Exception as e:      # noqa: BLE001 - a dead receiver must not break anything
            status = f"failed: {type(e).__name__}"[:64]
            log.warning("budget alert webhook failed: %s", status)
        try:
            db.session.execute(update(Alert).where(Alert.id == alert_id).values(webhook_status=status[:64]))
            db.session.commit()
        finally:
            db.session.remove()


def open_alerts(limit: int = 20) -> list[Alert]:
    """Alerts not yet acknowledged, newest first: the console banner."""
    return list(db.session.scalars(select(Alert).where(Alert.acknowledged.is_(False))
                                   .order_by(Alert.id.desc()).limit(limit)))


def acknowledge(alert_id: int | None = None) -> int:
    """Dismiss one alert, or all of them; returns how many."""
    stmt = update(Alert).where(Alert.acknowledged.is_(False))
    if alert_id is not None:
        stmt = stmt.where(Alert.id == alert_id)
    n = db.session.execute(stmt.values(acknowledged=True)).rowcount
    db.session.commit()
    return n


def webhook_config(url: str | None, secret: str | None) -> tuple[str, str]:
    """Validate a webhook URL and encrypt its secret, for teams and tag budgets."""
    from gateway.errors import InvalidRequest
    from gateway.providers.ssrf import check_url
    from gateway import secrets
    url = (url or "").strip()
    if url:
        try:
            check_url(url, current_app.config["ALLOW_PRIVATE_UPSTREAMS"])
        except ValueError as e:
            raise InvalidRequest(f"Webhook URL: {e}", param="webhook_url") from None
    return url, secrets.encrypt(secret) if secret else ""
