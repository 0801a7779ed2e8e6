"""Engine settings per backend, and the schema upgrade."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import Pool


MIGRATIONS = str(Path(__file__).parent / "migrations")
BUSY_MS = 5000      # how long SQLite statements wait for a lock, unless bounded_wait says less
# What a database that is locked, down or unreachable raises (as against a bug in a query).
UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


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


@contextmanager
def bounded_session(seconds: float | None = None):
    """bounded_wait on the session's connection (ADMISSION_DB_TIMEOUT unless told): for the
    reads a request makes on its way upstream (key, catalog, prices, budgets, settings)."""
    from flask import current_app
    from gateway.extensions import db
    wait = current_app.config["ADMISSION_DB_TIMEOUT"] if seconds is None else seconds
    with bounded_wait(db.session.connection(), wait):
        yield


def upgrade_schema() -> None:
    """Apply Alembic migrations (idempotent)."""
    from flask_migrate import upgrade

    upgrade(directory=MIGRATIONS)
