"""What tests build with: an app on a given database, a live server or gunicorn, providers, keys,
records, and listeners that are no HTTP server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func, select, text
from werkzeug.serving import make_server

from gateway import create_app
from gateway.database import upgrade_schema
from gateway.extensions import db
from gateway.models import UsageRecord
from gateway.services.accounting import keys, pricing
from gateway.services.accounting.usage import recorder
from gateway.services.admin import catalog_admin

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_CONFIG = {"TESTING": True, "SECRET_KEY": "test", "ALLOW_PRIVATE_UPSTREAMS": True, "DEMO": False,
               "KEY_CACHE_SECONDS": 0.0, "CATALOG_CACHE_SECONDS": 0.0, "UPSTREAM_FIRST_BYTE_TIMEOUT": 2.0,
               "UPSTREAM_IDLE_TIMEOUT": 2.0, "WTF_CSRF_ENABLED": True,
               "RETENTION_INTERVAL_SECONDS": 0}     # a test purges when it means to


def redis_or_skip():
    """A client of the test Redis; skips the test when there is none."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("Redis not reachable")
    return client


def postgres_database():
    """Create a database of our own on the Postgres server; yield its URL, then drop it."""
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a server the test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (gunicorn workers finish in-flight requests and flush usage), SIGKILL after `timeout`."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make_app(db_url: str, instance_path: str | None = None, **overrides):
    app = create_app(instance_path=instance_path,
                     overrides={**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": db_url, **overrides})
    with app.app_context():
        db.drop_all()
        db.create_all()
        pricing.seed_prices()
    return app


def migrated_app(db_url: str, instance_path: str | None = None, **overrides):
    """An app whose schema the migrations made, as in production (make_app uses create_all)."""
    app = create_app(instance_path=instance_path,
                     overrides={**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": db_url, **overrides})
    with app.app_context():
        upgrade_schema()
        pricing.seed_prices()
    return app


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


class Gunicorn:
    """The gateway served by gunicorn with gevent workers, as a subprocess. The database is
    prepared by the test unless `bootstrap` (then gunicorn migrates and seeds it at start, as
    in production); `app` gives the encryption key, else env must."""

    def __init__(self, app, db_url: str, workers: int, tmp: Path, *, bootstrap: bool = False,
                 wait: bool = True, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / f"gunicorn-{self.port}.log", "w")
        environ = {**os.environ, "DATABASE_URL": db_url, "GATEWAY_ALLOW_PRIVATE_UPSTREAMS": "1",
                   "GATEWAY_DEMO": "0", "GATEWAY_SECRET_KEY": "test", "GATEWAY_KEY_CACHE_SECONDS": "0",
                   "GATEWAY_SKIP_BOOTSTRAP": "0" if bootstrap else "1"}
        if app is not None:
            environ["GATEWAY_ENCRYPTION_KEY"] = app.config["ENCRYPTION_KEY"]
        environ.pop("PROMETHEUS_MULTIPROC_DIR", None)       # each instance gets its own
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf", "-b",
             f"127.0.0.1:{self.port}", "-w", str(workers), "app:app"],
            cwd=ROOT, env={**environ, **env}, stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait()

    def wait(self, timeout: float = 60) -> None:
        """Until a worker answers /healthz; stops the server and raises if none does in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if requests.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:     # not listening yet, or still loading the app
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("gunicorn did not start; see " + self.log.name)

    def stop(self) -> None:
        stop_process(self.proc)     # SIGTERM: workers flush their usage queues
        self.log.close()


def fire(urls: list[str], key: str, n: int, parallel: int, body: dict) -> list[tuple[int, str, int]]:
    """(status, request id, total tokens) of `n` requests, `parallel` at a time, spread over `urls`."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=parallel))

    def one(i: int):
        rid = f"conc-{i}-{uuid.uuid4().hex[:8]}"
        r = session.post(urls[i % len(urls)] + "/v1/chat/completions", json=body, timeout=60,
                         headers={"Authorization": f"Bearer {key}", "x-request-id": rid})
        tokens = r.json()["usage"]["total_tokens"] if r.status_code == 200 else 0
        if r.status_code == 429:
            assert r.json()["error"]["type"] in ("insufficient_quota", "rate_limit_exceeded")
        return r.status_code, rid, tokens

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(n)))


def check_quota(results, records: list, used_tokens: int, reserved_tokens: int, quota: int) -> None:
    """Every request served within the token quota or refused with 429, and recorded once as it ended."""
    n = len(results)
    statuses = {s for s, _, _ in results}
    assert statuses <= {200, 429}, statuses
    served = [r for r in results if r[0] == 200]
    assert served and len(served) < n           # some served, the quota refused the rest
    # nothing lost, nothing double-counted: one record per response, with the same outcome
    by_id = {r.request_id: r for r in records}
    assert len(records) == n and len(by_id) == n, (len(records), len(by_id), sorted(statuses))
    for status, rid, tokens in results:
        assert by_id[rid].status == status and by_id[rid].total_tokens == tokens
    spent = sum(t for _, _, t in served)
    assert used_tokens == spent and reserved_tokens == 0
    assert spent <= quota       # nothing was in flight at the end, so no slack at all


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


def records_when_written(app, n: int) -> list:
    """The usage records once at least `n` are in the database (written by other processes)."""
    deadline = time.monotonic() + 30
    with app.app_context():
        while time.monotonic() < deadline:
            if db.session.scalar(select(func.count()).select_from(UsageRecord)) >= n:
                break
            db.session.remove()
            time.sleep(0.2)
        rows = db.session.scalars(select(UsageRecord)).all()
        db.session.expunge_all()
        return rows


class Listener:
    """A TCP listener on 127.0.0.1 that is no HTTP server: it stays `silent` after accepting, or
    sends a `banner` (like SSH) and closes. `accepted` counts who connected."""

    def __init__(self, banner: bytes | None = None):
        self.banner = banner
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self.held: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.banner is None:
                self.held.append(conn)      # never answers
            else:
                conn.sendall(self.banner)
                conn.close()

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


def run_gateway(db_url: str, *args: str, env: dict | None = None, after: str = ""):
    """Run the `gateway` console script (gateway.cli:main) from this checkout in a subprocess;
    `after` is Python run once the command is done (to report what it imported, say)."""
    script = ("import sys\nfrom gateway.cli import main\nsys.argv[0] = 'gateway'\n"
              "try:\n    main()\nexcept SystemExit as e:\n    status = e.code or 0\n"
              f"{after}\nsys.exit(status)\n")
    env = {**os.environ, "DATABASE_URL": db_url, "GATEWAY_DEMO": "0", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
