"""Console login and logout, throttled against password guessing."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from gateway.auth import throttle
from gateway.auth.security import client_ip
from gateway.extensions import db, login_manager
from gateway.models import User
from gateway.services.admin import audit, users

bp = Blueprint("auth", __name__)
login_manager.login_view = "auth.login"


@login_manager.user_loader
def load_user(user_id: str):
    return db.session.get(User, int(user_id))


def _safe_next(target: str | None) -> str:
    """Only same-site paths: an absolute or protocol-relative URL would be an open redirect."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") and not target.startswith("//"):
            return target
    return url_for("console.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    error, status = None, 200
    email = ""
    if request.method == "POST":
        email = request.form.get("email", "").strip().lower()[:255]
        ip = client_ip()
        if throttle.blocked(email, ip):
            error, status = "Too many failed attempts. Wait 15 minutes and try again.", 429
        else:
            user = users.check_login(email, request.form.get("password", ""))
            if user:
                throttle.succeeded(email)
                login_user(user)
                audit.record(user, "auth.login", user.email, ip=ip)
                return redirect(_safe_next(request.args.get("next")))
            throttle.failed(email, ip)
            error, status = "Wrong email or password.", 401
    elif current_user.is_authenticated:
        return redirect(url_for("console.index"))
    return render_template("auth/login.html", error=error, email=email), status


@bp.post("/logout")
@login_required
def logout():
    audit.record(current_user, "auth.logout", current_user.email, ip=client_ip())
    logout_user()
    return redirect(url_for("auth.login"))
