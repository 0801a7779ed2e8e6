"""Engine settings per backend, and the schema upgrade."""
from __future__ import annotations

import fcntl
import functools
import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from gateway.extensions import db

log = logging.getLogger("gateway.database")

MIGRATIONS = str(Path(__file__).parent / "migrations")
SCHEMA_LOCK_ID = 0x6761746577617921     # "gateway!": the Postgres advisory lock of schema changes
_held = threading.local()               # schema_lock() depth in this thread


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


def upgrade_schema() -> None:
    """Apply Alembic migrations (idempotent), under the schema lock."""
    from flask_migrate import upgrade

    with schema_lock():
        upgrade(directory=MIGRATIONS)


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
