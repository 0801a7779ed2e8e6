"""200 concurrent requests at a key with a small quota: spend never passes the quota by more
than what was in flight, and every request is either served and recorded or refused with 429.

Three setups: SQLite behind the threaded test server; Postgres behind gunicorn with two gevent
workers; Redis counters shared by two gunicorn processes. Bounded: 200 requests, 32 at a time.
"""
from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import func, select

from gateway.extensions import db
from gateway.models import QuotaCounter, Reservation
from tests.helpers import (Gunicorn, LiveServer, add_provider, check_quota, fire, make_app, make_key,
                           records_when_written, usage_records)

N, PARALLEL, QUOTA = 200, 32, 1500
BODY = {"model": "echo", "max_tokens": 20, "messages": [{"role": "user", "content": "hello there friend"}]}


def test_sqlite_under_concurrency(sqlite_app, mock):
    add_provider(sqlite_app, "up", "openai", mock + "/v1", ["echo"])
    key = make_key(sqlite_app, token_quota=QUOTA)
    server = LiveServer(sqlite_app)
    try:
        results = fire([server.url], key, N, PARALLEL, BODY)
    finally:
        server.stop()
    with sqlite_app.app_context():
        c = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == "key:1"))
        used, reserved, inflight = c.used_tokens, c.reserved_tokens, c.inflight
        open_res = db.session.scalar(select(func.count()).select_from(Reservation)
                                     .where(Reservation.settled_at.is_(None)))
    check_quota(results, usage_records(sqlite_app), used, reserved, QUOTA)
    assert inflight == 0 and open_res == 0


@pytest.mark.postgres
def test_postgres_behind_gunicorn_gevent(postgres_db, mock, tmp_path):
    app = make_app(postgres_db, instance_path=str(tmp_path / "instance"))
    add_provider(app, "up", "openai", mock + "/v1", ["echo"])
    key = make_key(app, token_quota=QUOTA)
    with app.app_context():
        db.engine.dispose()
    server = Gunicorn(app, postgres_db, 2, tmp_path)
    try:
        results = fire([server.url], key, N, PARALLEL, BODY)
    finally:
        server.stop()
    records = records_when_written(app, N)
    with app.app_context():
        c = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == "key:1"))
        check_quota(results, records, c.used_tokens, c.reserved_tokens, QUOTA)
        assert c.inflight == 0
        db.engine.dispose()


@pytest.mark.postgres
def test_redis_shared_by_two_gateway_processes(postgres_db, mock, tmp_path):
    redis = pytest.importorskip("redis")
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url).ping()
    except Exception as e:      # noqa: BLE001
        pytest.skip(f"Redis not reachable: {e}")
    prefix = f"gw:test:{uuid.uuid4().hex[:8]}:"
    app = make_app(postgres_db, instance_path=str(tmp_path / "instance"),
                   REDIS_URL=url, QUOTA_REDIS_PREFIX=prefix)
    add_provider(app, "up", "openai", mock + "/v1", ["echo"])
    key = make_key(app, token_quota=QUOTA)
    with app.app_context():
        db.engine.dispose()
    env = {"REDIS_URL": url, "GATEWAY_QUOTA_REDIS_PREFIX": prefix}
    servers = [Gunicorn(app, postgres_db, 1, tmp_path, **env) for _ in range(2)]
    try:
        results = fire([s.url for s in servers], key, N, PARALLEL, BODY)
    finally:
        for s in servers:
            s.stop()
    records = records_when_written(app, N)
    r = redis.Redis.from_url(url)
    counter = [k for k in r.scan_iter(match=prefix + "c:key:1@*")]
    assert len(counter) == 1
    h = {k.decode(): v.decode() for k, v in r.hgetall(counter[0]).items()}
    with app.app_context():
        ledger = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == "key:1"))
        # Redis and the database ledger agree with each other and with the responses
        check_quota(results, records, int(h["ut"]), int(h["rt"]), QUOTA)
        assert ledger.used_tokens == int(h["ut"]) and int(h["inf"]) == 0
        from gateway.services.accounting import quota
        r.hset(counter[0], mapping={"ut": 0, "rt": 999, "inf": 5})     # drift, then repair
        assert quota.reconcile(app) >= 1
        h = {k.decode(): v.decode() for k, v in r.hgetall(counter[0]).items()}
        assert (int(h["ut"]), int(h["rt"]), int(h["inf"])) == (ledger.used_tokens, 0, 0)
        db.engine.dispose()
    for k in r.scan_iter(match=prefix + "*"):
        r.delete(k)
