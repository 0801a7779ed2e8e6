"""The database locked (another connection holds it) or unreachable: the admission path waits
at most DB_LOCK_TIMEOUT, then answers an OpenAI-shaped 503 with retry-after; cached keys
keep working for KEY_CACHE_STALE_SECONDS; usage records are spooled, never lost; settles that
could not be written are retried until they are."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager

import orjson
import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from gateway import database
from gateway.extensions import db
from gateway.models import QuotaCounter
from gateway.services.accounting import keys, quota
from gateway.services.accounting.usage import UsageEntry, recorder
from gateway.services.api_request import ApiRequest
from gateway.services.routing.plan import plan as plan_for
from tests.helpers import add_provider, make_key, usage_records

CHAT = {"model": "demo-chat", "max_tokens": 20, "messages": [{"role": "user", "content": "hello there friend"}]}


@contextmanager
def database_locked(app, *tables: str):
    """Another connection holds the database: SQLite's write lock (BEGIN EXCLUSIVE), or on
    Postgres an ACCESS EXCLUSIVE lock on `tables` (which also stops reads of them)."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
    else:
        import psycopg
        conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        conn.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


@contextmanager
def statements(app):
    """Every SQL statement the app's engine runs meanwhile."""
    seen: list[str] = []

    def log(conn, cursor, sql, *args):
        seen.append(sql)
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", log)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", log)


def post(client, key):
    return client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def demo(app):
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    return app


def test_a_locked_database_is_a_fast_503_and_unlimited_keys_carry_on(demo):
    limited, free = make_key(demo, token_quota=1000), make_key(demo, name="free")
    client = demo.test_client()
    assert post(client, limited).status_code == 200 and post(client, free).status_code == 200
    recorder(demo).drain()
    with database_locked(demo, "quota_counters", "reservations"), statements(demo) as sql:
        r = post(client, limited)
        assert r.status_code == 503, r.json
        assert set(r.json["error"]) == {"message", "type", "param", "code"}
        assert (r.json["error"]["type"], r.json["error"]["code"]) == ("service_unavailable", "database_unavailable")
        assert r.headers["retry-after"] == "2"
        # One bounded wait, not four of SQLite's 5 s (or Postgres' forever): the reservation ran
        # once, under a 2 s lock timeout.
        updates = [i for i, s in enumerate(sql) if s.startswith("UPDATE quota_counters")]
        bound = [i for i, s in enumerate(sql) if "busy_timeout=2000" in s or "'lock_timeout', '2000'" in s]
        assert len(updates) == 1 and bound and bound[-1] < updates[0]
        assert post(client, free).status_code == 200      # no limit to check: served
    statuses = sorted(u.status for u in usage_records(demo))
    assert statuses == [200, 200, 200, 503]                # every record kept, the refusal too
    with demo.app_context():
        c = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == "key:1"))
        assert (c.reserved_tokens, c.inflight) == (0, 0)


def test_a_locked_sqlite_is_waited_for_once_not_per_request(sqlite_app):
    # Under gevent a SQLite busy wait holds the whole worker: pay it once, then fail at once.
    add_provider(sqlite_app, "demo", "mock", None, ["demo-chat"])
    limited = make_key(sqlite_app, token_quota=1000)
    client = sqlite_app.test_client()
    assert post(client, limited).status_code == 200
    recorder(sqlite_app).drain()
    with database_locked(sqlite_app), statements(sqlite_app) as sql:
        replies = [post(client, limited) for _ in range(4)]
        assert [r.status_code for r in replies] == [503] * 4
        assert {r.json["error"]["code"] for r in replies} == {"database_unavailable"}
        assert sum(s.startswith("UPDATE quota_counters") for s in sql) == 1
    assert database.locks(sqlite_app).until > 0


