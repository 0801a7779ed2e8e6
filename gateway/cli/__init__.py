"""Command line: `gateway ...` (and `flask --app app ...`, which adds Flask's development
commands). Every command applies migrations first, so it works on a fresh, empty database
named by DATABASE_URL."""
from __future__ import annotations

import functools
import getpass
import logging
import os

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo, with_appcontext
from sqlalchemy import select

from gateway import create_app
from gateway.database import schema_is_current, schema_lock, upgrade_schema
from gateway.errors import GatewayError
from gateway.extensions import db
from gateway.services.accounting import pricing
from gateway.services.admin import audit

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
                    if not schema_is_current():
                        upgrade_schema()
                    pricing.seed_prices()
            try:
                return f(*args, **kwargs)
            except GatewayError as e:
                raise click.ClickException(e.message) from e
        return group.command(name, **attrs)(with_appcontext(run))
    return decorate


def os_user() -> str:
    """Who runs this command, as the operating system knows them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):         # a uid with no passwd entry, e.g. in a container
        return f"uid {os.getuid()}"


def audited(action: str, target: str = "", /, **details) -> None:
    """Audit a change made from the shell, as the console audits its own: by `cli:<OS user>`,
    source cli; the audit module scrubs secrets from the details."""
    audit.record(f"cli:{os_user()}", action, target, details, source="cli")


def confirm(yes: bool, question: str) -> None:
    """Ask before a destructive change unless --yes was given; no answer, no change."""
    if not yes:
        click.confirm(question, abort=True)


yes_option = click.option("--yes", "-y", is_flag=True, help="don't ask for confirmation")


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
        command(group, "list", help=help or f"List the {group.name}, one per line.")(run)
        return fields
    return decorate


def split_csv(value: str | None) -> list[str] | None:
    """`a, b,,c` as ["a", "b", "c"]; None for an empty or missing option."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def given(**fields) -> dict:
    """The fields whose option was given, so the ones left out keep their stored value."""
    return {k: v for k, v in fields.items() if v is not None}


def commands() -> list[click.Command]:
    """Every command and command group, in the order of their modules."""
    # Imported here: each command module imports `command` from this package.
    from gateway.cli import alerts, catalog, keys, maintenance, models, ops, reports, simulate, teams
    modules = (catalog, models, keys, ops, reports, teams, alerts, maintenance, simulate)
    return [cli for module in modules for cli in module.COMMANDS]


def register(app: Flask) -> None:
    """Add every command group to `app.cli` (for `flask --app app ...`)."""
    for cli in commands():
        app.cli.add_command(cli)


class Gateway(click.Group):
    """The `gateway` command: the gateway's own commands only (Flask's development `run`,
    `shell` and `routes` stay under `flask --app app`); the app is built only when a command
    runs, so `--help` and `--version` don't pay for it."""

    def make_context(self, info_name, args, parent=None, **extra):
        extra.setdefault("obj", ScriptInfo(create_app=create_app, set_debug_flag=False))
        return super().make_context(info_name, args, parent=parent, **extra)


def _configure_logging(ctx: click.Context, _param, verbose: bool) -> None:
    # Before any command migrates: Alembic's progress is INFO, shown only with -v.
    if not ctx.resilient_parsing:
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                            format="%(levelname)-5.5s [%(name)s] %(message)s")


def main() -> None:
    """The `gateway` console script."""
    cli = Gateway("gateway", help="Self-hosted AI gateway.", commands=commands(), params=[
        click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, is_eager=True,
                     callback=_configure_logging, help="Show what happens, migrations included."),
    ])
    cli = click.version_option(package_name="gateway", prog_name="gateway", message="%(prog)s %(version)s")(cli)
    cli(prog_name="gateway")
