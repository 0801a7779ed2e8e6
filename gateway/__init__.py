"""Application factory. Nothing heavy happens at import."""
from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from gateway import paths


def create_app(overrides: dict | None = None, instance_path: str | None = None) -> Flask:
    """The app, configured from gateway/config.py, instance/config.py and GATEWAY_* variables."""
    app = Flask(__name__, instance_relative_config=True,
                instance_path=paths.instance_path(instance_path or os.environ.get("GATEWAY_INSTANCE_PATH")),
                template_folder=paths.asset_folder("templates"), static_folder=paths.asset_folder("static"))
    app.config.from_object("gateway.config.Defaults")
    app.config.from_pyfile("config.py", silent=True)     # instance/config.py
    app.config.from_prefixed_env("GATEWAY")              # GATEWAY_SECRET_KEY=..., GATEWAY_DEMO=0
    app.config.update(overrides or {})
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_REQUEST_BYTES"]

    from gateway import database, errors, mock_upstream, secrets, services
    from gateway.extensions import db, login_manager
    from gateway.providers.transport import Timeouts, Transport

    try:
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RuntimeError(f"cannot create the instance folder {app.instance_path} ({e.strerror}): "
                           "set GATEWAY_INSTANCE_PATH to a folder this user can write") from None
    secrets.init_app(app)
    db.init_app(app)
    database.init_app(app)
    login_manager.init_app(app)
    services.init_app(app)
    c = app.config
    app.extensions["transport"] = Transport(
        Timeouts(c["UPSTREAM_CONNECT_TIMEOUT"], c["UPSTREAM_FIRST_BYTE_TIMEOUT"], c["UPSTREAM_IDLE_TIMEOUT"]),
        pool_size=c["UPSTREAM_POOL_SIZE"], allow_private=c["ALLOW_PRIVATE_UPSTREAMS"],
        in_process={"mock": mock_upstream.app})     # the `mock` kind's mock:// URLs, answered here

    from gateway.auth.views import bp as auth_bp
    from gateway.console import bp as console_bp
    from gateway.monitoring import bp as monitoring_bp
    from gateway.proxy import bp as proxy_bp
    for bp in (auth_bp, console_bp, proxy_bp, monitoring_bp):
        app.register_blueprint(bp)
    errors.init_app(app)
    from gateway.auth import security
    security.init_app(app)

    from gateway import cli
    cli.register(app)
    return app
