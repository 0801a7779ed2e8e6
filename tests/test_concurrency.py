"""200 concurrent requests at a key with a small quota: spend never passes the quota by more
than what was in flight, and every request is either served and recorded or refused with 429.

Three setups: SQLite behind the threaded test server; Postgres behind gunicorn with two gevent
workers; Redis counters shared by two gunicorn processes. Bounded: 200 requests, 32 at a time.
"""
from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from gateway.extensions import db
from gateway.models import QuotaCounter, Reservation, UsageRecord
from tests.helpers import Gunicorn, LiveServer, add_provider, make_app, make_key, usage_records

N, PARALLEL, QUOTA = 200, 32, 1500
BODY = {"model": "echo", "max_tokens": 20, "messages": [{"role": "user", "content": "hello there friend"}]}


def fire(urls: list[str], key: str) -> list[tuple[int, str, int]]:
    """(status, request id, total tokens) of N requests spread over `urls`."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=PARALLEL))

    def one(i: int):
        rid = f"conc-{i}-{uuid.uuid4().hex[:8]}"
        r = session.post(urls[i % len(urls)] + "/v1/chat/completions", json=BODY, timeout=60,
                         headers={"Authorization": f"Bearer {key}", "x-request-id": rid})
        tokens = r.json()["usage"]["total_tokens"] if r.status_code == 200 else 0
        if r.status_code == 429:
            assert r.json()["error"]["type"] in ("insufficient_quota", "rate_limit_exceeded")
        return r.status_code, rid, tokens

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(one, range(N)))


def check(results, records: list, used_tokens: int, reserved_tokens: int) -> None:
    statuses = {s for s, _, _ in results}
    assert statuses <= {200, 429}, statuses
    served = [r for r in results if r[0] == 200]
    assert served and len(served) < N           # some served, the quota refused the rest
    # nothing lost, nothing double-counted: one record per response, with the same outcome
    by_id = {r.request_id: r for r in records}
    assert len(records) == N and len(by_id) == N, (len(records), len(by_id), sorted(statuses))
    for status, rid, tokens in results:
        assert by_id[rid].status == status and by_id[rid].total_tokens == tokens
    spent = sum(t for _, _, t in served)
    assert used_tokens == spent and reserved_tokens == 0
    assert spent <= QUOTA       # nothing was in flight at the end, so no slack at all


def test_sqlite_under_concurrency(sqlite_app, mock):
    add_provider(sqlite_app, "up", "openai", mock + "/v1", ["echo"])
    key = make_key(sqlite_app, token_quota=QUOTA)
    server = LiveServer(sqlite_app)
    try:
        results = fire([server.url], key)
    finally:
        server.stop()
    with sqlite_app.app_context():
        c = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == "key:1"))
        used, reserved, inflight = c.used_tokens, c.reserved_tokens, c.inflight
        open_res = db.session.scalar(select(func.count()).select_from(Reservation)
                                     .where(Reservation.settled_at.is_(None)))
    check(results, usage_records(sqlite_app), used, reserved)
    assert inflight == 0 and open_res == 0


def _records_when_written(app, n: int) -> list:
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


@pytest.mark.postgres
def test_postgres_behind_gunicorn_gevent(postgres_db, mock, tmp_path):
    app = make_app(postgres_db, instance_path=str(tmp_path / "instance"))
    add_provider(app, "up", "openai", mock + "/v1", ["echo"])
    key = make_key(app, token_quota=QUOTA)
    with app.app_context():
        db.engine.dispose()
    server = Gunicorn(app, postgres_db, 2, tmp_path)
    try:
        results = fire([server.url], key)
    finally:
        server.stop()
    records = _records_when_written(app, N)
    with app.app_context():
        c = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == "key:1"))
        check(results, records, c.used_tokens, c.reserved_tokens)
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
        results = fire([s.url for s in servers], key)
    finally:
        for s in servers:
            s.stop()
    records = _records_when_written(app, N)
    r = redis.Redis.from_url(url)
    counter = [k for k in r.scan_iter(match=prefix + "c:key:1@*")]
    assert len(counter) == 1
    h = {k.decode(): v.decode() for k, v in r.hgetall(counter[0]).items()}
    with app.app_context():
        ledger = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == "key:1"))
        # Redis and the database ledger agree with each other and with the responses
        check(results, records, int(h["ut"]), int(h["rt"]))
        assert ledger.used_tokens == int(h["ut"]) and int(h["inf"]) == 0
        from gateway.services.accounting import quota
        r.hset(counter[0], mapping={"ut": 0, "rt": 999, "inf": 5})     # drift, then repair
        assert quota.reconcile(app) >= 1
        h = {k.decode(): v.decode() for k, v in r.hgetall(counter[0]).items()}
        assert (int(h["ut"]), int(h["rt"]), int(h["inf"])) == (ledger.used_tokens, 0, 0)
        db.engine.dispose()
    for k in r.scan_iter(match=prefix + "*"):
        r.delete(k)
