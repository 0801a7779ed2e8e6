"""The admin console blueprint. Pages live in one module per area; what the current user may
see is in scope.py."""
from __future__ import annotations

from flask import Blueprint, request

from gateway.auth.rbac import is_admin
from gateway.console.scope import nav_entries, nav_links
from gateway.formatting import change, money

bp = Blueprint("console", __name__)
bp.add_app_template_filter(money, "money")
bp.add_app_template_filter(change, "change")


@bp.app_context_processor
def console_context():
    return {"is_admin": is_admin, "nav_links": nav_links, "nav_entries": nav_entries, "nav_active": request.endpoint or ""}


@bp.after_request
def no_store(response):
    # Console pages may show secrets once (a new key) and per-user data: never cache them.
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# The page modules attach their routes to `bp`, so they load once it exists; create_app
# imports this package before registering the blueprint.
from gateway.console import (account, admin, alerts, catalog, dashboard, keys, playground,  # noqa: E402,F401
                             plans, reports, routing, simulator, teams, usage)
