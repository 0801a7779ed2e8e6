"""What /readyz and `gateway doctor` test: the database, its migrations, Redis, and (doctor
only) the configuration, the encryption key against the stored secrets, and each provider.
Each check says what it found and, when something is wrong, how to fix it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from gateway import secrets
from gateway.database import schema_revisions
from gateway.extensions import db
from gateway.models import Provider, TagBudget, Team
from gateway.services.admin import catalog_admin


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str             # what was found (may name hosts and paths: not for anonymous eyes)
    fix: str = ""           # how to put it right, when not ok (or worth a look)
    warning: bool = False   # works, but worth a look
    public: str = ""        # what /readyz may say about it


def _reason(e: Exception) -> str:
    """The first line of a driver's error, with the database password, if any, blanked."""
    message = str(e.orig if isinstance(e, DBAPIError) and e.orig is not None else e)
    password = db.engine.url.password
    if password:
        message = message.replace(str(password), "***")
    return (message.strip().splitlines() or [type(e).__name__])[0][:300]


def database() -> Check:
    """Can we run a query?"""
    url = db.engine.url
    where = url.render_as_string(hide_password=True)
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:      # noqa: BLE001 - any failure means: not reachable
        return Check("database", False, f"{where}: {_reason(e)}",
                     "check DATABASE_URL and that the database server is up and accepts this user",
                     public="unreachable")
    return Check("database", True, f"{url.get_backend_name()} at {where}", public="ok")


def migrations() -> Check:
    """Is the schema at the code's head revision?"""
    try:
        applied, heads = schema_revisions()
    except Exception as e:      # noqa: BLE001
        return Check("migrations", False, _reason(e), "check the database first", public="unknown")
    if applied == heads:
        return Check("migrations", True, f"at head ({', '.join(heads)})", public="ok")
    at = ", ".join(applied) or "none"
    state = f"database at {at}, code at {', '.join(heads)}"
    return Check("migrations", False, state,
                 "run `gateway bootstrap` (every start and CLI command also applies them)",
                 public=f"behind: {state}")


def redis(url: str | None) -> Check:
    """Does Redis answer, when one is configured?"""
    if not url:
        return Check("redis", True, "not configured: counters and caches are per database and per "
                     "process (fine for one instance)", public="not configured")
    import redis as redis_lib

    client = redis_lib.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        client.ping()
    except Exception as e:      # noqa: BLE001
        return Check("redis", False, f"REDIS_URL does not answer: {str(e)[:300]}",
                     "start Redis or fix REDIS_URL; several instances share limits and circuit state there",
                     public="unreachable")
    finally:
        client.close()
    return Check("redis", True, "answers", public="ok")


def readiness(app: Flask) -> list[Check]:
    """The checks a load balancer needs before sending traffic: database, migrations, Redis."""
    found = [database()]
    if found[0].ok:
        found.append(migrations())
    found.append(redis(app.config.get("REDIS_URL")))
    return found


def configuration(app: Flask) -> list[Check]:
    """Settings that are missing, inconsistent or risky."""
    c = app.config
    out = []
    instance = Path(app.instance_path)
    writable = instance.is_dir() and os.access(instance, os.W_OK)
    out.append(Check("instance folder", writable, str(instance),
                     "" if writable else "make it writable by the gateway, or set GATEWAY_INSTANCE_PATH"))
    several = bool(c.get("REDIS_URL"))      # Redis is what several instances share
    for setting, filename in (("SECRET_KEY", "secret_key"), ("ENCRYPTION_KEY", "encryption_key")):
        path = instance / filename
        from_file = path.is_file() and path.read_text().strip() == str(c.get(setting))
        source = str(path) if from_file else f"GATEWAY_{setting} or instance/config.py"
        out.append(Check(setting.lower().replace("_", " "), True, f"from {source}",
                         f"several instances need the same value: set GATEWAY_{setting} on each"
                         if from_file and several else "", warning=from_file and several))
    if several and db.engine.url.get_backend_name() == "sqlite":
        out.append(Check("database for several instances", True, "REDIS_URL is set but the database is SQLite",
                         "instances on several machines need Postgres (DATABASE_URL)", warning=True))
    config_file = os.environ.get("GATEWAY_CONFIG") or c.get("CONFIG_FILE")
    if config_file:
        found = Path(config_file).is_file()
        out.append(Check("gateway.yaml", found, str(config_file),
                         "" if found else "fix GATEWAY_CONFIG or create the file"))
    if not c.get("METRICS_TOKEN"):
        out.append(Check("metrics", True, "/metrics answers anyone who can reach the gateway",
                         "set GATEWAY_METRICS_TOKEN, or block /metrics at the reverse proxy", warning=True))
    return out


def encryption() -> list[Check]:
    """Can the encryption key read every stored secret (provider keys, webhook secrets)?"""
    stored = [(f"provider '{p.name}'", p.api_key_enc) for p in db.session.scalars(select(Provider))]
    stored += [(f"team '{t.name}' webhook", t.webhook_secret_enc) for t in db.session.scalars(select(Team))]
    stored += [(f"tag budget {b.tag}={b.value} webhook", b.webhook_secret_enc)
               for b in db.session.scalars(select(TagBudget))]
    bad = []
    for what, token in stored:
        try:
            secrets.decrypt(token)
        except RuntimeError:
            bad.append(what)
    if bad:
        return [Check("stored secrets", False, f"cannot decrypt the stored secret of {', '.join(bad)}",
                      "use the encryption key they were stored with (GATEWAY_ENCRYPTION_KEY or the "
                      "instance/encryption_key of the old install), or enter those keys again")]
    count = sum(1 for _, token in stored if token)
    return [Check("stored secrets", True, f"the encryption key decrypts all {count} stored secrets")]


def providers() -> list[Check]:
    """One real, minimal call per enabled provider, through Test connection's code path."""
    todo = []       # read first: a probe may end the session these rows came from
    for p in db.session.scalars(select(Provider).order_by(Provider.name)):
        chat = [d.upstream_model for d in p.deployments if d.mode == "chat" and d.enabled]
        todo.append((f"provider '{p.name}'", p.enabled, p.kind, p.base_url, p.api_key_enc,
                     dict(p.options or {}), chat[0] if chat else None))
    out = []
    for name, enabled, kind, base_url, key_enc, options, model in todo:
        if not enabled or model is None:
            out.append(Check(name, True, "disabled" if not enabled else "no chat model to test with"))
            continue
        try:
            api_key = secrets.decrypt(key_enc)
        except RuntimeError as e:
            out.append(Check(name, False, str(e), "see the stored secrets check"))
            continue
        result = catalog_admin.check_connection(kind, base_url, api_key, [], model=model, options=options)
        if result.ok:
            out.append(Check(name, True, f"{result.model} answered in {result.latency_ms:.0f} ms"))
        else:
            out.append(Check(name, False, f"{result.model}: {result.message}",
                             "check its base URL and key (console: Providers, Test connection; or "
                             "`gateway providers add --name ... --api-key ...`)"))
    return out


def doctor(app: Flask, probe_providers: bool = True) -> list[Check]:
    """Everything: configuration, database, migrations, Redis, encryption, providers."""
    ready = readiness(app)
    found = configuration(app) + ready
    if not all(c.ok for c in ready if c.name in ("database", "migrations")):
        return found        # the tables may be missing or older than the models: look no further
    found += encryption()
    if probe_providers:
        found += providers()
    return found
