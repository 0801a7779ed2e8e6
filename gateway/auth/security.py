"""Browser-side protections: CSRF on every console write, secure session cookies behind TLS."""
from __future__ import annotations

from flask import Flask, flash, redirect, render_template, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway.extensions import login_manager

csrf = CSRFProtect()


class SessionInterface(SecureCookieSessionInterface):
    """Mark the cookie Secure whenever the request came over TLS (directly or via a trusted proxy)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)


def init_app(app: Flask) -> None:
    """Call after the blueprints are registered: the /v1 API authenticates by key, not cookie."""
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)   # the token lives as long as the session
    app.config.setdefault("WTF_CSRF_HEADERS", ["X-CSRFToken", "X-CSRF-Token"])
    csrf.init_app(app)
    csrf.exempt(app.blueprints["proxy"])
    app.session_interface = SessionInterface()
    if _truthy(app.config.get("TRUST_PROXY")):
        # Only behind a proxy we run: otherwise clients could claim https or any IP.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)

    @app.after_request
    def console_headers(response):
        if not request.path.startswith("/v1/"):
            response.headers.add("Vary", "HX-Request")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(e: CSRFError):
        if request.headers.get("HX-Request") == "true":
            return render_template("console/_flash.html", kind="error",
                                   message="Your session expired or the form is stale: reload the page."), 400
        return render_template("error.html", title="Form expired",
                               message="The form's security token is missing or stale. Go back, reload and try again."), 400

    @app.errorhandler(403)
    def forbidden(e):
        if request.path.startswith("/v1/"):
            from gateway.errors import api_error
            return api_error(403, "Forbidden", "permission_error")
        if request.headers.get("HX-Request") == "true":
            return render_template("console/_flash.html", kind="error",
                                   message="Your role does not allow this action."), 403
        return render_template("error.html", title="Not allowed",
                               message="Your role does not allow this page or action."), 403

    @login_manager.unauthorized_handler
    def unauthorized():
        # htmx cannot follow a redirect to the login page: tell it to navigate instead.
        target = url_for("auth.login", next=request.full_path if request.method == "GET" else None)
        if request.headers.get("HX-Request") == "true":
            return "", 401, {"HX-Redirect": target}
        if request.accept_mimetypes.best == "application/json" or request.path.endswith(".json"):
            return {"error": "login required"}, 401
        flash("Please log in to continue.")
        return redirect(target)


def client_ip() -> str:
    """The caller's address: the peer, or behind TRUST_PROXY the address our proxy saw (ProxyFix
    takes the last X-Forwarded-For entry, the one the proxy added; earlier ones are the client's
    own claims)."""
    return request.remote_addr or ""


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on") if value is not None else False
