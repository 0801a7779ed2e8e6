"""Engine settings per backend, and the schema upgrade."""
from __future__ import annotations

import ast
import logging
import re
import sqlite3
from pathlib import Path

import click
from flask import Flask, current_app
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.extensions import db

MIGRATIONS = str(Path(__file__).parent / "migrations")
# `revision = "0002f"`, `down_revision: str | None = "0001"` in a revision file
_REVISION_LINE = re.compile(r"^(revision|down_revision|depends_on)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.M)
log = logging.getLogger("gateway.database")


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
    app.cli.add_command(_LazyGroup("db", _migration_commands, help="Perform database migrations."))


def _bind_migrate(app: Flask) -> None:
    """Bind Flask-Migrate to `app` on first use, not in create_app: importing it (and Alembic)
    costs about 0.2 s, which a command on a current schema need not pay."""
    if "migrate" not in app.extensions:
        from flask_migrate import Migrate

        Migrate(app, db, directory=MIGRATIONS, render_as_batch=True)


def _migration_commands() -> click.Group:
    """Flask-Migrate's `db` group, showing Alembic's progress (a developer's command)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)-5.5s [%(name)s] %(message)s")
    _bind_migrate(current_app._get_current_object())
    from flask_migrate.cli import db as group
    return group


class _LazyGroup(click.Group):
    """A command group imported only when it runs; its help line is known without importing."""

    def __init__(self, name: str, load, **attrs):
        super().__init__(name, **attrs)
        self._load = load

    def make_context(self, info_name, args, parent=None, **extra):
        return self._load().make_context(info_name, args, parent=parent, **extra)


def upgrade_schema() -> None:
    """Apply Alembic migrations (idempotent)."""
    from flask_migrate import upgrade

    _bind_migrate(current_app._get_current_object())
    upgrade(directory=MIGRATIONS)


def schema_is_current() -> bool:
    """True when the database stands at every head of the migration scripts. Read without
    Alembic, so a CLI command on a current schema starts fast; anything unusual (a branch
    dependency, a file it can't read) answers False and the caller migrates as before."""
    revisions, parents = set(), set()
    for path in Path(MIGRATIONS, "versions").glob("*.py"):
        fields = dict(m.groups() for m in _REVISION_LINE.finditer(path.read_text(encoding="utf-8")))
        try:
            revision = ast.literal_eval(fields["revision"])
            down = ast.literal_eval(fields["down_revision"])
            depends = ast.literal_eval(fields.get("depends_on", "None"))
        except (KeyError, ValueError, SyntaxError):
            return False
        if not isinstance(revision, str) or depends is not None:
            return False
        revisions.add(revision)
        parents.update(down if isinstance(down, (tuple, list)) else [down] if down else [])
    try:
        current = set(db.session.scalars(text("SELECT version_num FROM alembic_version")))
    except SQLAlchemyError:         # a fresh database: no version table yet
        db.session.rollback()
        return False
    heads = revisions - parents
    if heads and current == heads:
        log.info("schema at %s; no migration to apply", ", ".join(sorted(heads)))
        return True
    return False
