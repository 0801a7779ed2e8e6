"""Shared fixtures: the app on SQLite or Postgres, a live HTTP gateway, the mock upstream."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, select, text
from werkzeug.serving import make_server

from gateway import create_app
from gateway.extensions import db
from gateway.models import UsageRecord
from gateway.services.accounting import keys, pricing
from gateway.services.admin import catalog_admin
from gateway.services.accounting.usage import recorder

ROOT = Path(__file__).resolve().parents[1]
# Gateways the tests start as subprocesses keep their secrets and usage spool here, never in
# the checkout's instance/ (a spooled test record would be replayed into a real database).
os.environ["GATEWAY_INSTANCE_PATH"] = tempfile.mkdtemp(prefix="gw-test-instance-")
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def mock_upstream():
    """The project's fake provider as a real server on 127.0.0.1 (a subprocess), its base URL."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.mock_upstream", "--port", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        prefix = "mock-upstream listening on "
        assert line.startswith(prefix), f"unexpected first line {line!r}"
        yield line[len(prefix):]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


@pytest.fixture
def mock(mock_upstream):
    """The mock upstream's base URL, with its faults and request log cleared."""
    requests.post(mock_upstream + "/_mock/reset", timeout=5)
    yield mock_upstream
    requests.post(mock_upstream + "/_mock/reset", timeout=5)


@pytest.fixture(scope="session")
def postgres_db():
    """A database of our own on the Postgres server, one per xdist worker."""
    name = f"gw_test_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{uuid.uuid4().hex[:6]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:      # noqa: BLE001
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Postgres not reachable: {e}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_app(db_url: str, instance_path: str | None = None, **overrides):
    app = create_app(instance_path=instance_path, overrides={"TESTING": True, "SECRET_KEY": "test", "SQLALCHEMY_DATABASE_URI": db_url,
                      "ALLOW_PRIVATE_UPSTREAMS": True, "DEMO": False, "KEY_CACHE_SECONDS": 0.0,
                      "CATALOG_CACHE_SECONDS": 0.0, "UPSTREAM_FIRST_BYTE_TIMEOUT": 2.0,
                      "UPSTREAM_IDLE_TIMEOUT": 2.0, "WTF_CSRF_ENABLED": True, **overrides})
    with app.app_context():
        db.drop_all()
        db.create_all()
        pricing.seed_prices()
    return app


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app(request, tmp_path):
    """The app on SQLite, and again on Postgres."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/test.db"
    else:
        url = request.getfixturevalue("postgres_db")
    app = make_app(url, instance_path=str(tmp_path / "instance"))
    yield app
    with app.app_context():
        recorder(app).drain()
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def sqlite_app(tmp_path):
    """SQLite only, for tests whose subject is not the database."""
    app = make_app(f"sqlite:///{tmp_path}/test.db", instance_path=str(tmp_path / "instance"))
    yield app
    with app.app_context():
        recorder(app).drain()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


class LiveServer:
    def __init__(self, app):
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def live(app):
    """The gateway serving over a real socket, for the official SDKs."""
    server = LiveServer(app)
    yield server
    server.stop()


def add_provider(app, name: str, kind: str, base_url: str | None, models: list[str],
                 embedding_models: list[str] | None = None, api_key: str = "sk-upstream-secret-123456",
                 **options) -> None:
    with app.app_context():
        catalog_admin.save_provider(name, kind, base_url=base_url, api_key=api_key, models=models,
                                    embedding_models=embedding_models, options=options or None)


def make_key(app, name: str = "test", **kw) -> str:
    with app.app_context():
        return keys.create_key(name, **kw)[1]


def usage_records(app) -> list[UsageRecord]:
    """Every usage record, after the background writer caught up."""
    with app.app_context():
        assert recorder(app).drain(), "usage writer did not catch up"
        rows = db.session.scalars(select(UsageRecord).order_by(UsageRecord.id)).all()
        db.session.expunge_all()
        return rows
