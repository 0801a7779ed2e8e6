"""Engine settings per backend, schema upgrade and first-start seeding."""
from __future__ import annotations

import os
import secrets as pysecrets
import sqlite3
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from gateway.extensions import db

MIGRATIONS = str(Path(__file__).parent / "migrations")


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_conn, _record):
    # WAL lets readers run beside the usage writer; busy_timeout waits out short locks.
    if isinstance(dbapi_conn, sqlite3.Connection):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def init_app(app: Flask) -> None:
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("postgresql"):
        # Request greenlets hold a connection only for short cached lookups.
        opts = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        opts.setdefault("pool_size", 10)
        opts.setdefault("max_overflow", 20)
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = opts


def upgrade_schema() -> None:
    """Apply Alembic migrations (idempotent)."""
    from flask_migrate import upgrade

    upgrade(directory=MIGRATIONS)


def ensure_admin(out=print) -> None:
    """Create a first admin when there is no user: from GATEWAY_ADMIN_EMAIL/PASSWORD, or
    a generated password printed once."""
    from gateway.models import User
    from gateway.services.admin import users

    if db.session.scalar(select(func.count()).select_from(User)):
        return
    email = os.environ.get("GATEWAY_ADMIN_EMAIL", "admin@localhost")
    password = os.environ.get("GATEWAY_ADMIN_PASSWORD")
    generated = not password
    password = password or pysecrets.token_urlsafe(12)
    users.create_user(email, password, "admin")
    out(f"Created the first admin: {email}")
    if generated:
        out(f"  password: {password}   (shown once; set GATEWAY_ADMIN_PASSWORD to choose it)")


def seed_demo(out=print, base_url: str = "http://127.0.0.1:8080") -> None:
    """On an empty database, a labelled mock provider and a demo key, so a newcomer gets an
    answer within a minute. GATEWAY_DEMO=0 turns this off."""
    from gateway.models import ApiKey, Provider
    from gateway.services.accounting import keys
    from gateway.services.admin import catalog_admin

    if not current_app.config["DEMO"]:
        return
    if db.session.scalar(select(func.count()).select_from(Provider)) or \
            db.session.scalar(select(func.count()).select_from(ApiKey)):
        return
    # The mock checks that a key is sent, like a real vendor; any value will do.
    catalog_admin.save_provider("demo (mock)", "mock", api_key="demo-mock-key", models=["demo-chat"],
                                embedding_models=["demo-embed"], source="demo")
    _, secret = keys.create_key("demo")
    out("Seeded a demo provider 'demo (mock)' (answers in-process; models demo-chat, demo-embed).")
    out(f"Demo key (shown once): {secret}")
    out("Try it:")
    out(f"  curl {base_url}/v1/chat/completions -H 'Authorization: Bearer {secret}' "
        "-H 'Content-Type: application/json' "
        "-d '{\"model\": \"demo-chat\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]}'")


def bootstrap(out=print, base_url: str = "http://127.0.0.1:8080") -> None:
    """Everything a start needs, in order; safe to run on every start."""
    from gateway.services.accounting import pricing

    upgrade_schema()
    pricing.seed_prices()
    from gateway.services.admin import declarative
    declarative.apply_from_env(out)     # GATEWAY_CONFIG: before the demo, which needs an empty catalogue
    ensure_admin(out)
    seed_demo(out, base_url)
