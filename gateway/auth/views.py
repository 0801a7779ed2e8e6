"""Console login and logout."""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from gateway.extensions import db, login_manager
from gateway.models import User
from gateway.services import users

bp = Blueprint("auth", __name__)
login_manager.login_view = "auth.login"


@login_manager.user_loader
def load_user(user_id: str):
    return db.session.get(User, int(user_id))


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        user = users.check_login(request.form.get("email", ""), request.form.get("password", ""))
        if user:
            login_user(user)
            return redirect(url_for("console.index"))
        error = "Wrong email or password."
    if current_user.is_authenticated:
        return redirect(url_for("console.index"))
    return render_template("auth/login.html", error=error), 200 if error is None else 401


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    return redirect(url_for("auth.login"))
