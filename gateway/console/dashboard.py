"""The overview page: the last day's totals and what is configured."""
from __future__ import annotations

from flask import render_template

from gateway.auth.rbac import READ, require_role
from gateway.console import bp
from gateway.console.scope import base_url, usage_filter
from gateway.services.reporting import charts, marketplace
from gateway.services.routing import catalog


@bp.get("/")
@require_role(*READ)
def index():
    f, _ = usage_filter({"range": "24h"})
    return render_template("console/index.html", totals=charts.totals(f), base_url=base_url(),
                           models=len(catalog.model_names()), providers=marketplace.provider_count())
