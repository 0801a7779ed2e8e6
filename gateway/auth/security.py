"""Browser-side protections: CSRF token and same-origin check on every console write, secure
session cookies behind TLS, the Content-Security-Policy and other headers on every page."""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Flask, current_app, flash, g, redirect, render_template, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway.extensions import login_manager

log = logging.getLogger("gateway.auth")

# No inline script or style anywhere, no eval: the console's behaviour is static/console.js,
# charts are JSON data it draws, htmx runs with allowEval and its indicator styles off.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "font-src 'self'", "connect-src 'self'", "object-src 'none'", "base-uri 'none'",
    "form-action 'self'", "frame-ancestors 'none'"))


class ForeignOrigin(CSRFError):
    description = "The request came from another site."


class OriginCheckingCSRF(CSRFProtect):
    """flask-wtf's token check, then the browser's Origin (or, without one, its Referer) must be
    this site: a token leaked to another site is still no use there."""

    def protect(self, apply_exemptions=False):
        super().protect(apply_exemptions)
        if g.get("csrf_valid"):         # a write flask-wtf checked: not /v1, not a GET
            check_origin()


csrf = OriginCheckingCSRF()


def _origin(url: str | None) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL or Origin header; None for "null" or anything unparsable."""
    try:
        parts = urlsplit(url or "")
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port


def check_origin() -> None:
    """ForeignOrigin unless the request's Origin or Referer is this site (as the client reached
    it: behind TRUST_PROXY, the scheme and host the proxy saw) or one of TRUSTED_ORIGINS.
    Over plain http a request with neither header (not a browser) passes on its CSRF token
    alone; over https one of them is required, as flask-wtf's strict mode did."""
    source = request.headers.get("Origin")
    if source is None:
        source = request.referrer
        if source is None:
            if request.is_secure:
                raise ForeignOrigin("The Origin and Referer headers are missing.")
            return
    allowed = {_origin(request.host_url)}
    allowed |= {_origin(o.strip()) for o in current_app.config.get("TRUSTED_ORIGINS", "").split(",") if o.strip()}
    if _origin(source) in allowed - {None}:
        return
    log.warning("refused a console write from %r: this site is %s (if that is this site behind a "
                "proxy: GATEWAY_TRUST_PROXY=1, or list it in GATEWAY_TRUSTED_ORIGINS)", source[:200], request.host_url)
    raise ForeignOrigin()


class SessionInterface(SecureCookieSessionInterface):
    """Mark the cookie Secure whenever the request came over TLS (directly or via a trusted proxy).
    The /v1 API authenticates by key, never by cookie: it gets no session at all (reading and
    verifying the signed cookie cost every API request ~40 µs)."""

    def open_session(self, app: Flask, request):
        if request.path.startswith("/v1/"):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)


def init_app(app: Flask) -> None:
    """Call after the blueprints are registered: the /v1 API authenticates by key, not cookie."""
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)   # the token lives as long as the session
    app.config.setdefault("WTF_CSRF_HEADERS", ["X-CSRFToken", "X-CSRF-Token"])
    # check_origin() covers flask-wtf's https Referer check, and takes the Origin header too.
    app.config.setdefault("WTF_CSRF_SSL_STRICT", False)
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
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(e: CSRFError):
        if isinstance(e, ForeignOrigin):
            title, short = "Request refused", "Refused: this request came from another site."
            long = "This request came from another site, so it was refused. Open the console directly and try again."
        else:
            title, short = "Form expired", "Your session expired or the form is stale: reload the page."
            long = "The form's security token is missing or stale. Go back, reload and try again."
        if request.headers.get("HX-Request") == "true":
            return render_template("console/_flash.html", kind="error", message=short), 403
        return render_template("error.html", title=title, message=long), 403

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
