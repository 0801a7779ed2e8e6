"""Alerts: a spend or token threshold crossed by a key, team, plan or tag (after a settle, and at
100% when the cap refuses a request), or a deployment's health (routing/health_alerts.py). Each
is recorded once (the console shows open ones as a banner and on the Alerts page) and delivered
by a signed webhook and e-mail (alert_delivery.py).

"Once" holds across processes: the alerts table is unique on (scope, kind, period_start,
threshold), so only the process whose insert wins delivers it.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from flask import Flask, current_app
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from gateway.extensions import db
from gateway.formatting import money
from gateway.models import Alert, ApiKey, Plan, TagBudget, Team, utcnow
from gateway.services.accounting import alert_delivery
from gateway.services.accounting.alert_delivery import sign, verify  # noqa: F401 - the receiving side
from gateway.services.admin import settings

log = logging.getLogger("gateway.alerts")

KINDS = ("spend", "tokens", "error_rate", "latency_p95", "provider_down")
HEALTH_KINDS = ("error_rate", "latency_p95", "provider_down")
SCOPES = ("key", "team", "plan", "tag", "deployment")
PREFIXES = tuple(f"{s}:" for s in SCOPES)
SIGNATURE_HEADER = alert_delivery.SIGNATURE_HEADER
TIMESTAMP_HEADER = alert_delivery.TIMESTAMP_HEADER


@dataclass(frozen=True, slots=True)
class Target:
    """Who a scope's alerts are about, their thresholds, and where they are sent."""
    label: str
    thresholds: tuple[int, ...]
    url: str = ""
    secret_enc: str = ""
    key_id: int | None = None
    team_id: int | None = None


class Fired:
    """What this process already knows is recorded, so most settles skip the database: the
    (scope, kind, period, threshold) marks, and each scope's target for a few seconds."""

    def __init__(self):
        self.seen: set[tuple] = set()
        self.targets: dict[str, tuple[float, Target | None]] = {}
        self.lock = threading.Lock()


def _fired(app: Flask) -> Fired:
    return app.extensions["alerts_fired"]


def thresholds_of(values) -> tuple[int, ...]:
    return tuple(sorted({int(t) for t in values or ()}))


def global_webhook() -> tuple[str, str]:
    """The settings' alert webhook (URL, encrypted secret): keys, plans, health, and teams or
    tags that name none of their own."""
    return settings.get("alert_webhook_url") or "", settings.get("alert_webhook_secret") or ""


def _target(scope: str) -> Target | None:
    """The target of a key:ID, team:ID, plan:ID or tag:k=v scope; None when it has no alerts."""
    kind, _, rest = scope.partition(":")
    url, secret = global_webhook()
    if kind == "key" and rest.isdigit():
        k = db.session.get(ApiKey, int(rest))
        if k is None:
            return None
        return Target(f"key {k.name} ({k.prefix}…)", thresholds_of(settings.get("key_alert_thresholds")),
                      url, secret, key_id=k.id, team_id=k.team_id)
    if kind == "team" and rest.isdigit():
        t = db.session.get(Team, int(rest))
        if t is None:
            return None
        own = bool(t.webhook_url)
        return Target(f"team {t.name}", thresholds_of(t.alert_thresholds), t.webhook_url if own else url,
                      t.webhook_secret_enc if own else secret, team_id=t.id)
    if kind == "plan" and rest.isdigit():
        p = db.session.get(Plan, int(rest))
        if p is None:
            return None
        mine = getattr(p, "alert_thresholds", None)     # a plan's own, once plans carry them
        return Target(f"plan {p.name}", thresholds_of(mine or settings.get("key_alert_thresholds")), url, secret)
    if kind == "tag":
        tag, _, value = rest.partition("=")
        b = db.session.scalar(select(TagBudget).where(TagBudget.tag == tag, TagBudget.value == value))
        if b is None:
            return None
        own = bool(b.webhook_url)
        return Target(f"tag {tag}={value}", thresholds_of(b.alert_thresholds), b.webhook_url if own else url,
                      b.webhook_secret_enc if own else secret)
    return None


def target(app: Flask, scope: str) -> Target | None:
    """_target(), cached per process for CATALOG_CACHE_SECONDS."""
    fired = _fired(app)
    hit = fired.targets.get(scope)
    now = time.monotonic()
    if hit is not None and now - hit[0] < float(app.config["CATALOG_CACHE_SECONDS"]):
        return hit[1]
    found = _target(scope)
    with fired.lock:
        if len(fired.targets) > 10_000:
            fired.targets.clear()
        fired.targets[scope] = (now, found)
    return found


