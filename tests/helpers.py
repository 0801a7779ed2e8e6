"""What tests build with: an app on a given database, a live server or gunicorn, providers, keys,
records, and listeners that are no HTTP server."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway import create_app
from gateway.extensions import db
from gateway.models import UsageRecord
from gateway.services.accounting import keys, pricing
from gateway.services.accounting.usage import recorder
from gateway.services.admin import catalog_admin

ROOT = Path(__file__).resolve().parents[1]


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


class Listener:
    """A TCP listener on 127.0.0.1 that is no HTTP server: it stays `silent` after accepting, or
    sends a `banner` (like SSH) and closes. `accepted` counts who connected."""

    def __init__(self, banner: bytes | None = None):
        import socket
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


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """The app served by gunicorn with gevent workers, as a subprocess."""

    def __init__(self, app, db_url: str, workers: int, tmp: Path, **env):
        self.port = closed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / f"gunicorn-{self.port}.log", "w")
        environ = dict(os.environ, DATABASE_URL=db_url, GATEWAY_ALLOW_PRIVATE_UPSTREAMS="1", GATEWAY_DEMO="0",
                       GATEWAY_SKIP_BOOTSTRAP="1", GATEWAY_ENCRYPTION_KEY=app.config["ENCRYPTION_KEY"],
                       GATEWAY_SECRET_KEY="test", GATEWAY_KEY_CACHE_SECONDS="0", **env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf", "-b",
             f"127.0.0.1:{self.port}", "-w", str(workers), "app:app"],
            cwd=ROOT, env=environ, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/v1/models", timeout=5).status_code == 401:
                    return
            except requests.RequestException:     # not listening yet, or still loading the app
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("gunicorn did not start; see " + self.log.name)

    def stop(self) -> None:
        self.proc.terminate()       # SIGTERM: workers flush their usage queues
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
