"""Engine settings per backend, and the schema upgrade."""
from __future__ import annotations

import ast
import fcntl
import functools
import logging
import re
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click
from flask import Flask, current_app
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.extensions import db

log = logging.getLogger("gateway.database")

MIGRATIONS = str(Path(__file__).parent / "migrations")
SCHEMA_LOCK_ID = 0x6761746577617921     # "gateway!": the Postgres advisory lock of schema changes
_held = threading.local()               # schema_lock() depth in this thread
# `revision = "0002f"`, `down_revision: str | None = "0001"` in a revision file
_REVISION_LINE = re.compile(r"^(revision|down_revision|depends_on)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.M)


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


@contextmanager
def schema_lock() -> Iterator[None]:
    """Migrate and seed one instance at a time: several starting at once over one database
    would otherwise race to create the same tables and first rows. On Postgres an advisory
    lock, released with its transaction even if this process dies; on an SQLite file a file
    lock beside it. Reentrant within a thread."""
    depth = getattr(_held, "depth", 0)
    if depth:
        _held.depth = depth + 1
        try:
            yield
        finally:
            _held.depth = depth
        return
    with _acquire():
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0


@contextmanager
def _acquire() -> Iterator[None]:
    url = db.engine.url
    if url.get_backend_name() == "postgresql":
        with db.engine.connect() as conn:     # its transaction holds the lock; closing ends both
            if not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_ID}).scalar():
                log.warning("another instance is migrating the database: waiting for it")
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_ID})
            yield
        return
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        with open(url.database + ".schema-lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)       # released when the file closes
            yield
        return
    yield


def upgrade_schema(revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision` (idempotent), under the schema lock."""
    from flask_migrate import upgrade

    _bind_migrate(current_app._get_current_object())
    with schema_lock():
        upgrade(directory=MIGRATIONS, revision=revision)


def schema_revisions() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(applied, head) migration revisions; equal when the database is up to date."""
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        applied = MigrationContext.configure(conn).get_current_heads()
    return tuple(sorted(applied)), _heads()


@functools.cache
def _heads() -> tuple[str, ...]:
    # The migration scripts cannot change under a running process: read them once.
    from alembic.script import ScriptDirectory

    return tuple(sorted(ScriptDirectory(MIGRATIONS).get_heads()))


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