def _metrics(limit, used_tokens: int, used_usd: float):
    """(kind, used, cap) for each cap a counter has."""
    if limit.usd is not None and limit.usd > 0:
        yield "spend", used_usd, limit.usd
    if limit.tokens is not None and limit.tokens > 0:
        yield "tokens", used_tokens, limit.tokens


def check(app: Flask, res, counters: dict) -> list[Alert]:
    """After a settle: record and deliver an alert for every threshold newly crossed."""
    made = []
    for limit in res.limits:
        c = counters.get(limit.scope)
        if limit.rate or c is None or not limit.scope.startswith(PREFIXES):
            continue
        for kind, used, cap in _metrics(limit, c.used_tokens, c.used_usd):
            pct = used / cap * 100
            if pct >= 1:
                made += crossed(app, limit.scope, limit.period_start, used, pct, kind=kind, cap=cap)
    return made


def cap_reached(app: Flask, limit, res, read) -> list[Alert]:
    """A request was refused by `limit`: its cap is reached, so the thresholds up to 100% fire
    now (settled spend alone may never reach 100%: the cap stops it first). `read()` gives the
    counters, read only when some 100% mark is not known to be recorded yet."""
    if limit.rate or not limit.scope.startswith(PREFIXES):
        return []
    fired, tgt = _fired(app), target(app, limit.scope)
    kinds = [k for k, _, _ in _metrics(limit, 0, 0.0)]
    if tgt is None or all((limit.scope, k, limit.period_start, t) in fired.seen for k in kinds for t in tgt.thresholds):
        return []
    c = read().get(limit.scope)
    if c is None:
        return []
    made = []
    for kind, used, cap in _metrics(limit, c.used_tokens, c.used_usd):
        held = c.reserved_tokens + res.tokens if kind == "tokens" else c.reserved_usd + res.usd
        if used + held > cap or used >= cap:
            made += crossed(app, limit.scope, limit.period_start, used, used / cap * 100, kind=kind, cap=cap,
                            refused=True)
    return made


def _message(label: str, kind: str, used: float, cap: float, pct: float, threshold: int, refused: bool) -> str:
    if kind == "tokens":
        amounts = f"{int(used):,} of {int(cap):,} tokens"
        what = "token quota"
    else:
        amounts, what = f"{money(used)} of {money(cap)}", "budget"
    if refused:
        return f"{label} reached its {what} ({amounts}): requests are refused until the period ends."
    return f"{label} crossed {threshold}% of its {what}: {amounts} used ({pct:.0f}%)."


def crossed(app: Flask, scope: str, period_start: datetime, used: float, pct: float, kind: str = "spend",
            cap: float | None = None, refused: bool = False) -> list[Alert]:
    """Record alerts for each configured threshold at or under pct (every one up to 100 when
    the cap `refused` a request), once each."""
    fired = _fired(app)
    reach = max(pct, 100.0) if refused else pct
    tgt = target(app, scope)
    if tgt is None:
        return []
    made: list[Alert] = []
    for threshold in tgt.thresholds:
        mark = (scope, kind, period_start, threshold)
        if reach + 1e-9 < threshold or mark in fired.seen:
            continue
        if cap is None:         # the caller knows the percentage only (a USD budget)
            cap = used / pct * 100 if pct else 0.0
        alert = record(app, kind, scope, tgt, period_start, threshold,
                       _message(tgt.label, kind, used, cap, pct, threshold, refused and threshold == 100), used, cap)
        with fired.lock:
            if len(fired.seen) > 100_000:       # old periods' marks; the table still says "once"
                fired.seen.clear()
            fired.seen.add(mark)
        if alert is not None:
            made.append(alert)
    return made


def record(app: Flask, kind: str, scope: str, tgt: Target, period_start: datetime, threshold: int,
           message: str, value: float | None, limit_value: float | None) -> Alert | None:
    """Insert one alert and deliver it; None when it was already recorded (by any process)."""
    spend = kind == "spend"
    alert = Alert(scope=scope, kind=kind, label=tgt.label[:300], period_start=period_start, threshold=threshold,
                  spent_usd=round(value or 0.0, 6) if spend else 0.0, budget_usd=(limit_value or 0.0) if spend else 0.0,
                  value=value, limit_value=limit_value, message=message[:500], key_id=tgt.key_id,
                  team_id=tgt.team_id, webhook_status="pending" if tgt.url else "none",
                  email_status="pending" if alert_delivery.smtp_configured(app) else "")
    db.session.add(alert)
    try:
        db.session.commit()
    except IntegrityError:      # another process or request got there first
        db.session.rollback()
        return None
    log.info("alert %s: %s", kind, message)
    alert_delivery.deliver(app, alert.id, payload(alert), tgt.url, tgt.secret_enc)
    return alert


