"""What tests build with: an app on a given database, a live server, providers, keys, records."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from sqlalchemy import select
from werkzeug.serving import make_server

from gateway import create_app
from gateway.extensions import db
from gateway.models import UsageRecord
from gateway.services.accounting import keys, pricing
from gateway.services.accounting.usage import recorder
from gateway.services.admin import catalog_admin

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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


def redis_or_skip():
    """A client of the test Redis (REDIS_URL), or skip the test when it does not answer."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("Redis not reachable")
    return client
