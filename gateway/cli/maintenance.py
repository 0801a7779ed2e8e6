"""Operations: `gateway doctor`, `gateway backup PATH`, `gateway restore PATH`.

Not @command: doctor reports unapplied migrations instead of applying them, and backup and
restore must not touch the database before they copy it."""
from __future__ import annotations

import functools
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from gateway.cli import audited, options
from gateway.errors import GatewayError
from gateway.providers.transport import Timeouts
from gateway.services import checks
from gateway.services.admin import backup

LABELS = {"ok": "ok  ", "warning": "WARN", "failed": "FAIL"}


def _errors_as_messages(f):
    """A GatewayError as `Error: message` and exit 1, like every other command."""
    @functools.wraps(f)
    def run(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except GatewayError as e:
            raise click.ClickException(e.message) from e
    return run


@click.command("doctor")
@click.option("--skip-providers", is_flag=True, help="do not call each provider (a one-token request each)")
@click.option("--timeout", default=15.0, show_default=True, help="seconds to wait for each provider")
@with_appcontext
def doctor_cmd(skip_providers, timeout):
    """Check configuration, database, migrations, Redis, the encryption key and every provider;
    say what is wrong and how to fix it. Exits 1 when something is wrong."""
    transport = current_app.extensions["transport"]
    t = transport.timeouts
    transport.timeouts = Timeouts(min(t.connect, timeout), min(t.first_byte, timeout), min(t.idle, timeout))
    found = checks.doctor(current_app, probe_providers=not skip_providers)
    for c in found:
        state = "failed" if not c.ok else "warning" if c.warning else "ok"
        click.echo(f"{LABELS[state]}  {c.name}: {c.detail}")
        if c.fix and state != "ok":
            click.echo(f"      fix: {c.fix}")
    failed = sum(1 for c in found if not c.ok)
    if failed:
        click.echo(f"{failed} problem{'s' if failed > 1 else ''} found.", err=True)
        raise SystemExit(1)
    click.echo("No problems found.")


def _file_command(name: str, force_help: str):
    """A command on a file PATH with a --force flag, run in the app context."""
    return options(click.command(name), click.argument("path", type=click.Path(dir_okay=False, path_type=Path)),
                   click.option("--force", is_flag=True, help=force_help), with_appcontext, _errors_as_messages)


@_file_command("backup", "overwrite PATH if it exists")
def backup_cmd(path, force):
    """Copy the SQLite database to PATH, consistently, while the gateway keeps serving.
    (Postgres: use pg_dump; this says how.)"""
    size = backup.backup(path, overwrite=force)
    click.echo(f"Backed up {backup.sqlite_file()} to {path} ({size / 1e6:.1f} MB).")
    click.echo("Stored provider keys are encrypted: keep the encryption key with the backup "
               f"(GATEWAY_ENCRYPTION_KEY, or {Path(current_app.instance_path) / 'encryption_key'}).")


@_file_command("restore", "replace a database that holds data (a copy is kept)")
def restore_cmd(path, force):
    """Replace the SQLite database with the backup at PATH and migrate it to this release.
    Stop the gateway first. (Postgres: use pg_restore; this says how.)"""
    kept = backup.restore(path, force=force)
    # Into the restored database, so its trail says where its data came from.
    audited("database.restore", str(path), replaced_copy=str(kept) if kept else None)
    if kept is not None:
        click.echo(f"The data it replaced is in {kept}.")
    click.echo(f"Restored {backup.sqlite_file()} from {path}. Run `gateway doctor` to check that the "
               "encryption key can read its provider keys.")


COMMANDS = (doctor_cmd, backup_cmd, restore_cmd)
