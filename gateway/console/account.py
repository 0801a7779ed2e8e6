"""The signed-in user's own account: change the password (which ends their other sessions)."""
from __future__ import annotations

from flask import render_template, request
from flask_login import current_user

from gateway.auth import throttle
from gateway.auth.rbac import READ, require_role
from gateway.auth.security import client_ip
from gateway.auth.views import start_session
from gateway.console import bp
from gateway.console.scope import log_action
from gateway.errors import InvalidRequest
from gateway.services.admin import users


@bp.route("/account", methods=["GET", "POST"])
@require_role(*READ)
def account():
    errors, status, headers, changed = {}, 200, {}, False
    if request.method == "POST":
        f, ip, email = request.form, client_ip(), current_user.email
        wait = throttle.retry_after(email, ip)      # a stolen session must not guess the password
        if wait:
            errors["current_password"] = "Too many wrong passwords. Try again later."
            status, headers = 429, {"Retry-After": str(wait)}
        elif f.get("password", "") != f.get("confirm", ""):
            errors["confirm"] = "The two new passwords differ."
        else:
            try:
                user = users.change_password(current_user._get_current_object(),     # the User, not the proxy
                                             f.get("current_password", ""), f.get("password", ""))
            except InvalidRequest as e:
                if e.param == "current_password":
                    throttle.failed(email, ip)
                errors[e.param or "password"] = e.message
            else:
                start_session(user)     # this browser stays signed in, on the new version
                log_action("user.password", user.email)
                changed = True
        status = 422 if errors and status == 200 else status
    return render_template("console/account.html", errors=errors, changed=changed), status, headers
