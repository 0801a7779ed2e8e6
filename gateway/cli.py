"""Command line: `gateway ...` or `flask --app app ...`. Every command applies migrations
first, so it works on a fresh, empty database named by DATABASE_URL."""
from __future__ import annotations

import os
import sys
from datetime import datetime

import click
from flask import Flask
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import select

from gateway.errors import GatewayError


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _ready() -> None:
    from gateway.database import upgrade_schema
    from gateway.services import pricing
    upgrade_schema()
    pricing.seed_prices()


def _fail(e: GatewayError):
    raise click.ClickException(e.message)


@click.group("users", help="Console users.")
def users_cli():
    pass


@users_cli.command("create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--role", type=click.Choice(["admin", "member", "viewer"]), default="member")
@with_appcontext
def users_create(email, password, role):
    """Create a user, or update the password and role of an existing one."""
    from gateway.services import users
    _ready()
    try:
        user = users.create_user(email, password, role)
    except GatewayError as e:
        _fail(e)
    click.echo(f"user {user.email} ({user.role})")


@click.group("providers", help="Upstream providers (BYOK).")
def providers_cli():
    pass


@providers_cli.command("add")
@click.option("--name", required=True)
@click.option("--kind", required=True, help="openai, azure, anthropic, gemini or mock")
@click.option("--base-url", help="as the vendor's SDK takes it, e.g. https://api.openai.com/v1")
@click.option("--api-key", help="stored encrypted; read from $PROVIDER_API_KEY when omitted")
@click.option("--models", help="chat models to expose, comma-separated; public=upstream renames")
@click.option("--embedding-models", help="embedding models to expose, comma-separated")
@click.option("--region", default="")
@click.option("--api-version", help="Azure OpenAI api-version")
@with_appcontext
def providers_add(name, kind, base_url, api_key, models, embedding_models, region, api_version):
    """Add a provider, or update the one with this name (idempotent)."""
    from gateway.services import catalog
    _ready()
    api_key = api_key if api_key is not None else os.environ.get("PROVIDER_API_KEY")
    options = {"api_version": api_version} if api_version else None
    try:
        p = catalog.save_provider(name, kind, base_url=base_url, api_key=api_key, models=_csv(models),
                                  embedding_models=_csv(embedding_models), region=region, options=options)
    except GatewayError as e:
        _fail(e)
    served = ", ".join(sorted(d.model for d in p.deployments)) or "none"
    click.echo(f"provider {p.name} ({p.kind}) {p.base_url} models: {served}")


@providers_cli.command("list")
@with_appcontext
def providers_list():
    from gateway.extensions import db
    from gateway.models import Provider
    _ready()
    for p in db.session.scalars(select(Provider).order_by(Provider.name)):
        key = f"…{p.key_last4}" if p.key_last4 else ("set" if p.api_key_enc else "none")
        models = ",".join(sorted(d.model for d in p.deployments))
        click.echo(f"{p.name}\t{p.kind}\t{p.base_url}\tkey {key}\t{models}\t{'enabled' if p.enabled else 'disabled'}")


@click.group("keys", help="Virtual API keys.")
def keys_cli():
    pass


def _parse_expiry(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        raise click.BadParameter("use an ISO date like 2027-01-31 or 2027-01-31T12:00") from None


@keys_cli.command("create")
@click.option("--name", required=True)
@click.option("--models", help="allowed models, comma-separated (default: all)")
@click.option("--expires", help="ISO date or date-time, UTC")
@click.option("--user", "user_email", help="owner's email")
@with_appcontext
def keys_create(name, models, expires, user_email):
    """Create a key; the secret is printed alone on the last line, once."""
    from gateway.extensions import db
    from gateway.models import User
    from gateway.services import keys
    _ready()
    user_id = None
    if user_email:
        user = db.session.scalar(select(User).where(User.email == user_email.strip().lower()))
        if user is None:
            raise click.ClickException(f"no user {user_email}")
        user_id = user.id
    key, secret = keys.create_key(name, models=_csv(models), expires_at=_parse_expiry(expires),
                                  user_id=user_id)
    click.echo(f"key {key.name} ({key.prefix}…) created")
    click.echo(secret)


@keys_cli.command("list")
@with_appcontext
def keys_list():
    from gateway.extensions import db
    from gateway.models import ApiKey
    _ready()
    for k in db.session.scalars(select(ApiKey).order_by(ApiKey.id)):
        state = "revoked" if k.revoked_at else "active"
        click.echo(f"{k.prefix}…\t{k.name}\t{state}\tmodels={','.join(k.models) if k.models else 'all'}"
                   f"\texpires={k.expires_at or '-'}")


@keys_cli.command("revoke")
@click.argument("prefix")
@with_appcontext
def keys_revoke(prefix):
    """Revoke the key whose visible prefix is PREFIX."""
    from gateway.extensions import db
    from gateway.models import ApiKey
    from gateway.services import keys
    _ready()
    found = db.session.scalars(select(ApiKey).where(ApiKey.prefix == prefix.rstrip("…."))).all()
    if len(found) != 1:
        raise click.ClickException(f"{len(found)} keys have the prefix {prefix}")
    keys.revoke_key(found[0])
    click.echo(f"revoked {found[0].prefix}…")


@click.command("bootstrap")
@click.option("--base-url", default="http://127.0.0.1:8080", help="shown in the demo curl line")
@with_appcontext
def bootstrap_cmd(base_url):
    """Migrate, seed prices, create a first admin and the demo (on an empty database)."""
    from gateway.database import bootstrap
    bootstrap(click.echo, base_url)


@click.command("serve")
@click.option("--host", default=lambda: os.environ.get("HOST", "0.0.0.0"))
@click.option("--port", default=lambda: int(os.environ.get("PORT", 8080)), type=int)
@click.option("--workers", default=lambda: int(os.environ.get("WEB_CONCURRENCY", 2)), type=int)
def serve_cmd(host, port, workers):
    """Serve with gunicorn and gevent workers (bootstraps the database first)."""
    os.environ.setdefault("GATEWAY_PUBLIC_URL", f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}")
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf",
            "-b", f"{host}:{port}", "-w", str(workers), "app:app"]
    sys.stdout.flush()
    # exec: a fresh process where gevent patches before anything imports ssl
    os.execv(sys.executable, argv)


@click.command("mock-upstream")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=9000, type=int)
def mock_upstream_cmd(host, port):
    """Run the fake OpenAI/Anthropic/Gemini upstream for tests, demos and benchmarks."""
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "gateway.mock_upstream",
                              "--host", host, "--port", str(port)])


def register(app: Flask) -> None:
    for command in (users_cli, providers_cli, keys_cli, bootstrap_cmd, serve_cmd, mock_upstream_cmd):
        app.cli.add_command(command)


def _make_app():
    from gateway import create_app
    return create_app()


def main() -> None:
    """The `gateway` console script."""
    FlaskGroup(create_app=_make_app, add_default_commands=True,
               help="Self-hosted AI gateway.")(prog_name="gateway")
