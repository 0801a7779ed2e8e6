"""Backup and restore of the SQLite database with SQLite's online backup API: a consistent copy
while the gateway keeps serving. Postgres has its own tools (pg_dump, pg_restore)."""
from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from sqlalchemy.engine import URL

from gateway.database import upgrade_schema
from gateway.errors import InvalidRequest
from gateway.extensions import db

DATA_TABLES = ("users", "api_keys", "providers", "teams", "usage_records")   # what a restore would replace


def sqlite_file() -> Path:
    """The database file; for another backend, an error saying which tool to use instead."""
    url = db.engine.url
    if url.get_backend_name() == "postgresql":
        plain = URL.create("postgresql", username=url.username, host=url.host, port=url.port,
                           database=url.database).render_as_string()      # libpq's form, no password
        raise InvalidRequest(
            "The database is Postgres: use its own tools (password from PGPASSWORD or ~/.pgpass):\n"
            f"  backup:  pg_dump --format=custom --file=gateway.dump '{plain}'\n"
            f"  restore: pg_restore --clean --if-exists --no-owner --dbname='{plain}' gateway.dump")
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise InvalidRequest(f"Backup and restore handle SQLite files; the database is {url.get_backend_name()}.")
    return Path(url.database)


def copy(src: Path, dst: Path) -> int:
    """Copy database `src` to `dst` page by page (consistent even while others write), as one
    self-contained file, checked; replaces `dst` only once the copy is whole. Returns its size."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.partial")
    try:
        with closing(sqlite3.connect(src)) as source, closing(sqlite3.connect(tmp)) as target:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")    # no -wal file beside the copy
            if target.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise InvalidRequest(f"The copy of {src} failed SQLite's check; nothing was written.")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst.stat().st_size


def backup(dst: Path, overwrite: bool = False) -> int:
    """Write a copy of the live database to `dst`; its size."""
    if dst.exists() and not overwrite:
        raise InvalidRequest(f"{dst} exists already: choose another path, or --force to overwrite it.")
    if not dst.parent.is_dir():
        raise InvalidRequest(f"No folder {dst.parent} to write the backup in.")
    return copy(sqlite_file(), dst)


def rows_in(path: Path) -> dict[str, int]:
    """Rows of the tables that hold a gateway's data, in the database file at `path`."""
    if not path.exists():
        return {}
    counts = {}
    with closing(sqlite3.connect(path)) as conn:
        for table in DATA_TABLES:
            try:
                counts[table] = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            except sqlite3.OperationalError:    # no such table: nothing there
                pass
    return {t: n for t, n in counts.items() if n}


def _check_backup(src: Path) -> None:
    if not src.is_file():
        raise InvalidRequest(f"No backup file {src}.")
    try:
        with closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as conn:
            ok = conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise InvalidRequest(f"{src} is not an SQLite database: {e}") from None
    if not ok:
        raise InvalidRequest(f"{src} is damaged (SQLite's quick_check failed).")
    if "alembic_version" not in tables or "api_keys" not in tables:
        raise InvalidRequest(f"{src} is an SQLite database, but not a gateway's.")


def restore(src: Path, force: bool = False) -> Path | None:
    """Replace the database with the backup at `src`, then migrate it to this release. Refuses
    when the database holds data, unless `force`; then the data is kept aside first, and that
    copy's path returned."""
    target = sqlite_file()
    _check_backup(src)
    present = rows_in(target)
    if present and not force:
        found = ", ".join(f"{n} {t}" for t, n in present.items())
        raise InvalidRequest(f"{target} holds data ({found}). Stop the gateway, then run again with "
                             "--force to replace it (a copy of it is kept beside it).")
    kept = None
    if present:
        kept = target.with_name(f"{target.name}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}")
        copy(target, kept)
    db.session.remove()
    db.engine.dispose()         # no pooled connection keeps reading the old pages
    with closing(sqlite3.connect(src)) as source, closing(sqlite3.connect(target)) as dest:
        source.backup(dest)
    upgrade_schema()            # a backup of an earlier release gets this release's migrations
    return kept
