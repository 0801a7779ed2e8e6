"""The overview page: the last day's totals and what is configured; its panel refreshes itself
(htmx polling every CONSOLE_REFRESH_SECONDS)."""
from __future__ import annotations

from flask import current_app

from gateway.auth.rbac import READ, require_role
from gateway.console import bp
from gateway.console.scope import base_url, usage_filter
from gateway.htmx import render
from gateway.services.reporting import charts, marketplace
from gateway.services.routing import catalog


@bp.get("/")
@require_role(*READ)
def index():
    f, _ = usage_filter({"range": "24h"})
    return render("console/index.html", "console/_overview_panel.html", totals=charts.totals(f), base_url=base_url(),
                  models=len(catalog.model_names()), providers=marketplace.provider_count(),
                  refresh_seconds=int(current_app.config["CONSOLE_REFRESH_SECONDS"]))