def test_records_are_spooled_while_the_database_is_locked(sqlite_app):
    add_provider(sqlite_app, "demo", "mock", None, ["demo-chat"])
    free = make_key(sqlite_app)
    client = sqlite_app.test_client()
    assert post(client, free).status_code == 200
    rec = recorder(sqlite_app)
    rec.drain()
    sqlite_app.config["DB_LOCK_TIMEOUT"] = 0.05     # the writer's waits, so the test is quick
    with database_locked(sqlite_app):
        served = [post(client, free) for _ in range(3)]
        assert [r.status_code for r in served] == [200] * 3
        assert rec.drain(timeout=30)        # written or spooled: the writer gave up on the database
        with rec.write_lock:                # not while the idle writer tries to replay them
            spooled = [orjson.loads(line)["request_id"] for f in rec.spool_dir.glob("*.jsonl")
                       for line in f.read_bytes().splitlines()]
        assert sorted(spooled) == sorted(r.headers["x-request-id"] for r in served)
    database.locks(sqlite_app).until = 0.0      # the breaker's cooldown is over
    with rec.write_lock:                        # what the idle writer does every 5 s
        rec._replay_spool()
    ids = [u.request_id for u in usage_records(sqlite_app)]
    assert len(ids) == 4 and set(spooled) <= set(ids) and not list(rec.spool_dir.glob("*"))


def test_cached_keys_are_served_while_the_database_cannot_answer(sqlite_app, monkeypatch):
    add_provider(sqlite_app, "demo", "mock", None, ["demo-chat"])
    known, unknown = make_key(sqlite_app), make_key(sqlite_app, name="never used")
    client = sqlite_app.test_client()
    assert post(client, known).status_code == 200        # cached (its TTL is 0 in tests)

    def down(*a, **kw):
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("unable to open database file"))
    monkeypatch.setattr(db.session, "scalar", down)
    assert post(client, known).status_code == 200        # served from the cache
    r = post(client, unknown)
    assert r.status_code == 503 and r.json["error"]["code"] == "database_unavailable"
    assert r.headers["retry-after"] == "2"
    with sqlite_app.app_context():
        keys.cache().stale = 0.0        # cached too long ago to be trusted
        keys.cache().db_down_until = 0.0
    assert post(client, known).status_code == 503


def test_a_settle_the_database_refused_is_retried(demo):
    secret = make_key(demo, token_quota=1000)
    with demo.test_request_context():
        info = keys.authenticate(secret)
        req = ApiRequest("locked-settle", "chat", dict(CHAT))
        admission = quota.admit(req, info, plan_for(req, info))
    retry = demo.extensions["settle_retry"]
    retry.thread.ensure = lambda: None      # this test drives the retries itself
    with database_locked(demo, "quota_counters", "reservations"):
        assert quota.settle(demo, admission, UsageEntry(request_id="locked-settle", endpoint="chat",
                                                        status=200, total_tokens=10)) is None
        assert retry.run_once() == 1        # still locked: kept
    database.locks(demo).until = 0.0        # its cooldown is over (SQLite's breaker)
    assert retry.run_once() == 0
    with demo.app_context():
        c = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == "key:1"))
        assert (c.used_tokens, c.reserved_tokens, c.inflight) == (10, 0, 0)


@pytest.mark.postgres
def test_postgres_locks_on_keys_and_catalog_serve_cached_copies(postgres_db, tmp_path):
    # What a migration does to the tables a request reads (ACCESS EXCLUSIVE: no reads either).
    from tests.helpers import make_app
    app = make_app(postgres_db, instance_path=str(tmp_path / "i"))
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    known, unknown = make_key(app), make_key(app, name="never used")
    client = app.test_client()
    try:
        assert post(client, known).status_code == 200
        with database_locked(app, "api_keys", "deployments", "model_prices", "settings"):
            assert post(client, known).status_code == 200    # lock_timeout, then the caches
            r = post(client, unknown)
            assert r.status_code == 503 and r.json["error"]["code"] == "database_unavailable"
        assert post(client, unknown).status_code == 200
    finally:
        with app.app_context():
            recorder(app).drain()
            db.engine.dispose()
