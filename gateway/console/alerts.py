"""Alerts: the banner on every page (open alerts the user may see), the history page with its
filters, and acknowledging one or all (admins)."""
from __future__ import annotations

import logging

from flask import g, request, url_for
from flask_login import current_user
from sqlalchemy.exc import SQLAlchemyError

from gateway.auth.rbac import ADMIN, READ, require_role
from gateway.console import bp
from gateway.console.scope import done, owner
from gateway.extensions import db
from gateway.htmx import navigate, render
from gateway.models import Alert
from gateway.services.accounting import alerts

log = logging.getLogger("gateway.alerts")
PER_PAGE = 50
BANNER_ROWS = 3
STATES = ("open", "acknowledged", "resolved")


def alert_banner() -> dict:
    """The open alerts the current user may see, for base.html: one indexed query, once per request."""
    if "alert_banner" not in g:
        rows = []
        if current_user.is_authenticated:
            try:
                rows = alerts.open_alerts(limit=BANNER_ROWS + 1, owner=owner())
            except SQLAlchemyError:     # an error page must still render
                db.session.rollback()
                log.warning("reading open alerts for the banner failed", exc_info=True)
        g.alert_banner = {"alerts": rows[:BANNER_ROWS], "more": len(rows) > BANNER_ROWS}
    return g.alert_banner


@bp.app_context_processor
def banner_context():
    return {"alert_banner": alert_banner}


def _filters(source) -> dict:
    kind = source.get("kind", "")
    scope = source.get("scope", "").strip()[:300]
    state = source.get("state", "")
    return {"kind": kind if kind in alerts.KINDS else "", "scope": scope,
            "state": state if state in STATES else ""}


@bp.get("/alerts")
@require_role(*READ)
def alerts_index():
    f = _filters(request.args)
    page = max(1, request.args.get("page", 1, type=int))
    rows, total = alerts.history(owner(), page=page, per_page=PER_PAGE, **f)
    return render("console/alerts.html", "console/_alert_rows.html", rows=rows, total=total, page=page,
                  more=page * PER_PAGE < total, kinds=alerts.KINDS, scopes=alerts.SCOPES, states=STATES, **f)


def _back() -> str:
    f = {k: v for k, v in _filters(request.form).items() if v}
    return url_for("console.alerts_index", **f)


@bp.post("/alerts/<int:alert_id>/acknowledge")
@require_role(*ADMIN)
def alert_acknowledge(alert_id: int):
    alert = db.get_or_404(Alert, alert_id)
    if not alerts.acknowledge(alert.id, by=current_user.email):     # already done (another tab, another admin)
        return navigate(_back())
    return done("alert.acknowledge", alert.label, _back(), alert_id=alert.id, kind=alert.kind, scope=alert.scope,
                threshold=alert.threshold)


@bp.post("/alerts/acknowledge")
@require_role(*ADMIN)
def alerts_acknowledge_all():
    n = alerts.acknowledge(by=current_user.email)
    return done("alert.acknowledge_all", "alerts", _back(), count=n)
