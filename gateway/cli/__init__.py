"""Command line: `gateway ...` or `flask --app app ...`. Every command applies migrations
first, so it works on a fresh, empty database named by DATABASE_URL."""
from __future__ import annotations

import functools

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import select

from gateway import create_app
from gateway.database import schema_lock, upgrade_schema
from gateway.errors import GatewayError
from gateway.extensions import db
from gateway.services.accounting import pricing

PERIODS = click.Choice(["total", "day", "week", "month"])    # of quotas and budgets


def command(group: click.Group, name: str, **attrs):
    """Add the function to `group` as `name`, run in the app context on a migrated database,
    with a GatewayError shown as `Error: message` (exit 1) instead of a traceback.

    Under TESTING the schema is the test's own (create_all), so the command does not migrate."""
    def decorate(f):
        @functools.wraps(f)
        def run(*args, **kwargs):
            if not current_app.testing:
                with schema_lock():         # instances may be starting and seeding right now
                    upgrade_schema()
                    pricing.seed_prices()
            try:
                return f(*args, **kwargs)
            except GatewayError as e:
                raise click.ClickException(e.message) from e
        return group.command(name, **attrs)(with_appcontext(run))
    return decorate


def options(*decorators):
    """One decorator for a stack of click options shared by several commands, in help order."""
    def decorate(f):
        for option in reversed(decorators):
            f = option(f)
        return f
    return decorate


def echo_row(fields) -> None:
    """Print one table row: the fields, tab-separated."""
    click.echo("\t".join(str(f) for f in fields))


def list_command(group: click.Group, model, *order, help: str | None = None):
    """Add `list` to `group`: one row per `model` by `order`, its fields from the decorated function."""
    def decorate(fields):
        def run():
            for row in db.session.scalars(select(model).order_by(*order)):
                echo_row(fields(row))
        command(group, "list", help=help)(run)
        return fields
    return decorate


def split_csv(value: str | None) -> list[str] | None:
    """`a, b,,c` as ["a", "b", "c"]; None for an empty or missing option."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def given(**fields) -> dict:
    """The fields whose option was given, so the ones left out keep their stored value."""
    return {k: v for k, v in fields.items() if v is not None}


def register(app: Flask) -> None:
    """Add every command group to `app.cli`."""
    # Imported here: each command module imports `command` from this package.
    from gateway.cli import catalog, keys, maintenance, ops, teams
    for module in (catalog, keys, ops, teams, maintenance):
        for cli in module.COMMANDS:
            app.cli.add_command(cli)


def main() -> None:
    """The `gateway` console script."""
    FlaskGroup(create_app=create_app, add_default_commands=True,
               help="Self-hosted AI gateway.")(prog_name="gateway")
