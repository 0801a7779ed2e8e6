"""Console login and logout, throttled against password guessing. A login starts a fresh
session (new CSRF token); logging out ends every session of that user."""
from __future__ import annotations

import math
from urllib.parse import urlsplit

from flask import Blueprint, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from gateway.auth import throttle
from gateway.auth.security import client_ip
from gateway.extensions import login_manager
from gateway.services.admin import audit, users

bp = Blueprint("auth", __name__)
login_manager.login_view = "auth.login"


@login_manager.user_loader
def load_user(user_id: str):
    # Runs on every request: a session whose version the user has moved past is over.
    return users.session_user(user_id)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: an absolute or protocol-relative URL would be an open redirect."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") and not target.startswith("//"):
            return target
    return url_for("console.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    error, status, headers = None, 200, {}
    email = ""
    if request.method == "POST":
        email = request.form.get("email", "").strip().lower()[:255]
        ip = client_ip()
        wait = throttle.retry_after(email, ip)
        if wait:
            error, status = f"Too many failed attempts. Try again in {_minutes(wait)}.", 429
            headers["Retry-After"] = str(wait)
        else:
            user = users.check_login(email, request.form.get("password", ""))
            if user:
                throttle.succeeded(email, ip)
                start_session(user)
                audit.record(user, "auth.login", user.email, ip=ip)
                return redirect(_safe_next(request.args.get("next")))
            throttle.failed(email, ip)
            error, status = "Wrong email or password.", 401
    elif current_user.is_authenticated:
        return redirect(url_for("console.index"))
    return render_template("auth/login.html", error=error, email=email), status, headers


def start_session(user) -> None:
    """Log in on a new session: nothing from before the login, the CSRF token included, is kept."""
    session.clear()
    g.pop("csrf_token", None)       # flask-wtf's per-request copy of the old token
    login_user(user)


def _minutes(seconds: int) -> str:
    return "a minute" if seconds <= 60 else f"{math.ceil(seconds / 60)} minutes"


@bp.post("/logout")
@login_required
def logout():
    audit.record(current_user, "auth.logout", current_user.email, ip=client_ip())
    # A cookie copied before this point must not work afterwards, in any browser.
    users.end_sessions(current_user)
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
