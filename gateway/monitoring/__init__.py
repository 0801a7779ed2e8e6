"""What load balancers and Prometheus ask: /healthz, /readyz, /metrics. No login, no session
cookie, JSON errors; /metrics takes a bearer token when GATEWAY_METRICS_TOKEN is set."""
from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, current_app, jsonify, request

from gateway.errors import api_error
from gateway.metrics import metrics
from gateway.services import checks

bp = Blueprint("monitoring", __name__)
log = logging.getLogger("gateway.monitoring")
NO_STORE = {"Cache-Control": "no-store"}


@bp.get("/healthz")
def healthz():
    """The process is up and answers; nothing else is asked."""
    return jsonify(status="ok"), 200, NO_STORE


@bp.get("/readyz")
def readyz():
    """Ready for traffic: the database answers, its migrations are at head, Redis answers
    (when configured). 503 names the failing check; the details go to the log only."""
    found = checks.readiness(current_app)
    failed = [c for c in found if not c.ok]
    for c in failed:
        log.warning("not ready: %s: %s", c.name, c.detail)
    body = {"status": "unavailable" if failed else "ready", "checks": {c.name: c.public for c in found}}
    if failed:
        body["reason"] = "; ".join(f"{c.name} {c.public}" for c in failed)
    return jsonify(body), 503 if failed else 200, NO_STORE


@bp.get("/metrics")
def prometheus():
    """Prometheus text format, from every worker of this instance."""
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            body, status = api_error(401, "A valid metrics token is required (Authorization: Bearer ...).",
                                     code="invalid_metrics_token")
            return body, status, {"WWW-Authenticate": 'Bearer realm="metrics"', **NO_STORE}
    data, content_type = metrics(current_app).render()
    return Response(data, content_type=content_type, headers=NO_STORE)
