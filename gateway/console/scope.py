"""What the current console user may see, and the audit of what they change; shared by the pages."""
from __future__ import annotations

from flask import request
from flask_login import current_user

from gateway.auth.rbac import sees_everything
from gateway.htmx import navigate
from gateway.services.accounting import keys
from gateway.services.admin import audit, settings
from gateway.services.reporting import filters


def log_action(action: str, target: str = "", **details) -> None:
    """Audit a console change by the current user."""
    audit.record(current_user, action, target, details, ip=request.remote_addr or "")


def done(action: str, target: str, url: str, **details):
    """After a change: audit it, then go to `url`."""
    log_action(action, target, **details)
    return navigate(url)


def owner() -> keys.Owner | None:
    """Whose keys and requests the current user sees: a member their own and their team's;
    None for admins and viewers, who see everything."""
    return None if sees_everything() else keys.Owner(current_user.id, current_user.team_id)


def usage_filter(args=None) -> tuple[filters.UsageFilter, dict]:
    """The filter from the query string, narrowed to what the current user may see."""
    return filters.parse_filter(args if args is not None else request.args, owner())


def base_url() -> str:
    """This gateway's public URL for snippets: the setting, else the URL the browser used."""
    return (settings.get("public_base_url") or request.host_url).rstrip("/")
