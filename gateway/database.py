"""Engine settings per backend, and the schema upgrade."""
from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import Pool


MIGRATIONS = str(Path(__file__).parent / "migrations")
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


def upgrade_schema() -> None:
    """Apply Alembic migrations (idempotent)."""
    from flask_migrate import upgrade

    upgrade(directory=MIGRATIONS)
