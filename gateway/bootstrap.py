"""First start, and every start after: migrations, prices, gateway.yaml, the first admin and
the demo provider, in that order."""
from __future__ import annotations

import os
import secrets

from flask import current_app
from sqlalchemy import func, select

from gateway.database import schema_lock, upgrade_schema
from gateway.extensions import db
from gateway.models import ApiKey, Provider, User
from gateway.services.accounting import keys, pricing
from gateway.services.admin import audit, catalog_admin, users

# First-start seeding comes from the environment (GATEWAY_ADMIN_*, GATEWAY_DEMO): configuration.
ACTOR, SOURCE = "bootstrap", "config"


def ensure_admin(out=print) -> None:
    """Create a first admin when there is no user: from GATEWAY_ADMIN_EMAIL/PASSWORD, or
    a generated password printed once."""
    if db.session.scalar(select(func.count()).select_from(User)):
        return
    email = os.environ.get("GATEWAY_ADMIN_EMAIL", "admin@localhost")
    password = os.environ.get("GATEWAY_ADMIN_PASSWORD")
    generated = not password
    password = password or secrets.token_urlsafe(12)
    users.create_user(email, password, "admin")
    audit.record(ACTOR, "user.create", email, {"role": "admin", "password_generated": generated}, source=SOURCE)
    out(f"Created the first admin: {email}")
    if generated:
        out(f"  password: {password}   (shown once; set GATEWAY_ADMIN_PASSWORD to choose it)")


def seed_demo(out=print, base_url: str = "http://127.0.0.1:8080") -> None:
    """On an empty database, a labelled mock provider and a demo key, so a newcomer gets an
    answer within a minute. GATEWAY_DEMO=0 turns this off."""
    if not current_app.config["DEMO"]:
        return
    if db.session.scalar(select(func.count()).select_from(Provider)) or \
            db.session.scalar(select(func.count()).select_from(ApiKey)):
        return
    # The mock checks that a key is sent, like a real vendor; any value will do.
    catalog_admin.save_provider("demo (mock)", "mock", api_key="demo-mock-key", models=["demo-chat"],
                                embedding_models=["demo-embed"], source="demo")
    key, secret = keys.create_key("demo")
    audit.record(ACTOR, "demo.seed", "demo (mock)", {"models": ["demo-chat", "demo-embed"], "key_prefix": key.prefix},
                 source=SOURCE)
    out("Seeded a demo provider 'demo (mock)' (answers in-process; models demo-chat, demo-embed).")
    out(f"Demo key (shown once): {secret}")
    out("Try it:")
    out(f"  curl {base_url}/v1/chat/completions -H 'Authorization: Bearer {secret}' "
        "-H 'Content-Type: application/json' "
        "-d '{\"model\": \"demo-chat\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]}'")


def announce(out=print) -> None:
    """Say where this gateway keeps its data: the instance folder and the database (password masked)."""
    out(f"Instance folder: {current_app.instance_path}   (secrets, usage spool; GATEWAY_INSTANCE_PATH)")
    out(f"Database: {db.engine.url.render_as_string(hide_password=True)}   (DATABASE_URL)")


def bootstrap(out=print, base_url: str = "http://127.0.0.1:8080") -> None:
    """Everything a start needs, in order; safe to run on every start, and on several
    instances at once: they take turns (the schema lock), so one seeds and the others find it done."""
    announce(out)
    with schema_lock():
        upgrade_schema()
        pricing.seed_prices()
        from gateway.services.admin import declarative     # lazy: PyYAML costs ~20 ms at import
        declarative.apply_from_env(out)     # GATEWAY_CONFIG: before the demo, which needs an empty catalogue
        ensure_admin(out)
        seed_demo(out, base_url)
