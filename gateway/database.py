"""Engine settings per backend, and the schema upgrade."""
from __future__ import annotations

import ast
import fcntl
import functools
import logging
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click
from flask import Flask, current_app
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import Pool

from gateway.extensions import db

log = logging.getLogger("gateway.database")

MIGRATIONS = str(Path(__file__).parent / "migrations")
SCHEMA_LOCK_ID = 0x6761746577617921     # "gateway!": the Postgres advisory lock of schema changes
_held = threading.local()               # schema_lock() depth in this thread
# `revision = "0002f"`, `down_revision: str | None = "0001"` in a revision file
_REVISION_LINE = re.compile(r"^(revision|down_revision|depends_on)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.M)
BUSY_MS = 5000      # how long SQLite statements wait for a lock, unless bounded_wait says less


class DatabaseBusy(Exception):
    """Not asked: SQLite was locked a moment ago (see LockBreaker)."""


# What a database that is locked, down or unreachable raises (as against a bug in a query).
UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, DatabaseBusy)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_conn, _record):
    # WAL lets readers run beside the usage writer; busy_timeout waits out short locks.
    if isinstance(dbapi_conn, sqlite3.Connection):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


@event.listens_for(Pool, "checkin")
def _sqlite_reset(dbapi_conn, _record):
    # bounded_wait shortens the busy timeout for one checkout only
    if isinstance(dbapi_conn, sqlite3.Connection):
        dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")


def init_app(app: Flask) -> None:
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("postgresql"):
        # Request greenlets hold a connection only for short cached lookups.
        opts = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        opts.setdefault("pool_size", 10)
        opts.setdefault("max_overflow", 20)
        if "connect_timeout" not in uri:    # an unreachable server fails in seconds, not minutes
            opts["connect_args"] = {"connect_timeout": 3, **opts.get("connect_args", {})}
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


@contextmanager
def bounded_wait(conn: Connection, seconds: float):
    """Statements on `conn` wait at most about `seconds` for a lock, then raise (one of
    UNAVAILABLE): a request must not hang for as long as someone holds the database."""
    ms = max(1, int(seconds * 1000))
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA busy_timeout={ms}")   # until the connection goes back
        yield conn
    elif conn.dialect.name == "postgresql":
        # Each wait for a lock, not the statement: requests queued on a busy counter row take
        # turns (each wait is short), a lock held by a migration or a stuck session is not.
        # Local: it lasts until the transaction ends, the pooled connection is left as it was.
        conn.exec_driver_sql(f"SELECT set_config('lock_timeout', '{ms}', true)")
        yield conn
    else:
        yield conn


class LockBreaker:
    """SQLite locks the whole database, and under gevent its busy wait holds the whole worker
    (it sleeps in C): after one bounded wait ran out, the next ones fail at once (DatabaseBusy)
    for `cooldown` seconds instead of each holding the worker again. One per process."""

    def __init__(self, cooldown: float):
        self.cooldown = cooldown
        self.until = 0.0

    @contextmanager
    def wait(self, conn: Connection, seconds: float):
        """bounded_wait(conn, seconds), or DatabaseBusy while SQLite is known to be locked."""
        sqlite = conn.dialect.name == "sqlite"
        if sqlite and time.monotonic() < self.until:
            raise DatabaseBusy("the database was locked a moment ago")
        try:
            with bounded_wait(conn, seconds):
                yield conn
        except UNAVAILABLE:
            if sqlite:
                self.until = time.monotonic() + self.cooldown
            raise


def locks(app: Flask) -> LockBreaker:
    """This process's LockBreaker (built by services.init_app)."""
    return app.extensions["db_locks"]


@contextmanager
def bounded_session(seconds: float | None = None):
    """The session's connection under the LockBreaker (DB_LOCK_TIMEOUT unless told): for what a
    request reads on its way upstream (key, catalog, prices, budgets, settings) and the usage
    writer."""
    from flask import current_app

    from gateway.extensions import db
    wait = current_app.config["DB_LOCK_TIMEOUT"] if seconds is None else seconds
    with locks(current_app).wait(db.session.connection(), wait):
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
