"""What the current console user may see and how their changes are recorded; shared by the pages."""
from __future__ import annotations

from flask import request
from flask_login import current_user
from sqlalchemy import or_, select

from gateway.extensions import db
from gateway.models import ApiKey
from gateway.services.admin import audit, settings
from gateway.services.reporting import filters


def log_action(action: str, target: str = "", **details) -> None:
    """Audit a console change by the current user."""
    audit.record(current_user, action, target, details, ip=request.remote_addr or "")


def team_id() -> int | None:
    return getattr(current_user, "team_id", None)


def key_scope():
    """WHERE clause for the keys the current user may see (members: own and team's)."""
    if current_user.role in ("admin", "viewer"):
        return None
    mine = [ApiKey.user_id == current_user.id]
    if team_id() is not None and hasattr(ApiKey, "team_id"):
        mine.append(ApiKey.team_id == team_id())
    return or_(*mine)


def visible_key_ids() -> tuple[int, ...] | None:
    scope = key_scope()
    if scope is None:
        return None
    return tuple(db.session.scalars(select(ApiKey.id).where(scope)))


def usage_filter(args=None) -> tuple[filters.UsageFilter, dict]:
    """The filter from the query string, narrowed to what the current user may see."""
    f, errors = filters.parse_filter(args if args is not None else request.args)
    ids = visible_key_ids()
    if ids is not None:
        f.scope_user_id, f.scope_key_ids = current_user.id, ids
    return f, errors


def base_url() -> str:
    """This gateway's public URL for snippets: the setting, else the URL the browser used."""
    return (settings.get("public_base_url") or request.host_url).rstrip("/")
