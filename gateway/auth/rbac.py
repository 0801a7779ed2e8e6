"""Role checks for console routes, enforced on the server for every request."""
from __future__ import annotations

from functools import wraps

from flask import abort
from flask_login import current_user, login_required

# What each role may do; views name the capability they need.
READ = ("admin", "member", "viewer")
WRITE = ("admin", "member")      # members write only within their own scope (own/team keys)
ADMIN = ("admin",)
SEE_ALL = ("admin", "viewer")    # every key, request and provider; members see their own and their team's


def require_role(*roles: str):
    """Route decorator: logged in, active, and one of `roles` (else 403)."""
    allowed = set(roles)

    def wrap(view):
        @wraps(view)
        @login_required
        def inner(*args, **kwargs):
            if current_user.role not in allowed:
                abort(403)
            return view(*args, **kwargs)
        inner.required_roles = tuple(sorted(allowed))
        return inner
    return wrap


def is_admin() -> bool:
    return current_user.is_authenticated and current_user.role == "admin"


def sees_everything() -> bool:
    """Admins and viewers see every key and request; members only their own and their team's."""
    return current_user.is_authenticated and current_user.role in SEE_ALL