def payload(alert: Alert) -> dict:
    """The webhook body: what happened, never a secret (keys appear by name and prefix)."""
    types = {"spend": "budget.threshold_crossed", "tokens": "quota.threshold_crossed"}
    return {"type": types.get(alert.kind, f"health.{alert.kind}"), "alert_id": alert.id, "kind": alert.kind,
            "scope": alert.scope, "name": alert.label, "message": alert.message,
            "threshold_percent" if alert.kind in ("spend", "tokens") else "threshold": alert.threshold,
            "value": alert.value, "limit": alert.limit_value, "spent_usd": alert.spent_usd,
            "budget_usd": alert.budget_usd, "period_start": alert.period_start.isoformat() + "Z",
            "created_at": (alert.created_at or utcnow()).isoformat() + "Z"}


def _visible(q, owner):
    """Alerts `owner` (key_scope.Owner; None: everything) may see: their own keys' and team's."""
    if owner is None:
        return q
    own_keys = select(ApiKey.id).where(ApiKey.user_id == owner.user_id)
    mine = [Alert.key_id.in_(own_keys)]
    if owner.team_id is not None:
        mine.append(Alert.team_id == owner.team_id)
    return q.where(or_(*mine))


def _open(q):
    return q.where(Alert.acknowledged.is_(False), Alert.resolved_at.is_(None))


def open_alerts(limit: int = 20, owner=None) -> list[Alert]:
    """Alerts neither acknowledged nor resolved, newest first: the console banner."""
    return list(db.session.scalars(_visible(_open(select(Alert)), owner).order_by(Alert.id.desc()).limit(limit)))


def history(owner=None, kind: str = "", scope: str = "", state: str = "", page: int = 1,
            per_page: int = 50) -> tuple[list[Alert], int]:
    """A page of alerts, newest first, and how many match. `scope`: a kind of scope (key, team,
    ...) or an exact scope; `state`: open, acknowledged, resolved or "" for all."""
    q = _visible(select(Alert), owner)
    if kind in KINDS:
        q = q.where(Alert.kind == kind)
    if scope in SCOPES:
        q = q.where(Alert.scope.startswith(scope + ":"))
    elif scope:
        q = q.where(Alert.scope == scope)
    if state == "open":
        q = _open(q)
    elif state == "acknowledged":
        q = q.where(Alert.acknowledged.is_(True))
    elif state == "resolved":
        q = q.where(Alert.resolved_at.is_not(None))
    total = db.session.scalar(select(func.count()).select_from(q.subquery()))
    rows = db.session.scalars(q.order_by(Alert.id.desc()).limit(per_page).offset((page - 1) * per_page)).all()
    return list(rows), total


def acknowledge(alert_id: int | None = None, by: str = "") -> int:
    """Dismiss one alert, or all of them; returns how many."""
    stmt = update(Alert).where(Alert.acknowledged.is_(False))
    if alert_id is not None:
        stmt = stmt.where(Alert.id == alert_id)
    n = db.session.execute(stmt.values(acknowledged=True, acknowledged_at=utcnow(), acknowledged_by=by[:255])).rowcount
    db.session.commit()
    return n


def unresolved(kinds=HEALTH_KINDS) -> list[Alert]:
    """Alerts of `kinds` not resolved yet (the health check resolves them)."""
    return list(db.session.scalars(select(Alert).where(Alert.kind.in_(kinds), Alert.resolved_at.is_(None))))


def resolve(ids: list[int]) -> int:
    """Mark alerts resolved (their condition cleared); returns how many."""
    if not ids:
        return 0
    n = db.session.execute(update(Alert).where(Alert.id.in_(ids), Alert.resolved_at.is_(None))
                           .values(resolved_at=utcnow())).rowcount
    db.session.commit()
    return n


def webhook_config(url: str | None, secret: str | None, param: str = "webhook_url") -> tuple[str, str]:
    """Validate a webhook URL and encrypt its secret, for teams, tag budgets and the settings."""
    from gateway import secrets
    from gateway.errors import InvalidRequest
    from gateway.providers.ssrf import check_url
    url = (url or "").strip()
    if url:
        try:
            check_url(url, current_app.config["ALLOW_PRIVATE_UPSTREAMS"])
        except ValueError as e:
            raise InvalidRequest(f"Webhook URL: {e}", param=param) from None
    return url, secrets.encrypt(secret) if secret else ""
